//! The fleet's failover state in Redis (with `[webhooks] state = "redis"`):
//! each replica's views in one hash, the decision in one key, changed only by
//! compare-and-set, so two replicas deciding at once end with one decision.

use super::decide::Health;
use crate::redis_client::{Conn, bounded};
use redis::{AsyncCommands, RedisResult, Script};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One replica's views, as the fleet has them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaView {
    pub replica: String,
    pub at_ms: u64,
    pub apps: BTreeMap<String, Health>,
    /// `/client-config` answers it redirected, per "from>to".
    #[serde(default)]
    pub redirected: BTreeMap<String, u64>,
}

/// Sets the decision to ARGV[2] if it is still ARGV[1] ("null" when absent); the one in force.
const SWAP: &str = r"
local current = redis.call('GET', KEYS[1]) or 'null'
if current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return current
";

/// Views unheard of this long leave the hash.
const FORGET_VIEWS_MS: u64 = 3_600_000;

pub struct Shared {
    conn: Conn,
    /// `<redis_prefix>:failover`
    prefix: String,
    swap: Script,
}

impl Shared {
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            conn: crate::redis_client::connect(url)?,
            prefix: format!("{prefix}:failover"),
            swap: Script::new(SWAP),
        })
    }

    fn decision_key(&self) -> String {
        format!("{}:decision", self.prefix)
    }

    /// Writes this replica's view; every replica's views and the decision (its JSON).
    pub async fn exchange(&self, own: &ReplicaView, now_ms: u64) -> RedisResult<(Vec<ReplicaView>, String)> {
        let views_key = format!("{}:views", self.prefix);
        let own_json = serde_json::to_string(own).expect("serializes");
        let (all, decision): (std::collections::HashMap<String, String>, Option<String>) = bounded(
            redis::pipe()
                .hset(&views_key, &own.replica, own_json)
                .ignore()
                .hgetall(&views_key)
                .get(self.decision_key())
                .query_async(&mut self.conn.clone()),
        )
        .await?;
        let mut views = Vec::new();
        let mut gone = Vec::new();
        for (replica, json) in all {
            match serde_json::from_str::<ReplicaView>(&json) {
                Ok(v) if v.at_ms + FORGET_VIEWS_MS >= now_ms => views.push(v),
                _ => gone.push(replica),
            }
        }
        if !gone.is_empty() {
            let _: RedisResult<i64> = bounded(self.conn.clone().hdel(&views_key, gone)).await;
        }
        views.sort_by(|a, b| a.replica.cmp(&b.replica));
        Ok((views, decision.unwrap_or_else(|| "null".into())))
    }

    /// The decision's JSON ("null": none).
    pub async fn decision(&self) -> RedisResult<String> {
        let d: Option<String> = bounded(self.conn.clone().get(self.decision_key())).await?;
        Ok(d.unwrap_or_else(|| "null".into()))
    }

    /// Sets the decision to `next` if it is still `expected`; the one in force.
    pub async fn swap(&self, expected: &str, next: &str) -> RedisResult<String> {
        let mut call = self.swap.prepare_invoke();
        call.key(self.decision_key()).arg(expected).arg(next);
        bounded(call.invoke_async(&mut self.conn.clone())).await
    }

    /// Sets the decision whatever it was (an operator's).
    pub async fn set(&self, next: &str) -> RedisResult<()> {
        bounded(self.conn.clone().set(self.decision_key(), next)).await
    }
}
