//! `[publish]`: a Pusher REST-compatible endpoint that fans out to the target apps.

use super::{
    apps::AppSettings,
    fields::{ConfigError, in_range, list_or_csv},
    secrets::SecretReader,
};
use crate::pusher::AppKey;
use secrecy::SecretString;
use serde::Deserialize;
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    app_id: Option<String>,
    key: Option<String>,
    secret: Option<SecretString>,
    secret_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "list_or_csv")]
    targets: Vec<String>,
    #[serde(default)]
    success: PublishSuccess,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_retries")]
    retries: u32,
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_retries() -> u32 {
    2
}

/// When a fanned-out publish counts as delivered.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PublishSuccess {
    /// Every target app accepted it (the default: no client misses an event).
    #[default]
    All,
    /// At least one target app accepted it.
    Any,
}

#[derive(Debug, serde::Serialize)]
pub struct PublishSettings {
    pub app_id: String,
    pub key: AppKey,
    #[serde(serialize_with = "super::print::redacted")]
    pub secret: SecretString,
    /// Names of configured apps (checked at load).
    pub targets: Vec<String>,
    pub success: PublishSuccess,
    #[serde(rename = "timeout_ms", serialize_with = "super::print::ms")]
    pub timeout: Duration,
    pub retries: u32,
}

impl RawPublish {
    pub fn validate(
        self,
        apps: &BTreeMap<String, AppSettings>,
        secrets: &mut SecretReader,
    ) -> Result<PublishSettings, ConfigError> {
        let app_id = self
            .app_id
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ConfigError::new("publish.app_id", "missing"))?;
        let key = self.key.ok_or_else(|| ConfigError::new("publish.key", "missing"))?;
        let key = AppKey::parse(&key).map_err(|m| ConfigError::new("publish.key", m))?;
        let secret = secrets.required("publish.secret", self.secret, self.secret_file)?;
        if self.targets.is_empty() {
            return Err(ConfigError::new(
                "publish.targets",
                "name the apps to publish to, e.g. [\"old\", \"new\"]",
            ));
        }
        if let Some(t) = self.targets.iter().find(|t| !apps.contains_key(*t)) {
            return Err(ConfigError::new("publish.targets", format!("{t:?} is not a configured app")));
        }
        // Forwarded ciphertext decrypts on every app only if all derive the same shared secret.
        let keys: Vec<Option<&[u8; 32]>> =
            self.targets.iter().map(|t| apps[t].credentials.master_key.as_ref().map(|k| k.bytes())).collect();
        if keys.iter().any(Option::is_some) && keys.iter().any(|k| *k != keys[0]) {
            return Err(ConfigError::new(
                "publish.targets",
                "private-encrypted- events can only be published to apps with the same encryption master key \
                 (set the same encryption_master_key_base64 on every target, or none)",
            ));
        }
        in_range("publish.timeout_ms", self.timeout_ms, 1..=60_000)?;
        in_range("publish.retries", self.retries, 0..=5)?;
        Ok(PublishSettings {
            app_id,
            key,
            secret,
            targets: self.targets,
            success: self.success,
            timeout: Duration::from_millis(self.timeout_ms),
            retries: self.retries,
        })
    }
}
