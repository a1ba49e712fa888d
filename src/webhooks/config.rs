//! `[webhooks]`: where the merged webhooks of every app go, how they are
//! signed, where the merge state lives, and what is accepted.

use crate::config::{
    fields::{ConfigError, http_url, in_range, redact_url},
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
    /// In Redis: shared by several replicas, durable queue.
    Redis { url: String, prefix: String },
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
            Self::Redis { url, prefix } => {
                map.serialize_entry("state", "redis")?;
                // A Redis URL may carry a password.
                let shown =
                    url::Url::parse(url).map(|u| redact_url(&u)).unwrap_or_else(|_| "[redacted]".into());
                map.serialize_entry("redis_url", &shown)?;
                map.serialize_entry("redis_prefix", prefix)?;
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
        let store = match (self.state, self.redis_url) {
            (StoreKind::Redis, Some(url)) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                WebhookStore::Redis { url, prefix: self.redis_prefix }
            }
            (StoreKind::Redis, _) => {
                return Err(ConfigError::new(
                    "webhooks.redis_url",
                    "state = \"redis\" needs redis_url = \"redis://host:6379/0\"",
                ));
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
