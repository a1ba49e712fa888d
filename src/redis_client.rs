//! The one Redis client every feature shares (webhook merge and outbox,
//! remembered presence infos, the fleet view, the failover decision): a lazy,
//! reconnecting connection, a deadline on every call, and the reply helpers.
//!
//! Every call is bounded by `DEADLINE` (and the connection by its own connect
//! and response timeouts): during an outage a request is refused at once
//! rather than held until Redis returns.
//!
//! Two ways to find the primary, one type ([`Conn`]) for the callers:
//! - a plain `redis://` URL: a `ConnectionManager`, which resolves the host
//!   name again at each reconnect (a managed primary endpoint whose address
//!   moves is followed once the old connection breaks), and is made anew
//!   after a `READONLY` answer (the endpoint moved while the old primary,
//!   demoted, kept the connection open);
//! - Redis Sentinel, `redis+sentinel://host:port,host:port/master[/db]`: the
//!   sentinels are asked for the master on the first call and again after any
//!   connection error or `READONLY` answer (a demoted primary).

use redis::{
    Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};
use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

/// The longest any one Redis call may take, connecting included.
pub const DEADLINE: Duration = Duration::from_millis(1_000);

/// `fut`, or a timeout error once `DEADLINE` has passed.
pub async fn bounded<T>(fut: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(DEADLINE, fut).await.unwrap_or_else(|_| {
        Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from redis within {} ms", DEADLINE.as_millis()),
        )))
    })
}

/// The scheme of a Sentinel-resolved Redis.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// A parsed `redis+sentinel://[user:password@]host:port[,host:port…]/master[/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// `host:port` of each sentinel.
    pub sentinels: Vec<String>,
    pub master: String,
    pub db: i64,
    /// For the master (not the sentinels).
    pub username: Option<String>,
    pub password: Option<String>,
}

impl SentinelTarget {
    /// `None` for any other scheme; an error saying what is wrong with a sentinel URL.
    pub fn parse(url: &str) -> Option<Result<Self, String>> {
        let rest = url.strip_prefix(SENTINEL_SCHEME)?;
        Some(Self::parse_rest(rest))
    }

    fn parse_rest(rest: &str) -> Result<Self, String> {
        let form = "redis+sentinel://[user:password@]host:port[,host:port…]/master_name[/db]";
        let (authority, path) = rest.split_once('/').ok_or_else(|| format!("must be {form}"))?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let sentinels: Vec<String> = hosts.split(',').map(str::trim).map(String::from).collect();
        for s in &sentinels {
            let ok = s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("sentinel `{s}` must be host:port ({form})"));
            }
        }
        let (master, db) = match path.split_once('/') {
            Some((m, db)) => {
                (m, db.parse::<i64>().map_err(|_| format!("db `{db}` must be a number ({form})"))?)
            }
            None => (path, 0),
        };
        if master.is_empty() {
            return Err(format!("the master name is missing ({form})"));
        }
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            Some((u, p)) => ((!u.is_empty()).then(|| decode(u)), (!p.is_empty()).then(|| decode(p))),
            None => (None, None),
        };
        Ok(Self { sentinels, master: decode(master), db, username, password })
    }

    /// The URL of `sentinels` (`host:port`) and `master`, as `parse` reads it.
    pub fn url(sentinels: &[String], master: &str) -> String {
        let master = percent_encoding::utf8_percent_encode(master, percent_encoding::NON_ALPHANUMERIC);
        format!("{SENTINEL_SCHEME}{}/{master}", sentinels.join(","))
    }
}

/// A Redis URL as it may be printed: a password in it is never shown.
pub fn redacted_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        return match authority.rsplit_once('@') {
            Some((_, hosts)) => format!("{SENTINEL_SCHEME}redacted@{hosts}/{path}"),
            None => url.to_owned(),
        };
    }
    url::Url::parse(url)
        .map(|u| crate::config::fields::redact_url(&u))
        .unwrap_or_else(|_| "[redacted]".into())
}

/// The connection every feature holds: cheap to clone, shared underneath.
/// Implements `ConnectionLike`, so `query_async`, scripts and `AsyncCommands` work on it.
#[derive(Clone)]
pub struct Conn(Inner);

#[derive(Clone)]
enum Inner {
    Plain(Arc<Plain>),
    Sentinel(Arc<Sentinel>),
}

/// A `ConnectionManager` (it reconnects on its own after a broken connection),
/// replaced by a new one after `READONLY`.
struct Plain {
    client: redis::Client,
    config: ConnectionManagerConfig,
    current: Mutex<(u64, ConnectionManager)>,
}

/// A demoted primary's answer to a write (`READONLY`): the primary is elsewhere now.
/// Server errors come back as values; a pipeline's, among its values.
fn demoted<'a>(result: Result<impl IntoIterator<Item = &'a Value>, &RedisError>) -> bool {
    match result {
        Err(e) => e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly),
        Ok(values) => values
            .into_iter()
            .any(|v| matches!(v, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::ReadOnly))),
    }
}

/// The connection itself failed (the master may have moved).
fn broken(err: &RedisError) -> bool {
    err.is_io_error() || err.is_unrecoverable_error() || err.is_connection_dropped() || err.is_timeout()
}

impl Plain {
    fn new(client: redis::Client, config: ConnectionManagerConfig) -> RedisResult<Self> {
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self { client, config, current: Mutex::new((0, manager)) })
    }

    fn manager(&self) -> (u64, ConnectionManager) {
        self.current.lock().unwrap().clone()
    }

    /// After a call on connection `generation` that answered READONLY.
    fn demoted(&self, generation: u64) {
        let mut current = self.current.lock().unwrap();
        if current.0 == generation
            && let Ok(fresh) =
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        {
            tracing::warn!("redis: READONLY from the primary's address; connecting again");
            *current = (generation + 1, fresh);
        }
    }
}

/// The master as the sentinels last named it, found again after an error.
struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the master, with its generation (so an error on an
    /// old connection does not drop a newer one).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: std::sync::atomic::AtomicU64,
    db: i64,
}

/// The master's connection: its answer times out just before the call's
/// `DEADLINE` does, so a frozen master is noticed (and asked for again) rather
/// than the call dropped with nothing learned.
fn async_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(DEADLINE / 2))
        .set_response_timeout(Some(DEADLINE * 9 / 10))
}

impl Sentinel {
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.current.lock().unwrap().clone() {
            return Ok(c);
        }
        // One lookup at a time; those waiting use what it found.
        let mut client = self.client.lock().await;
        if let Some(c) = self.current.lock().unwrap().clone() {
            return Ok(c);
        }
        let master = client.async_get_client().await?;
        let conn = master.get_multiplexed_async_connection_with_config(&async_config()).await?;
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::info!(master = ?master.get_connection_info().addr(), "redis: master found through the sentinels");
        *self.current.lock().unwrap() = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// After a call on connection `generation` that says the master may have
    /// moved: forget that connection (not a newer one).
    fn moved(&self, generation: u64) {
        let mut current = self.current.lock().unwrap();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Inner::Plain(p) => Box::pin(async move {
                let (generation, mut m) = p.manager();
                let result = m.req_packed_command(cmd).await;
                if demoted(result.as_ref().map(std::iter::once)) {
                    p.demoted(generation);
                }
                result
            }),
            Inner::Sentinel(s) => Box::pin(async move {
                let (generation, mut conn) = s.connection().await?;
                let result = conn.req_packed_command(cmd).await;
                if result.as_ref().err().is_some_and(broken) || demoted(result.as_ref().map(std::iter::once))
                {
                    s.moved(generation);
                }
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Inner::Plain(p) => Box::pin(async move {
                let (generation, mut m) = p.manager();
                let result = m.req_packed_commands(pipeline, offset, count).await;
                if demoted(result.as_ref()) {
                    p.demoted(generation);
                }
                result
            }),
            Inner::Sentinel(s) => Box::pin(async move {
                let (generation, mut conn) = s.connection().await?;
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                if result.as_ref().err().is_some_and(broken) || demoted(result.as_ref()) {
                    s.moved(generation);
                }
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Plain(p) => p.manager().1.get_db(),
            Inner::Sentinel(s) => s.db,
        }
    }
}

/// A lazy connection (made on the first call, so a Redis that is down at start
/// delays nothing), reconnecting once per call within the deadline. `url` is a
/// `redis://`/`rediss://` URL or a `redis+sentinel://` one (see `SentinelTarget`).
pub fn connect(url: &str) -> anyhow::Result<Conn> {
    if let Some(target) = SentinelTarget::parse(url) {
        let target = target.map_err(anyhow::Error::msg)?;
        let mut info = redis::RedisConnectionInfo::default().set_db(target.db);
        if let Some(u) = &target.username {
            info = info.set_username(u);
        }
        if let Some(p) = &target.password {
            info = info.set_password(p);
        }
        let nodes: Vec<String> = target.sentinels.iter().map(|s| format!("redis://{s}")).collect();
        let client = SentinelClient::build(
            nodes,
            target.master.clone(),
            Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(info)),
            SentinelServerType::Master,
        )?;
        return Ok(Conn(Inner::Sentinel(Arc::new(Sentinel {
            client: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            generation: Default::default(),
            db: target.db,
        }))));
    }
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(DEADLINE / 2))
        .set_response_timeout(Some(DEADLINE))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(DEADLINE / 4);
    Ok(Conn(Inner::Plain(Arc::new(Plain::new(redis::Client::open(url)?, config)?))))
}

/// A script reply's array (anything else: empty).
pub fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// A script reply's string, if it is one.
pub fn string(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A script reply's integer (anything else: 0).
pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_every_sentinel_the_master_and_its_credentials() {
        let t = SentinelTarget::parse("redis+sentinel://app:p%40ss@s1:26379,s2:26380/my%20master/3")
            .unwrap()
            .unwrap();
        assert_eq!(t.sentinels, ["s1:26379", "s2:26380"]);
        assert_eq!((t.master.as_str(), t.db), ("my master", 3));
        assert_eq!((t.username.as_deref(), t.password.as_deref()), (Some("app"), Some("p@ss")));
        let url = SentinelTarget::url(&["s1:26379".into()], "my master");
        assert_eq!(SentinelTarget::parse(&url).unwrap().unwrap().master, "my master", "{url}");
        assert!(SentinelTarget::parse("redis://h:6379/0").is_none(), "not a sentinel URL");
        for bad in ["redis+sentinel://s1:26379", "redis+sentinel://s1/m", "redis+sentinel://s1:26379/m/x"] {
            assert!(SentinelTarget::parse(bad).unwrap().is_err(), "{bad}");
        }
        assert_eq!(
            redacted_url("redis+sentinel://app:secret@s1:26379/m"),
            "redis+sentinel://redacted@s1:26379/m"
        );
        assert_eq!(redacted_url("redis://:secret@h:6379/0"), "redis://redacted@h:6379/0");
    }

    #[test]
    fn readonly_is_seen_as_an_error_or_among_a_pipeline_s_values() {
        // As a server sends it, parsed as redis-rs parses it: a value, not an error.
        let readonly = || {
            redis::parse_redis_value(b"-READONLY You can't write against a read only replica.\r\n").unwrap()
        };
        let ok = Value::Okay;
        assert!(demoted(Ok::<_, &RedisError>(std::iter::once(&readonly()))));
        assert!(demoted(Ok::<_, &RedisError>(&vec![ok.clone(), readonly()])));
        assert!(!demoted(Ok::<_, &RedisError>(&vec![ok.clone(), Value::Int(1)])));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!demoted(Err::<&Vec<Value>, _>(&io)) && broken(&io));
    }
}
