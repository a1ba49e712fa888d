//! `[webhooks]`: where the merged webhooks of every app go, how they are
//! signed, where the merge state lives, and what is accepted.

use crate::config::{
    fields::{ConfigError, http_url, in_range, list_or_csv},
    print,
    secrets::SecretReader,
};
use crate::pusher::AppKey;
use secrecy::SecretString;
use serde::Deserialize;
use std::{path::PathBuf, time::Duration};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhooks {
    forward_url: Option<String>,
    key: Option<String>,
    secret: Option<SecretString>,
    secret_file: Option<PathBuf>,
    #[serde(default = "default_retry_max_secs")]
    retry_max_secs: u64,
    #[serde(default)]
    state: StoreKind,
    redis_url: Option<String>,
    /// Sentinels (`host:port`), instead of `redis_url`.
    #[serde(default, deserialize_with = "list_or_csv")]
    sentinels: Vec<String>,
    sentinel_master: Option<String>,
    #[serde(default)]
    replica_acks: u32,
    #[serde(default = "default_replica_ack_timeout_ms")]
    replica_ack_timeout_ms: u64,
    #[serde(default = "default_redis_prefix")]
    redis_prefix: String,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    #[serde(default = "default_max_age_secs")]
    max_age_secs: u64,
}
fn default_retry_max_secs() -> u64 {
    300
}
fn default_replica_ack_timeout_ms() -> u64 {
    500
}
fn default_redis_prefix() -> String {
    "pusher-dual-auth".into()
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
/// Pusher retries a failed webhook for 5 minutes; twice that leaves room for clock skew.
fn default_max_age_secs() -> u64 {
    600
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    #[default]
    Memory,
    Redis,
}

/// Where the webhook merge state and outbox live (chosen at start; not hot-reloaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookStore {
    /// In this process: one replica.
    Memory,
    /// In Redis: shared by several replicas, durable queue. `url` is
    /// `redis://`, `rediss://` or `redis+sentinel://` (`sentinels` are made into one).
    Redis { url: String, prefix: String, acks: ReplicaAcks },
}

/// `replica_acks`: a webhook is acknowledged only once its write reached this
/// many replicas (`WAIT`), within the timeout; 0: as soon as the primary has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaAcks {
    pub replicas: u32,
    pub timeout: Duration,
}

#[derive(Debug, serde::Serialize)]
pub struct WebhookSettings {
    #[serde(serialize_with = "print::url")]
    pub forward_url: url::Url,
    /// Sent as X-Pusher-Key; with `secret` it signs X-Pusher-Signature.
    pub key: AppKey,
    #[serde(serialize_with = "print::redacted")]
    pub secret: SecretString,
    #[serde(rename = "retry_max_secs", serialize_with = "print::secs")]
    pub retry_max: Duration,
    #[serde(flatten)]
    pub store: WebhookStore,
    /// Largest webhook body read (Pusher's batches are small).
    pub max_body_bytes: usize,
    /// Webhooks whose `time_ms` is further than this from now are refused,
    /// and exact repeats within it are acknowledged but not applied again.
    #[serde(rename = "max_age_secs", serialize_with = "print::secs")]
    pub max_age: Duration,
}

/// Printed as `state`, and for Redis its URL (without a password) and prefix.
impl serde::Serialize for WebhookStore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        match self {
            Self::Memory => map.serialize_entry("state", "memory")?,
            Self::Redis { url, prefix, acks } => {
                map.serialize_entry("state", "redis")?;
                // A Redis URL may carry a password.
                map.serialize_entry("redis_url", &crate::redis_client::redacted_url(url))?;
                map.serialize_entry("redis_prefix", prefix)?;
                map.serialize_entry("replica_acks", &acks.replicas)?;
                map.serialize_entry("replica_ack_timeout_ms", &(acks.timeout.as_millis() as u64))?;
            }
        }
        map.end()
    }
}

impl RawWebhooks {
    pub fn validate(self, secrets: &mut SecretReader) -> Result<WebhookSettings, ConfigError> {
        let forward_url = self
            .forward_url
            .ok_or_else(|| ConfigError::new("webhooks.forward_url", "must be an http:// or https:// URL"))?;
        let forward_url = http_url("webhooks.forward_url", &forward_url)?;
        let key =
            self.key.filter(|k| !k.is_empty()).ok_or_else(|| ConfigError::new("webhooks.key", "missing"))?;
        let key = AppKey::parse(&key).map_err(|m| ConfigError::new("webhooks.key", m))?;
        let secret = secrets.required("webhooks.secret", self.secret, self.secret_file)?;
        in_range("webhooks.replica_acks", self.replica_acks, 0..=16)?;
        // Within the one-second deadline of every Redis call (`redis_client::DEADLINE`).
        in_range("webhooks.replica_ack_timeout_ms", self.replica_ack_timeout_ms, 1..=800)?;
        let acks = ReplicaAcks {
            replicas: self.replica_acks,
            timeout: Duration::from_millis(self.replica_ack_timeout_ms),
        };
        let url = match (self.redis_url, self.sentinels.is_empty(), self.sentinel_master) {
            (Some(_), false, _) => {
                return Err(ConfigError::new("webhooks.sentinels", "give redis_url or sentinels, not both"));
            }
            (None, false, None) => {
                return Err(ConfigError::new(
                    "webhooks.sentinel_master",
                    "sentinels need the master's name: sentinel_master = \"mymaster\"",
                ));
            }
            (None, false, Some(master)) => {
                Some(crate::redis_client::SentinelTarget::url(&self.sentinels, &master))
            }
            (_, true, Some(_)) => {
                return Err(ConfigError::new(
                    "webhooks.sentinel_master",
                    "only with sentinels = [\"host:26379\", …]",
                ));
            }
            (url, true, None) => url,
        };
        let store = match (self.state, url) {
            (StoreKind::Redis, Some(url)) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                WebhookStore::Redis { url, prefix: self.redis_prefix, acks }
            }
            (StoreKind::Redis, Some(url)) if url.starts_with(crate::redis_client::SENTINEL_SCHEME) => {
                let key = if self.sentinels.is_empty() { "webhooks.redis_url" } else { "webhooks.sentinels" };
                if let Some(Err(e)) = crate::redis_client::SentinelTarget::parse(&url) {
                    return Err(ConfigError::new(key, e));
                }
                WebhookStore::Redis { url, prefix: self.redis_prefix, acks }
            }
            (StoreKind::Redis, _) => {
                return Err(ConfigError::new(
                    "webhooks.redis_url",
                    "state = \"redis\" needs redis_url = \"redis://host:6379/0\" (or \"redis+sentinel://host:26379,host:26379/mymaster\", or sentinels + sentinel_master)",
                ));
            }
            (StoreKind::Memory, _) if acks.replicas > 0 => {
                return Err(ConfigError::new("webhooks.replica_acks", "needs state = \"redis\""));
            }
            (StoreKind::Memory, _) => WebhookStore::Memory,
        };
        in_range("webhooks.max_body_bytes", self.max_body_bytes, 1024..=1024 * 1024)?;
        in_range("webhooks.max_age_secs", self.max_age_secs, 1..=86_400)?;
        Ok(WebhookSettings {
            forward_url,
            key,
            secret,
            retry_max: Duration::from_secs(self.retry_max_secs),
            store,
            max_body_bytes: self.max_body_bytes,
            max_age: Duration::from_secs(self.max_age_secs),
        })
    }
}
