//! Webhook merge state and outbox in Redis, for several replicas.
//!
//! Each event is applied by one Lua script that updates the sets *and* queues
//! the event to forward in the same atomic step, so a webhook acknowledged to
//! Pusher is durably queued, and two replicas receiving the two apps' webhooks
//! for one channel cannot both (or neither) forward the transition.
//! Delivery moves an item to a processing list, and removes it once the host
//! accepted it (at-least-once: an item left in processing by a crashed replica
//! is re-queued at start).

use redis::{AsyncCommands, Script, aio::ConnectionManager};
use serde_json::Value;
use std::collections::HashMap;
use tokio::sync::OnceCell;

const TRANSITION: &str = r#"
-- KEYS: set, per-app index set ('' = none), outbox. ARGV: mode, app, index member, event json
local changed
if ARGV[1] == 'add' then
  changed = redis.call('SADD', KEYS[1], ARGV[2])
  if KEYS[2] ~= '' then redis.call('SADD', KEYS[2], ARGV[3]) end
  if changed == 1 and redis.call('SCARD', KEYS[1]) == 1 then
    redis.call('RPUSH', KEYS[3], ARGV[4]) return 1
  end
else
  changed = redis.call('SREM', KEYS[1], ARGV[2])
  if KEYS[2] ~= '' then redis.call('SREM', KEYS[2], ARGV[3]) end
  if changed == 1 and redis.call('SCARD', KEYS[1]) == 0 then
    redis.call('RPUSH', KEYS[3], ARGV[4]) return 1
  end
end
return 0
"#;

pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    script: Script,
}

impl RedisStore {
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: OnceCell::new(),
            prefix: prefix.to_owned(),
            script: Script::new(TRANSITION),
        })
    }

    async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        self.conn.get_or_try_init(|| ConnectionManager::new(self.client.clone())).await.cloned()
    }

    fn outbox(&self) -> String {
        format!("{}:outbox", self.prefix)
    }
    fn processing(&self) -> String {
        format!("{}:processing", self.prefix)
    }

    /// An outbox item carries the event and the `time_ms` of its source webhook.
    fn item(event: &Value, time_ms: u64) -> String {
        serde_json::json!({"time_ms": time_ms, "event": event}).to_string()
    }

    /// `(time_ms, event)` of an outbox item (items queued by older versions are bare events).
    pub fn unwrap_item(item: &str) -> (u64, Value) {
        let v: Value = serde_json::from_str(item).unwrap_or(Value::Null);
        match (v.get("time_ms").and_then(Value::as_u64), v.get("event")) {
            (Some(t), Some(e)) => (t, e.clone()),
            _ => (crate::outbound::now_ms(), v),
        }
    }

    /// Whether this webhook was applied within the replay window (any replica).
    pub async fn seen(&self, digest: &[u8; 32]) -> redis::RedisResult<bool> {
        let mut conn = self.conn().await?;
        conn.exists(format!("{}:seen:{}", self.prefix, hex::encode(digest))).await
    }

    /// Remembers an applied webhook for `ttl_ms`.
    pub async fn remember(&self, digest: &[u8; 32], ttl_ms: u64) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        redis::cmd("SET")
            .arg(format!("{}:seen:{}", self.prefix, hex::encode(digest)))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async::<Option<String>>(&mut conn)
            .await
            .map(drop)
    }

    /// Applies one event from `app`; a forwarded event is queued atomically,
    /// with its source webhook's `time_ms`. Returns whether something was queued.
    pub async fn apply(&self, app: &str, event: &Value, time_ms: u64) -> redis::RedisResult<bool> {
        let mut conn = self.conn().await?;
        let name = event.get("name").and_then(Value::as_str).unwrap_or_default();
        let channel = event.get("channel").and_then(Value::as_str).unwrap_or_default();
        let user = event.get("user_id").and_then(Value::as_str);
        let p = &self.prefix;
        let (mode, set, index, member) = match (name, user) {
            ("channel_occupied", _) => {
                ("add", format!("{p}:occ:{channel}"), format!("{p}:occ-by-app:{app}"), channel)
            }
            ("channel_vacated", _) => {
                ("remove", format!("{p}:occ:{channel}"), format!("{p}:occ-by-app:{app}"), channel)
            }
            ("member_added", Some(u)) => ("add", format!("{p}:mem:{channel}:{u}"), String::new(), ""),
            ("member_removed", Some(u)) => ("remove", format!("{p}:mem:{channel}:{u}"), String::new(), ""),
            _ => {
                let mut e = event.clone();
                if let Some(o) = e.as_object_mut() {
                    o.insert("source_app".into(), app.into());
                }
                let _: () = conn.rpush(self.outbox(), Self::item(&e, time_ms)).await?;
                return Ok(true);
            }
        };
        let queued: i32 = self
            .script
            .key(set)
            .key(index)
            .key(self.outbox())
            .arg(mode)
            .arg(app)
            .arg(member)
            .arg(Self::item(event, time_ms))
            .invoke_async(&mut conn)
            .await?;
        Ok(queued == 1)
    }

    pub async fn seed_occupied(&self, app: &str, channel: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let p = &self.prefix;
        let _: () = conn.sadd(format!("{p}:occ:{channel}"), app).await?;
        let _: () = conn.sadd(format!("{p}:occ-by-app:{app}"), channel).await?;
        Ok(())
    }

    pub async fn seed_member(&self, app: &str, channel: &str, user_id: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let _: () = conn.sadd(format!("{}:mem:{channel}:{user_id}", self.prefix), app).await?;
        Ok(())
    }

    pub async fn occupied_counts(&self, apps: &[String]) -> redis::RedisResult<HashMap<String, usize>> {
        let mut conn = self.conn().await?;
        let mut out = HashMap::new();
        for app in apps {
            let n: usize = conn.scard(format!("{}:occ-by-app:{app}", self.prefix)).await?;
            out.insert(app.clone(), n);
        }
        Ok(out)
    }

    /// The next queued event, moved to processing. Not the blocking BLMOVE: the
    /// connection is multiplexed, and a blocked command would stall the others.
    pub async fn next(&self) -> redis::RedisResult<Option<String>> {
        let mut conn = self.conn().await?;
        redis::cmd("LMOVE")
            .arg(self.outbox())
            .arg(self.processing())
            .arg("LEFT")
            .arg("RIGHT")
            .query_async(&mut conn)
            .await
    }

    pub async fn done(&self, item: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let _: () = conn.lrem(self.processing(), 1, item).await?;
        Ok(())
    }

    /// Puts back what a crashed sender left in processing.
    pub async fn requeue(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        loop {
            let moved: Option<String> = redis::cmd("LMOVE")
                .arg(self.processing())
                .arg(self.outbox())
                .arg("RIGHT")
                .arg("LEFT")
                .query_async(&mut conn)
                .await?;
            if moved.is_none() {
                return Ok(());
            }
        }
    }
}
