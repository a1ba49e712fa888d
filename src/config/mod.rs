//! Typed settings: a TOML file, overridden by `DUAL_AUTH__SECTION__KEY`
//! environment variables, with `*_file` alternatives for every secret.
//! Everything is validated at load; errors name the offending key. One file
//! per section (a feature's own section in its folder: `webhooks::config`,
//! `rollout::config`, `presence::config`), each with its raw (deserialized)
//! and validated form and `validate()`; the validated form prints through
//! `Serialize` (`print`).

pub(crate) mod apps;
pub(crate) mod fields;
mod log;
pub(crate) mod print;
mod publish;
pub(crate) mod secrets;
mod server;
mod session_check;
mod status;

pub use crate::presence::config::PresenceSettings;
pub use crate::rollout::config::RolloutSettings;
pub use crate::webhooks::config::{WebhookSettings, WebhookStore};
pub use apps::{AppName, AppSettings};
pub use fields::ConfigError;
pub(crate) use fields::redact_url;
pub use log::{LogFormat, LogSettings};
pub use publish::{PublishSettings, PublishSuccess};
pub use server::{RateLimitSettings, ServerSettings};
pub use session_check::{CachePolicy, SessionCheckSettings};
pub use status::StatusSettings;

use serde::Deserialize;
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

pub const ENV_PREFIX: &str = "DUAL_AUTH";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    server: server::RawServer,
    session_check: Option<session_check::RawSessionCheck>,
    #[serde(default)]
    apps: BTreeMap<String, apps::RawApp>,
    #[serde(default)]
    rate_limit: server::RawRateLimit,
    publish: Option<publish::RawPublish>,
    webhooks: Option<crate::webhooks::config::RawWebhooks>,
    rollout: Option<crate::rollout::config::RawRollout>,
    #[serde(default)]
    status: status::RawStatus,
    #[serde(default)]
    presence: crate::presence::config::RawPresence,
    recovery: Option<crate::recovery::config::RawRecovery>,
    failover: Option<crate::failover::config::RawFailover>,
    #[serde(default)]
    log: log::RawLog,
}

/// The validated configuration. Printed (`redacted_toml`) through its
/// `Serialize`, under the config's own key names, secrets redacted by type.
#[derive(Debug, serde::Serialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub session_check: SessionCheckSettings,
    pub apps: BTreeMap<String, AppSettings>,
    #[serde(serialize_with = "server::print_rate_limit")]
    pub rate_limit: Option<RateLimitSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<WebhookSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSettings>,
    pub status: StatusSettings,
    pub presence: PresenceSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<crate::recovery::config::RecoverySettings>,
    /// `[failover]` when enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::failover::config::FailoverSettings>,
    pub log: LogSettings,
    /// Every `*_file` the config reads secrets from (watched for hot reload).
    #[serde(skip)]
    pub secret_files: Vec<PathBuf>,
}

impl RawSettings {
    fn validate(self) -> Result<Settings, ConfigError> {
        let mut secrets = secrets::SecretReader::default();
        let server = self.server.validate()?;
        let session_check = self
            .session_check
            .ok_or_else(|| ConfigError::new("session_check", "missing section"))?
            .validate()?;
        let apps = apps::validate(self.apps, &mut secrets)?;
        let rate_limit = self.rate_limit.validate()?;
        let publish = self.publish.map(|p| p.validate(&apps, &mut secrets)).transpose()?;
        let webhooks = self.webhooks.map(|w| w.validate(&mut secrets)).transpose()?;
        let rollout = self.rollout.map(|r| r.validate(&apps)).transpose()?;
        let status = self.status.validate(&apps)?;
        let presence = self.presence.validate(webhooks.is_some())?;
        let recovery = self.recovery.map(|r| r.validate(publish.is_some())).transpose()?;
        let failover = self.failover.map(|f| f.validate(rollout.as_ref())).transpose()?.flatten();
        let log = self.log.validate();
        Ok(Settings {
            server,
            session_check,
            apps,
            rate_limit,
            publish,
            webhooks,
            rollout,
            status,
            presence,
            recovery,
            failover,
            log,
            secret_files: secrets.files,
        })
    }
}

impl Settings {
    /// Loads the file (if any), then the `DUAL_AUTH__*` environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, None, None)
    }

    /// Loads from a TOML string (for tests and the demo), then `env` if given.
    pub fn from_toml(toml: &str, env: Option<HashMap<String, String>>) -> Result<Self, ConfigError> {
        Self::load_from(None, Some(toml), Some(env.unwrap_or_default()))
    }

    fn load_from(
        file: Option<&Path>,
        toml: Option<&str>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        use config::{Environment, File, FileFormat};
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("--config", format!("{} is not a readable file: {e}", path.display()))
            })?;
            syntax_check(&path.display().to_string(), &text)?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
        }
        if let Some(toml) = toml {
            syntax_check("(inline config)", toml)?;
            builder = builder.add_source(File::from_str(toml, FileFormat::Toml));
        }
        // No try_parsing: it would turn a secret like "0123" into the number 123.
        let mut environment = Environment::with_prefix(ENV_PREFIX).prefix_separator("__").separator("__");
        if let Some(env) = env {
            environment = environment.source(Some(env.into_iter().collect()));
        }
        let raw: RawSettings = builder
            .add_source(environment)
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::new(config_error_key(&e), config_error_message(&e)))?;
        raw.validate()
    }

    pub fn app(&self, name: &str) -> Option<&AppSettings> {
        self.apps.get(name)
    }

    /// What runs, but not as a fleet would expect: state kept in this process
    /// while the service is usually run as several replicas. Said by
    /// `check-config` and at start.
    pub fn warnings(&self) -> Vec<String> {
        let shared = matches!(self.webhooks.as_ref().map(|w| &w.store), Some(WebhookStore::Redis { .. }));
        let mut out = Vec::new();
        if self.webhooks.is_some() && !shared {
            out.push(
                "[webhooks] state = \"memory\" is for ONE process: behind several replicas each sees only part of \
                 each app's webhooks, so the merged occupancy, the drain verdict and /status are silently wrong. \
                 With more than one replica set state = \"redis\" (docs/webhooks-and-status.md)"
                    .to_owned(),
            );
        }
        if self.recovery.is_some() && !shared {
            out.push(
                "[recovery] keeps events in this process: behind several replicas a client asking another replica \
                 than the one that published is told of a gap. With more than one replica set [webhooks] \
                 state = \"redis\" (docs/recovery.md)"
                    .to_owned(),
            );
        }
        if self.failover.is_some() && !shared {
            out.push(
                "[failover] without Redis: each replica decides alone, and replicas may send clients different \
                 ways. With more than one replica set [webhooks] state = \"redis\" (docs/failover.md)"
                    .to_owned(),
            );
        }
        out
    }

    /// The effective configuration as TOML, secrets redacted: every section,
    /// each printed by its own module.
    pub fn redacted_toml(&self) -> String {
        // Through a toml::Value: its tables keep keys in order, as printed before.
        toml::Value::try_from(self)
            .and_then(|v| toml::to_string_pretty(&v).map_err(serde::ser::Error::custom))
            .unwrap_or_default()
    }
}

impl Settings {
    /// A short digest of the effective configuration, listen addresses left
    /// out (replicas on one host differ there): equal on replicas that run the
    /// same config. The secrets are in it too, so a rotation one pod missed
    /// shows as drift; 48 bits of a SHA-256 over the whole tell nothing of them.
    pub fn digest(&self) -> String {
        use secrecy::ExposeSecret;
        use sha2::{Digest, Sha256};
        let mut root: toml::Table = toml::from_str(&self.redacted_toml()).unwrap_or_default();
        if let Some(toml::Value::Table(server)) = root.get_mut("server") {
            server.remove("listen");
            server.remove("admin_listen");
        }
        let mut hash = Sha256::new();
        hash.update(root.to_string().as_bytes());
        for app in self.apps.values() {
            hash.update([0]);
            hash.update(app.credentials.secret.expose_secret().as_bytes());
            if let Some(master) = &app.credentials.master_key {
                hash.update(master.bytes());
            }
        }
        for secret in [self.webhooks.as_ref().map(|w| &w.secret), self.publish.as_ref().map(|p| &p.secret)] {
            hash.update([0]);
            hash.update(secret.map(|s| s.expose_secret().as_bytes()).unwrap_or_default());
        }
        hex::encode(&hash.finalize()[..6])
    }
}

// ---- reading and reporting ------------------------------------------------------------------

fn config_error_key(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::Type { key: Some(k), .. } => k.clone(),
        config::ConfigError::At { key: Some(k), .. } => k.clone(),
        config::ConfigError::Foreign(_) | config::ConfigError::FileParse { .. } => "(file)".into(),
        _ => "(config)".into(),
    }
}

/// The config crate's message, without the offending value (it may be a secret).
fn config_error_message(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::Type { expected, .. } => format!("wrong type: expected {expected}"),
        config::ConfigError::At { error, .. } => config_error_message(error),
        other => other.to_string(),
    }
}

/// Every `*_file` path a config names (file and environment), read without
/// validating it: what to watch when that config was rejected.
pub fn referenced_files(file: Option<&Path>) -> Vec<PathBuf> {
    fn walk(value: &toml::Value, key: &str, out: &mut Vec<PathBuf>) {
        match value {
            toml::Value::Table(t) => t.iter().for_each(|(k, v)| walk(v, k, out)),
            toml::Value::String(s) if key.ends_with("_file") => out.push(PathBuf::from(s)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(table) = file.and_then(|f| std::fs::read_to_string(f).ok()?.parse::<toml::Table>().ok()) {
        walk(&toml::Value::Table(table), "", &mut out);
    }
    let prefix = format!("{ENV_PREFIX}__");
    out.extend(
        std::env::vars()
            .filter(|(k, _)| k.starts_with(&prefix) && k.to_ascii_lowercase().ends_with("_file"))
            .map(|(_, v)| PathBuf::from(v)),
    );
    out
}

/// Parses the TOML once to report a syntax error by file, line and key. The
/// parser's own report quotes the offending line, which may hold a secret.
fn syntax_check(source: &str, text: &str) -> Result<(), ConfigError> {
    let Err(e) = text.parse::<toml::Table>() else { return Ok(()) };
    let line = e.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let bare = |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let lines: Vec<&str> = text.lines().collect();
    let key = line.and_then(|n| {
        let name = lines.get(n - 1)?.split_once('=')?.0.trim();
        // The nearest [section] header above names the table.
        let section = lines[..n - 1]
            .iter()
            .rev()
            .find_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'))
            .map(str::trim)
            .filter(|s| bare(s));
        bare(name).then(|| section.map_or(name.to_owned(), |s| format!("{s}.{name}")))
    });
    let key = key.unwrap_or_else(|| "(file)".into());
    let at = line.map(|n| format!(" line {n}")).unwrap_or_default();
    let message = e.message().lines().next().unwrap_or("invalid TOML");
    Err(ConfigError::new(key, format!("TOML syntax error in {source}{at}: {message}")))
}

#[cfg(test)]
mod tests;
