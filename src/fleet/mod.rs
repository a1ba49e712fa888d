//! The fleet view: with Redis (`[webhooks] state = "redis"`), what `/status`
//! shows — signed counts per app, history, drain clock, REST evidence, client
//! builds, last webhooks — lives in Redis, so every replica reports the same
//! fleet and the day's counts survive restarts. The auth path never waits on
//! Redis: it counts in memory (metrics, `client_stats`), and a background task
//! flushes the difference every `FLUSH_EVERY` and once more on shutdown, so a
//! SIGKILL loses at most one interval. If Redis is down, auth carries on, the
//! counts wait here, and `/status` shows the last fleet view it read, marked
//! stale since then.

pub(crate) mod flush;
mod replicas;
mod scripts;

pub use replicas::{ReplicaRow, RolloutRow};

use crate::redis_client::{Conn, bounded};
use crate::{
    client_stats::GroupCounts,
    status::history::{RestView, Sample},
};
use redis::{AsyncCommands, RedisResult, Script};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::Duration,
};

/// How often a replica's counts reach Redis: at most this much is lost to a SIGKILL.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Client-build counts are kept per bucket of this many ms, for a day.
const BUCKET_MS: u64 = 5 * 60_000;
const DAY_BUCKETS: u64 = 24 * 60 * 60_000 / BUCKET_MS;
const HOUR_BUCKETS: u64 = 60 * 60_000 / BUCKET_MS;
/// Replicas unseen this long leave the list.
const REPLICA_TTL_MS: u64 = 3_600_000;

/// What one replica has not flushed yet: taken from the counters once, then
/// retried as is (same `seq`) until Redis confirms it, so a flush whose answer
/// was lost is never counted twice.
struct Batch {
    seq: u64,
    signed: Vec<(String, u64)>,
    webhooks: Vec<(String, u64)>,
    builds: Vec<(String, String, u64)>,
}

/// What a flush takes from this replica's counters.
pub struct Counts {
    /// Signed authorizations per app since the process started (the metrics).
    pub signed_totals: BTreeMap<String, u64>,
    /// The last verified webhook per app (this replica).
    pub last_webhook: HashMap<String, u64>,
    /// (group, app, count) since the last flush.
    pub builds: Vec<(String, String, u64)>,
}

/// The fleet's status data, read from Redis.
#[derive(Clone)]
pub struct FleetData {
    pub signed: BTreeMap<String, u64>,
    pub samples: Vec<Sample>,
    pub quiet_since: Option<u64>,
    pub rest: BTreeMap<String, RestView>,
    pub clients: Vec<Value>,
    pub last_webhook: HashMap<String, u64>,
    pub replicas: Vec<ReplicaRow>,
    pub read_ms: u64,
}

#[derive(Default)]
struct Health {
    /// The last good read, shown (marked stale) while Redis is unreachable.
    last: Option<FleetData>,
    read_error: Option<String>,
    /// Since when this replica's counts have not reached Redis, and why.
    unflushed_since: Option<u64>,
    flush_error: Option<String>,
}

pub struct Fleet {
    conn: Conn,
    /// `<redis_prefix>:fleet`
    prefix: String,
    /// This process: new at every start (a restarted pod is a new replica).
    pub replica: String,
    pub started_ms: u64,
    flush_script: Script,
    sample_script: Script,
    rest_script: Script,
    flushed_signed: Mutex<BTreeMap<String, u64>>,
    flushed_webhooks: Mutex<HashMap<String, u64>>,
    unsent: tokio::sync::Mutex<Option<Batch>>,
    seq: std::sync::atomic::AtomicU64,
    health: Mutex<Health>,
}

impl Fleet {
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self {
            conn: crate::redis_client::connect(url)?,
            prefix: format!("{prefix}:fleet"),
            replica: format!("{host}-{}", &suffix[..6]),
            started_ms: crate::outbound::now_ms(),
            flush_script: Script::new(scripts::FLUSH),
            sample_script: Script::new(scripts::SAMPLE),
            rest_script: Script::new(scripts::REST),
            flushed_signed: Mutex::default(),
            flushed_webhooks: Mutex::default(),
            unsent: tokio::sync::Mutex::new(None),
            seq: std::sync::atomic::AtomicU64::new(0),
            health: Mutex::default(),
        })
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Sends what this replica counted since the last flush, and its row.
    /// `counts` is called only when nothing is waiting to be retried.
    pub async fn flush(&self, counts: impl FnOnce() -> Counts, row: &ReplicaRow) -> RedisResult<()> {
        let mut unsent = self.unsent.lock().await;
        if unsent.is_none() {
            let c = counts();
            let mut flushed = self.flushed_signed.lock().unwrap();
            let signed = c
                .signed_totals
                .iter()
                .map(|(app, n)| (app.clone(), n.saturating_sub(flushed.get(app).copied().unwrap_or(0))))
                .filter(|(_, d)| *d > 0)
                .collect();
            *flushed = c.signed_totals;
            let mut seen = self.flushed_webhooks.lock().unwrap();
            let webhooks = c
                .last_webhook
                .iter()
                .filter(|(app, at)| seen.get(*app) != Some(at))
                .map(|(a, t)| (a.clone(), *t))
                .collect();
            *seen = c.last_webhook;
            let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            *unsent = Some(Batch { seq, signed, webhooks, builds: c.builds });
        }
        let batch = unsent.as_ref().expect("set above");
        let now = crate::outbound::now_ms();
        let mut call = self.flush_script.prepare_invoke();
        call.arg(&self.prefix)
            .arg(&self.replica)
            .arg(batch.seq)
            .arg(now)
            .arg(serde_json::to_string(row).expect("serializes"))
            .arg(crate::client_stats::MAX_GROUPS)
            .arg(BUCKET_MS)
            .arg(DAY_BUCKETS)
            .arg(crate::client_stats::HALF_LIFE_MS as u64)
            .arg(REPLICA_TTL_MS)
            .arg(batch.signed.len())
            .arg(batch.webhooks.len());
        for (app, n) in &batch.signed {
            call.arg(app).arg(n);
        }
        for (app, at) in &batch.webhooks {
            call.arg(app).arg(at);
        }
        for (group, app, n) in &batch.builds {
            call.arg(group).arg(app).arg(n);
        }
        let result: RedisResult<i64> = bounded(call.invoke_async(&mut self.conn())).await;
        let mut health = self.health.lock().unwrap();
        match result {
            Ok(_) => {
                *unsent = None;
                if let Some(since) = health.unflushed_since.take() {
                    tracing::info!(
                        unflushed_ms = now.saturating_sub(since),
                        "fleet: counts flushed to redis again"
                    );
                }
                health.flush_error = None;
                Ok(())
            }
            Err(e) => {
                if health.unflushed_since.is_none() {
                    tracing::warn!(error = %e, "fleet: cannot flush counts to redis; auth goes on, /status is stale");
                    health.unflushed_since = Some(now);
                }
                health.flush_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The fleet's signed counts per app.
    pub async fn signed(&self) -> RedisResult<BTreeMap<String, u64>> {
        bounded(self.conn().hgetall(format!("{}:signed", self.prefix))).await
    }

    /// Records `sample` unless another replica recorded one less than `gap` ago;
    /// `old` is the drained app, its signed count and occupied channels.
    pub async fn sample(
        &self,
        sample: &Sample,
        old: Option<(&str, u64, usize)>,
        gap: Duration,
        max: usize,
    ) -> RedisResult<bool> {
        let (name, signed, occupied) = old.unwrap_or(("", 0, 0));
        let mut call = self.sample_script.prepare_invoke();
        call.arg(&self.prefix)
            .arg(sample.t)
            .arg(gap.as_millis() as u64)
            .arg(max)
            .arg(serde_json::to_string(sample).expect("serializes"))
            .arg(name)
            .arg(signed)
            .arg(occupied);
        let recorded: i64 = bounded(call.invoke_async(&mut self.conn())).await?;
        Ok(recorded == 1)
    }

    /// Merges this replica's reading of `app`'s REST channel list (`listed`,
    /// or the error) and the corrections it made into the fleet's.
    pub async fn merge_rest(
        &self,
        app: &str,
        at_ms: u64,
        listed: Result<usize, &str>,
        corrected: (u64, u64),
    ) -> RedisResult<()> {
        let mut call = self.rest_script.prepare_invoke();
        let (listed, error) = match listed {
            Ok(n) => (n.to_string(), ""),
            Err(e) => (String::new(), e),
        };
        call.arg(format!("{}:rest", self.prefix))
            .arg(app)
            .arg(at_ms)
            .arg(listed)
            .arg(error)
            .arg(corrected.0)
            .arg(corrected.1);
        let _: i64 = bounded(call.invoke_async(&mut self.conn())).await?;
        Ok(())
    }

    /// The fleet's status data; while Redis cannot be read, the last data read
    /// (None if there never was any) and the error.
    pub async fn read(
        &self,
        now_ms: u64,
        old_app: Option<&str>,
    ) -> Result<FleetData, (Option<FleetData>, String)> {
        let result = self.read_redis(now_ms, old_app).await;
        let mut health = self.health.lock().unwrap();
        match result {
            Ok(data) => {
                health.last = Some(data.clone());
                health.read_error = None;
                Ok(data)
            }
            Err(e) => {
                health.read_error = Some(e.to_string());
                Err((health.last.clone(), e.to_string()))
            }
        }
    }

    /// Whether this replica's counts are waiting for Redis: since when, and why.
    pub fn unflushed(&self) -> Option<(u64, String)> {
        let health = self.health.lock().unwrap();
        health.unflushed_since.zip(health.flush_error.clone())
    }

    async fn read_redis(&self, now_ms: u64, old_app: Option<&str>) -> RedisResult<FleetData> {
        let p = &self.prefix;
        type Read = (
            BTreeMap<String, u64>,
            Vec<String>,
            Option<u64>,
            HashMap<String, String>,
            Vec<String>,
            HashMap<String, u64>,
            HashMap<String, String>,
            HashMap<String, u64>,
        );
        let (signed, samples, quiet_since, rest, groups, seen, replicas, last_webhook): Read = bounded(
            redis::pipe()
                .hgetall(format!("{p}:signed"))
                .lrange(format!("{p}:samples"), 0, -1)
                .hget(format!("{p}:drain"), "quiet_since")
                .hgetall(format!("{p}:rest"))
                .zrange(format!("{p}:builds"), 0, -1)
                .hgetall(format!("{p}:builds:seen"))
                .hgetall(format!("{p}:replicas"))
                .hgetall(format!("{p}:last_webhook"))
                .query_async(&mut self.conn()),
        )
        .await?;
        let mut names = groups;
        names.push("other".into());
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.hgetall(format!("{p}:build:{name}"));
        }
        let counts: Vec<HashMap<String, u64>> = bounded(pipe.query_async(&mut self.conn())).await?;
        let bucket = now_ms / BUCKET_MS;
        let groups = names.into_iter().zip(counts).filter(|(_, c)| !c.is_empty()).map(|(name, fields)| {
            let mut per_app: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for (field, n) in fields {
                let Some((app, b)) = field.rsplit_once(':') else { continue };
                let Ok(b) = b.parse::<u64>() else { continue };
                let entry = per_app.entry(app.to_owned()).or_default();
                if b + HOUR_BUCKETS > bucket {
                    entry.0 += n;
                }
                if b + DAY_BUCKETS > bucket {
                    entry.1 += n;
                }
            }
            GroupCounts {
                last_seen_ms: seen.get(&name).copied().unwrap_or(0),
                name,
                per_app: per_app.into_iter().map(|(a, (h, d))| (a, h, d)).collect(),
            }
        });
        let clients = crate::client_stats::ranked(groups, old_app);
        Ok(FleetData {
            signed,
            samples: samples.iter().filter_map(|s| serde_json::from_str(s).ok()).collect(),
            quiet_since,
            rest: rest
                .into_iter()
                .filter_map(|(app, v)| Some((app, serde_json::from_str(&v).ok()?)))
                .collect(),
            clients,
            last_webhook,
            replicas: replicas.values().filter_map(|v| serde_json::from_str(v).ok()).collect(),
            read_ms: now_ms,
        })
    }
}

/// The `fleet` object of `/status`: the replicas, drift, and whether this view is stale.
pub fn describe(fleet: &Fleet, data: Option<&FleetData>, read_error: Option<&str>, now_ms: u64) -> Value {
    let (replicas, drift) = replicas::analyse(data.map(|d| d.replicas.clone()).unwrap_or_default(), now_ms);
    let unflushed = fleet.unflushed();
    json!({
        "shared": true,
        "replica": fleet.replica,
        "replicas": replicas,
        "drift": drift,
        "stale": read_error.is_some(),
        // The data shown was read from Redis then (now, unless stale).
        "as_of_ms": data.map(|d| d.read_ms),
        "error": read_error,
        "unflushed_since_ms": unflushed.as_ref().map(|u| u.0),
        "flush_error": unflushed.map(|u| u.1),
    })
}
