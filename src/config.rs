//! Typed settings: a TOML file, overridden by `DUAL_AUTH__SECTION__KEY`
//! environment variables, with `*_file` alternatives for every secret.
//! Everything is validated at load; errors name the offending key.

use crate::pusher::{AppCredentials, AppKey, MasterKey};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub const ENV_PREFIX: &str = "DUAL_AUTH";

/// A configuration problem, naming the key (e.g. `apps.new.secret`).
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

// ---- raw, as deserialized ------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    server: RawServer,
    session_check: Option<RawSessionCheck>,
    #[serde(default)]
    apps: BTreeMap<String, RawApp>,
    #[serde(default)]
    rate_limit: RawRateLimit,
    publish: Option<RawPublish>,
    webhooks: Option<RawWebhooks>,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStatus {
    old_app: String,
    drain_window_secs: u64,
    sample_secs: u64,
}

impl Default for RawStatus {
    fn default() -> Self {
        Self { old_app: "old".into(), drain_window_secs: 86_400, sample_secs: 10 }
    }
}

/// `[status]`: what the migration status page calls the old app, and when it is drained.
#[derive(Debug, Clone)]
pub struct StatusSettings {
    pub old_app: String,
    pub drain_window: Duration,
    pub sample_every: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
    forward_url: Option<String>,
    key: Option<String>,
    secret: Option<SecretString>,
    secret_file: Option<PathBuf>,
    #[serde(default = "default_retry_max_secs")]
    retry_max_secs: u64,
    #[serde(default)]
    state: WebhookState,
    redis_url: Option<String>,
    #[serde(default = "default_redis_prefix")]
    redis_prefix: String,
    #[serde(default = "default_webhook_max_body_bytes")]
    max_body_bytes: usize,
    #[serde(default = "default_webhook_max_age_secs")]
    max_age_secs: u64,
}
fn default_webhook_max_body_bytes() -> usize {
    64 * 1024
}
/// Pusher retries a failed webhook for 5 minutes; twice that leaves room for clock skew.
fn default_webhook_max_age_secs() -> u64 {
    600
}
fn default_redis_prefix() -> String {
    "pusher-dual-auth".into()
}

/// Where the webhook merge state and outbox live.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookState {
    /// In this process: one replica.
    #[default]
    Memory,
    /// In Redis: shared by several replicas, durable queue.
    Redis,
}
fn default_retry_max_secs() -> u64 {
    300
}

/// `[webhooks]`: where merged webhooks go, and how they are signed.
#[derive(Debug)]
pub struct WebhookSettings {
    pub forward_url: url::Url,
    /// Sent as X-Pusher-Key; with `secret` it signs X-Pusher-Signature.
    pub key: String,
    pub secret: SecretString,
    pub retry_max: Duration,
    pub state: WebhookState,
    /// `redis://…`, when `state = "redis"`.
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    /// Largest webhook body read (Pusher's batches are small).
    pub max_body_bytes: usize,
    /// Webhooks whose `time_ms` is further than this from now are refused,
    /// and exact repeats within it are acknowledged but not applied again.
    pub max_age: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    app_id: Option<String>,
    key: Option<String>,
    secret: Option<SecretString>,
    secret_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "list_or_csv")]
    targets: Vec<String>,
    #[serde(default)]
    success: PublishSuccess,
    #[serde(default = "default_publish_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_publish_retries")]
    retries: u32,
}
fn default_publish_timeout_ms() -> u64 {
    5_000
}
fn default_publish_retries() -> u32 {
    2
}

/// When a fanned-out publish counts as delivered.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PublishSuccess {
    /// Every target app accepted it (the default: no client misses an event).
    #[default]
    All,
    /// At least one target app accepted it.
    Any,
}

/// `[publish]`: a Pusher REST-compatible endpoint that fans out to the targets.
#[derive(Debug)]
pub struct PublishSettings {
    pub app_id: String,
    pub key: String,
    pub secret: SecretString,
    pub targets: Vec<String>,
    pub success: PublishSuccess,
    pub timeout: Duration,
    pub retries: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRateLimit {
    enabled: bool,
    per_second: u32,
    burst: u32,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self { enabled: false, per_second: 20, burst: 40 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    admin_listen: String,
    #[serde(deserialize_with = "list_or_csv")]
    allowed_origins: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    trusted_proxies: Vec<String>,
    max_body_bytes: usize,
    max_batch_channels: usize,
    workers: Option<usize>,
    shutdown_timeout_secs: u64,
    body_timeout_ms: u64,
    header_timeout_ms: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            // Metrics and the status page are for operators: loopback unless opened on purpose.
            admin_listen: "127.0.0.1:9090".into(),
            allowed_origins: vec![],
            trusted_proxies: vec![],
            max_body_bytes: 8 * 1024,
            max_batch_channels: 100,
            workers: None,
            shutdown_timeout_secs: 20,
            body_timeout_ms: 5_000,
            header_timeout_ms: 5_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSessionCheck {
    url: Option<String>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_max_response_bytes")]
    max_response_bytes: usize,
    #[serde(default, deserialize_with = "list_or_csv")]
    forward_headers: Vec<String>,
    #[serde(default = "default_true")]
    coalesce: bool,
    #[serde(default)]
    coalesce_across_addresses: bool,
    #[serde(default)]
    cache_ttl_ms: u64,
    cache_deny_ttl_ms: Option<u64>,
    #[serde(default = "default_cache_max_entries")]
    cache_max_entries: usize,
}
fn default_true() -> bool {
    true
}
fn default_cache_max_entries() -> usize {
    10_000
}
fn default_timeout_ms() -> u64 {
    2_000
}
fn default_connect_timeout_ms() -> u64 {
    1_000
}
fn default_max_response_bytes() -> usize {
    16 * 1024
}

/// A TOML array, or (from the environment) one comma-separated string.
fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(v) => v,
        ListOrCsv::Csv(s) => {
            s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    app_id: Option<String>,
    key: Option<String>,
    secret: Option<SecretString>,
    secret_file: Option<PathBuf>,
    cluster: Option<String>,
    encryption_master_key_base64: Option<SecretString>,
    encryption_master_key_file: Option<PathBuf>,
    rest_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    level: Option<String>,
}

// ---- validated ------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    #[default]
    Auto,
    Pretty,
    Json,
}

#[derive(Debug)]
pub struct Settings {
    pub server: ServerSettings,
    pub session_check: SessionCheckSettings,
    pub apps: BTreeMap<String, AppSettings>,
    pub rate_limit: Option<RateLimitSettings>,
    pub publish: Option<PublishSettings>,
    pub webhooks: Option<WebhookSettings>,
    pub status: StatusSettings,
    pub log: LogSettings,
    /// Every `*_file` the config reads secrets from (watched for hot reload).
    pub secret_files: Vec<PathBuf>,
}

/// Per-client-IP token bucket on the auth routes (off unless configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub per_second: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// The operators' listener: /metrics, /status, /status.html (and /healthz, /readyz).
    pub admin_listen: SocketAddr,
    /// Exact origins (`scheme://host[:port]`, lowercase) allowed cross-origin.
    pub allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    pub max_batch_channels: usize,
    pub workers: Option<usize>,
    pub shutdown_timeout: Duration,
    pub body_timeout: Duration,
    /// Time a client has to send the request headers (slowloris defence).
    pub header_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SessionCheckSettings {
    pub url: url::Url,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_response_bytes: usize,
    /// Extra request headers forwarded besides Cookie and Authorization (lowercase).
    pub forward_headers: Vec<String>,
    /// Coalescing and the optional decision cache.
    pub cache: crate::session_check::CachePolicy,
}

#[derive(Debug)]
pub struct AppSettings {
    pub name: String,
    pub app_id: String,
    pub cluster: Option<String>,
    /// The app's REST API base (for publishing): `rest_url`, or from the cluster.
    pub rest_url: url::Url,
    pub credentials: AppCredentials,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// Headers that must never be forwarded to the host, whatever the config says.
const NEVER_FORWARD: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-type",
    "forwarded",
    "proxy-authorization",
    "proxy-authenticate",
    "expect",
];

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
        let mut environment = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            // No try_parsing: it would turn a secret like "0123" into the number 123.
            ;
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

    /// The effective configuration as TOML, secrets redacted.
    pub fn redacted_toml(&self) -> String {
        use toml::{Table, Value};
        let mut root = Table::new();
        let s = &self.server;
        let mut server = Table::new();
        server.insert("listen".into(), Value::String(s.listen.to_string()));
        server.insert("admin_listen".into(), Value::String(s.admin_listen.to_string()));
        server.insert("allowed_origins".into(), strings(s.allowed_origins.iter().cloned()));
        server.insert("trusted_proxies".into(), strings(s.trusted_proxies.iter().map(|p| p.to_string())));
        server.insert("max_body_bytes".into(), Value::Integer(s.max_body_bytes as i64));
        server.insert("max_batch_channels".into(), Value::Integer(s.max_batch_channels as i64));
        if let Some(w) = s.workers {
            server.insert("workers".into(), Value::Integer(w as i64));
        }
        server.insert("shutdown_timeout_secs".into(), Value::Integer(s.shutdown_timeout.as_secs() as i64));
        server.insert("body_timeout_ms".into(), Value::Integer(s.body_timeout.as_millis() as i64));
        server.insert("header_timeout_ms".into(), Value::Integer(s.header_timeout.as_millis() as i64));
        root.insert("server".into(), Value::Table(server));

        let c = &self.session_check;
        let mut check = Table::new();
        check.insert("url".into(), Value::String(redact_url(&c.url)));
        check.insert("timeout_ms".into(), Value::Integer(c.timeout.as_millis() as i64));
        check.insert("connect_timeout_ms".into(), Value::Integer(c.connect_timeout.as_millis() as i64));
        check.insert("max_response_bytes".into(), Value::Integer(c.max_response_bytes as i64));
        check.insert("forward_headers".into(), strings(c.forward_headers.iter().cloned()));
        check.insert("coalesce".into(), Value::Boolean(c.cache.coalesce));
        check.insert("coalesce_across_addresses".into(), Value::Boolean(c.cache.across_addresses));
        check.insert("cache_ttl_ms".into(), Value::Integer(c.cache.grant_ttl.as_millis() as i64));
        check.insert("cache_deny_ttl_ms".into(), Value::Integer(c.cache.deny_ttl.as_millis() as i64));
        check.insert("cache_max_entries".into(), Value::Integer(c.cache.max_entries as i64));
        root.insert("session_check".into(), Value::Table(check));

        let mut apps = Table::new();
        for (name, app) in &self.apps {
            let mut t = Table::new();
            t.insert("app_id".into(), Value::String(app.app_id.clone()));
            t.insert("key".into(), Value::String(app.credentials.key.as_ref().to_owned()));
            t.insert("secret".into(), Value::String("[redacted]".into()));
            if let Some(cluster) = &app.cluster {
                t.insert("cluster".into(), Value::String(cluster.clone()));
            }
            t.insert("rest_url".into(), Value::String(redact_url(&app.rest_url)));
            let enc = if app.credentials.master_key.is_some() { "[redacted]" } else { "(not set)" };
            t.insert("encryption_master_key_base64".into(), Value::String(enc.into()));
            apps.insert(name.clone(), Value::Table(t));
        }
        root.insert("apps".into(), Value::Table(apps));

        let mut rate = Table::new();
        rate.insert("enabled".into(), Value::Boolean(self.rate_limit.is_some()));
        if let Some(r) = self.rate_limit {
            rate.insert("per_second".into(), Value::Integer(r.per_second.get().into()));
            rate.insert("burst".into(), Value::Integer(r.burst.get().into()));
        }
        root.insert("rate_limit".into(), Value::Table(rate));

        if let Some(p) = &self.publish {
            let mut t = Table::new();
            t.insert("app_id".into(), Value::String(p.app_id.clone()));
            t.insert("key".into(), Value::String(p.key.clone()));
            t.insert("secret".into(), Value::String("[redacted]".into()));
            t.insert("targets".into(), strings(p.targets.iter().cloned()));
            t.insert("success".into(), Value::String(format!("{:?}", p.success).to_lowercase()));
            t.insert("timeout_ms".into(), Value::Integer(p.timeout.as_millis() as i64));
            t.insert("retries".into(), Value::Integer(p.retries.into()));
            root.insert("publish".into(), Value::Table(t));
        }

        let mut log = Table::new();
        log.insert("format".into(), Value::String(format!("{:?}", self.log.format).to_lowercase()));
        log.insert("level".into(), Value::String(self.log.level.clone()));
        root.insert("log".into(), Value::Table(log));
        toml::to_string_pretty(&root).unwrap_or_default()
    }
}

fn strings(items: impl Iterator<Item = String>) -> toml::Value {
    toml::Value::Array(items.map(toml::Value::String).collect())
}

/// Userinfo in a URL is a credential: never print it.
fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("redacted");
        let _ = u.set_password(None);
    }
    u.to_string()
}

fn config_error_key(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::Type { key: Some(k), .. } => k.clone(),
        config::ConfigError::At { key: Some(k), .. } => k.clone(),
        config::ConfigError::Foreign(_) | config::ConfigError::FileParse { .. } => "(file)".into(),
        _ => "(config)".into(),
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

/// The config crate's message, without the offending value (it may be a secret).
fn config_error_message(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::Type { expected, .. } => format!("wrong type: expected {expected}"),
        config::ConfigError::At { error, .. } => config_error_message(error),
        other => other.to_string(),
    }
}

/// App names become URL path segments and env var segments.
fn valid_app_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=32).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("__")
}

/// A secret given inline or as a file (`secret` / `secret_file`).
fn read_secret(
    key: &str,
    inline: Option<SecretString>,
    file: Option<PathBuf>,
    required: bool,
) -> Result<Option<SecretString>, ConfigError> {
    read_secret_named(key, &format!("{key}_file"), inline, file, required)
}

/// `read_secret` where the file variant's key is not `<key>_file`.
fn read_secret_named(
    key: &str,
    file_key: &str,
    inline: Option<SecretString>,
    file: Option<PathBuf>,
    required: bool,
) -> Result<Option<SecretString>, ConfigError> {
    let value = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(key, format!("set either `{key}` or `{file_key}`, not both")));
        }
        (Some(s), None) => s,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new(file_key, format!("cannot read {}: {e}", path.display())))?;
            SecretString::from(text.trim().to_owned())
        }
        (None, None) if required => {
            return Err(ConfigError::new(key, format!("missing: set `{key}` or `{file_key}`")));
        }
        (None, None) => return Ok(None),
    };
    if value.expose_secret().is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    Ok(Some(value))
}

fn validate_publish(
    p: RawPublish,
    apps: &BTreeMap<String, AppSettings>,
    secret_files: &mut Vec<PathBuf>,
) -> Result<PublishSettings, ConfigError> {
    let app_id = p
        .app_id
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ConfigError::new("publish.app_id", "missing"))?;
    let key = p.key.ok_or_else(|| ConfigError::new("publish.key", "missing"))?;
    AppKey::parse(&key).map_err(|m| ConfigError::new("publish.key", m))?;
    secret_files.extend(p.secret_file.iter().cloned());
    let secret = read_secret("publish.secret", p.secret, p.secret_file, true)?.expect("required");
    if p.targets.is_empty() {
        return Err(ConfigError::new(
            "publish.targets",
            "name the apps to publish to, e.g. [\"old\", \"new\"]",
        ));
    }
    for t in &p.targets {
        if !apps.contains_key(t) {
            return Err(ConfigError::new("publish.targets", format!("{t:?} is not a configured app")));
        }
    }
    // Forwarded ciphertext decrypts on every app only if all derive the same shared secret.
    let keys: Vec<Option<&[u8; 32]>> =
        p.targets.iter().map(|t| apps[t].credentials.master_key.as_ref().map(|k| k.bytes())).collect();
    if keys.iter().any(Option::is_some) && keys.iter().any(|k| *k != keys[0]) {
        return Err(ConfigError::new(
            "publish.targets",
            "private-encrypted- events can only be published to apps with the same encryption master key \
             (set the same encryption_master_key_base64 on every target, or none)",
        ));
    }
    if !(1..=60_000).contains(&p.timeout_ms) {
        return Err(ConfigError::new("publish.timeout_ms", "must be between 1 and 60000"));
    }
    if p.retries > 5 {
        return Err(ConfigError::new("publish.retries", "must be at most 5"));
    }
    Ok(PublishSettings {
        app_id,
        key,
        secret,
        targets: p.targets,
        success: p.success,
        timeout: Duration::from_millis(p.timeout_ms),
        retries: p.retries,
    })
}

fn normalize_origin(key: &str, input: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::new(key, format!("{input:?} is not an origin like https://app.example.com"));
    let u = url::Url::parse(input).map_err(|_| bad())?;
    if !matches!(u.scheme(), "http" | "https")
        || u.host_str().is_none()
        || u.path() != "/"
        || input.ends_with('/')
    {
        return Err(bad());
    }
    if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
        return Err(bad());
    }
    Ok(u.origin().ascii_serialization())
}

impl RawSettings {
    fn validate(self) -> Result<Settings, ConfigError> {
        let s = self.server;
        let listen = s.listen.parse().map_err(|_| {
            ConfigError::new("server.listen", format!("{:?} is not an address like 127.0.0.1:8080", s.listen))
        })?;
        let admin_listen: SocketAddr = s.admin_listen.parse().map_err(|_| {
            ConfigError::new(
                "server.admin_listen",
                format!("{:?} is not an address like 127.0.0.1:9090", s.admin_listen),
            )
        })?;
        if admin_listen == listen && listen.port() != 0 {
            return Err(ConfigError::new("server.admin_listen", "must differ from server.listen"));
        }
        let allowed_origins = s
            .allowed_origins
            .iter()
            .map(|o| normalize_origin("server.allowed_origins", o))
            .collect::<Result<_, _>>()?;
        let trusted_proxies = s
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<IpNet>().or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from)).map_err(|_| {
                    ConfigError::new("server.trusted_proxies", format!("{p:?} is not an IP or CIDR"))
                })
            })
            .collect::<Result<_, _>>()?;
        if !(256..=1024 * 1024).contains(&s.max_body_bytes) {
            return Err(ConfigError::new("server.max_body_bytes", "must be between 256 and 1048576"));
        }
        if !(1..=1000).contains(&s.max_batch_channels) {
            return Err(ConfigError::new("server.max_batch_channels", "must be between 1 and 1000"));
        }
        if s.workers == Some(0) {
            return Err(ConfigError::new("server.workers", "must be at least 1"));
        }
        if s.body_timeout_ms == 0 {
            return Err(ConfigError::new("server.body_timeout_ms", "must be greater than 0"));
        }
        // actix measures this against a clock it refreshes every 500 ms: shorter
        // values time out healthy requests at random.
        if !(1_000..=300_000).contains(&s.header_timeout_ms) {
            return Err(ConfigError::new("server.header_timeout_ms", "must be between 1000 and 300000"));
        }
        let server = ServerSettings {
            listen,
            admin_listen,
            allowed_origins,
            trusted_proxies,
            max_body_bytes: s.max_body_bytes,
            max_batch_channels: s.max_batch_channels,
            workers: s.workers,
            shutdown_timeout: Duration::from_secs(s.shutdown_timeout_secs),
            body_timeout: Duration::from_millis(s.body_timeout_ms),
            header_timeout: Duration::from_millis(s.header_timeout_ms),
        };

        let c = self.session_check.ok_or_else(|| ConfigError::new("session_check", "missing section"))?;
        let raw_url = c.url.ok_or_else(|| ConfigError::new("session_check.url", "missing"))?;
        let url = url::Url::parse(&raw_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                ConfigError::new("session_check.url", "must be an absolute http:// or https:// URL")
            })?;
        if !(1..=60_000).contains(&c.timeout_ms) {
            return Err(ConfigError::new("session_check.timeout_ms", "must be between 1 and 60000"));
        }
        if !(1..=60_000).contains(&c.connect_timeout_ms) {
            return Err(ConfigError::new("session_check.connect_timeout_ms", "must be between 1 and 60000"));
        }
        if !(256..=1024 * 1024).contains(&c.max_response_bytes) {
            return Err(ConfigError::new(
                "session_check.max_response_bytes",
                "must be between 256 and 1048576",
            ));
        }
        let mut forward_headers = Vec::new();
        for h in &c.forward_headers {
            let lower = h.trim().to_ascii_lowercase();
            let key = "session_check.forward_headers";
            if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(ConfigError::new(
                    key,
                    format!("{h:?} is not a header name (letters, digits, '-')"),
                ));
            }
            if NEVER_FORWARD.contains(&lower.as_str()) || lower.starts_with("x-forwarded-") {
                return Err(ConfigError::new(
                    key,
                    format!("{h:?} is never forwarded (hop-by-hop or proxy-owned)"),
                ));
            }
            if !matches!(lower.as_str(), "cookie" | "authorization" | "x-request-id")
                && !forward_headers.contains(&lower)
            {
                forward_headers.push(lower);
            }
        }
        // Denials are remembered for a fifth of the grant TTL unless set: a user who
        // just logged in should not wait out a cached "no".
        let deny_ms = c.cache_deny_ttl_ms.unwrap_or(c.cache_ttl_ms / 5);
        if c.cache_ttl_ms > 60_000 {
            return Err(ConfigError::new("session_check.cache_ttl_ms", "must be at most 60000 (a minute)"));
        }
        if deny_ms > c.cache_ttl_ms {
            return Err(ConfigError::new("session_check.cache_deny_ttl_ms", "must not exceed cache_ttl_ms"));
        }
        if c.cache_max_entries == 0 {
            return Err(ConfigError::new("session_check.cache_max_entries", "must be at least 1"));
        }
        let cache = crate::session_check::CachePolicy {
            coalesce: c.coalesce,
            across_addresses: c.coalesce_across_addresses,
            grant_ttl: Duration::from_millis(c.cache_ttl_ms),
            deny_ttl: Duration::from_millis(deny_ms),
            max_entries: c.cache_max_entries,
        };
        let session_check = SessionCheckSettings {
            cache,
            url,
            timeout: Duration::from_millis(c.timeout_ms),
            connect_timeout: Duration::from_millis(c.connect_timeout_ms.min(c.timeout_ms)),
            max_response_bytes: c.max_response_bytes,
            forward_headers,
        };

        if self.apps.is_empty() {
            return Err(ConfigError::new(
                "apps",
                "configure at least one app, e.g. [apps.old] and [apps.new]",
            ));
        }
        let mut apps = BTreeMap::new();
        let mut secret_files = Vec::new();
        for (name, raw) in self.apps {
            secret_files.extend(raw.secret_file.iter().chain(&raw.encryption_master_key_file).cloned());
            let k = |field: &str| format!("apps.{name}.{field}");
            if !valid_app_name(&name) {
                return Err(ConfigError::new(
                    format!("apps.{name}"),
                    "app names are 1-32 of a-z 0-9 - _ (lowercase; they become /auth/NAME)",
                ));
            }
            let app_id = raw
                .app_id
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| ConfigError::new(k("app_id"), "missing"))?;
            let key = raw.key.ok_or_else(|| ConfigError::new(k("key"), "missing"))?;
            let key = AppKey::parse(&key).map_err(|m| ConfigError::new(k("key"), m))?;
            let secret = read_secret(&k("secret"), raw.secret, raw.secret_file, true)?.expect("required");
            let (inline_key, file_key) = (k("encryption_master_key_base64"), k("encryption_master_key_file"));
            let from_key = if raw.encryption_master_key_file.is_some() { &file_key } else { &inline_key };
            let master_key = read_secret_named(
                &inline_key,
                &file_key,
                raw.encryption_master_key_base64,
                raw.encryption_master_key_file,
                false,
            )?
            .map(|b64| MasterKey::from_base64(b64.expose_secret()).map_err(|m| ConfigError::new(from_key, m)))
            .transpose()?;
            let rest_url = match (&raw.rest_url, &raw.cluster) {
                (Some(u), _) => u.clone(),
                (None, Some(c)) => format!("https://api-{c}.pusher.com"),
                (None, None) => "https://api.pusherapp.com".into(),
            };
            let rest_url = url::Url::parse(&rest_url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| ConfigError::new(k("rest_url"), "must be an http:// or https:// URL"))?;
            apps.insert(
                name.clone(),
                AppSettings {
                    name: name.clone(),
                    app_id,
                    rest_url,
                    cluster: raw.cluster,
                    credentials: AppCredentials { key, secret, master_key },
                },
            );
        }

        let r = self.rate_limit;
        let rate_limit = if r.enabled {
            let nz = |v: u32, key: &str| {
                std::num::NonZeroU32::new(v).ok_or_else(|| ConfigError::new(key, "must be at least 1"))
            };
            Some(RateLimitSettings {
                per_second: nz(r.per_second, "rate_limit.per_second")?,
                burst: nz(r.burst, "rate_limit.burst")?,
            })
        } else {
            None
        };
        let publish = match self.publish {
            None => None,
            Some(p) => Some(validate_publish(p, &apps, &mut secret_files)?),
        };
        let webhooks = match self.webhooks {
            None => None,
            Some(w) => {
                secret_files.extend(w.secret_file.iter().cloned());
                let forward_url = w
                    .forward_url
                    .as_deref()
                    .and_then(|u| url::Url::parse(u).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        ConfigError::new("webhooks.forward_url", "must be an http:// or https:// URL")
                    })?;
                let key = w
                    .key
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| ConfigError::new("webhooks.key", "missing"))?;
                let secret =
                    read_secret("webhooks.secret", w.secret, w.secret_file, true)?.expect("required");
                let redis_url = match (&w.state, w.redis_url) {
                    (WebhookState::Redis, Some(u))
                        if u.starts_with("redis://") || u.starts_with("rediss://") =>
                    {
                        Some(u)
                    }
                    (WebhookState::Redis, _) => {
                        return Err(ConfigError::new(
                            "webhooks.redis_url",
                            "state = \"redis\" needs redis_url = \"redis://host:6379/0\"",
                        ));
                    }
                    (WebhookState::Memory, u) => u,
                };
                if !(1024..=1024 * 1024).contains(&w.max_body_bytes) {
                    return Err(ConfigError::new(
                        "webhooks.max_body_bytes",
                        "must be between 1024 and 1048576",
                    ));
                }
                if !(1..=86_400).contains(&w.max_age_secs) {
                    return Err(ConfigError::new("webhooks.max_age_secs", "must be between 1 and 86400"));
                }
                Some(WebhookSettings {
                    max_body_bytes: w.max_body_bytes,
                    max_age: Duration::from_secs(w.max_age_secs),
                    forward_url,
                    key,
                    secret,
                    retry_max: Duration::from_secs(w.retry_max_secs),
                    state: w.state,
                    redis_url,
                    redis_prefix: w.redis_prefix,
                })
            }
        };
        let log =
            LogSettings { format: self.log.format, level: self.log.level.unwrap_or_else(|| "info".into()) };
        let st = self.status;
        if st.sample_secs == 0 || st.sample_secs > 3600 {
            return Err(ConfigError::new("status.sample_secs", "must be between 1 and 3600"));
        }
        let status = StatusSettings {
            old_app: st.old_app,
            drain_window: Duration::from_secs(st.drain_window_secs),
            sample_every: Duration::from_secs(st.sample_secs),
        };
        Ok(Settings { server, session_check, apps, rate_limit, publish, webhooks, status, log, secret_files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[session_check]
url = "http://127.0.0.1:3000/check"
[apps.old]
app_id = "1111"
key = "oldkey"
secret = "oldsecret"
[apps.new]
app_id = "2222"
key = "278d425bdf160c739803"
secret = "7ad3773142a6692b25b8"
cluster = "eu"
"#;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn err(toml: &str, e: &[(&str, &str)]) -> ConfigError {
        Settings::from_toml(toml, env(e)).expect_err("should fail")
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let s = Settings::from_toml(MINIMAL, None).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.session_check.timeout, Duration::from_millis(2000));
        assert_eq!(s.apps.keys().collect::<Vec<_>>(), ["new", "old"]);
        assert_eq!(s.app("new").unwrap().cluster.as_deref(), Some("eu"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let s = Settings::from_toml(
            MINIMAL,
            env(&[
                ("DUAL_AUTH__APPS__NEW__SECRET", "from-env"),
                ("DUAL_AUTH__SESSION_CHECK__TIMEOUT_MS", "750"),
                ("DUAL_AUTH__SERVER__ALLOWED_ORIGINS", "https://a.example.com,https://b.example.com:8443"),
                ("DUAL_AUTH__APPS__THIRD__APP_ID", "3"),
                ("DUAL_AUTH__APPS__THIRD__KEY", "k3"),
                ("DUAL_AUTH__APPS__THIRD__SECRET", "s3"),
            ]),
        )
        .unwrap();
        assert_eq!(s.app("new").unwrap().credentials.secret.expose_secret(), "from-env");
        assert_eq!(s.session_check.timeout, Duration::from_millis(750));
        assert_eq!(s.server.allowed_origins, ["https://a.example.com", "https://b.example.com:8443"]);
        assert!(s.app("third").is_some());
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("dual-auth-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("new");
        std::fs::write(&secret, "file-secret\n").unwrap();
        let master = dir.join("master");
        std::fs::write(&master, "zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=\n").unwrap();
        let toml = MINIMAL.replace(
            "secret = \"7ad3773142a6692b25b8\"",
            &format!("secret_file = {:?}\nencryption_master_key_file = {:?}", secret, master),
        );
        let s = Settings::from_toml(&toml, None).unwrap();
        let new = s.app("new").unwrap();
        assert_eq!(new.credentials.secret.expose_secret(), "file-secret");
        assert!(new.credentials.master_key.is_some());
    }

    #[test]
    fn errors_name_the_key() {
        type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            (MINIMAL.replace("secret = \"oldsecret\"", ""), vec![], "apps.old.secret"),
            (MINIMAL.replace("secret = \"oldsecret\"", "secret = \"\""), vec![], "apps.old.secret"),
            (
                MINIMAL.replace("secret = \"oldsecret\"", "secret = \"a\"\nsecret_file = \"/x\""),
                vec![],
                "apps.old.secret",
            ),
            (
                MINIMAL.replace("secret = \"oldsecret\"", "secret_file = \"/nonexistent/x\""),
                vec![],
                "apps.old.secret_file",
            ),
            (MINIMAL.replace("key = \"oldkey\"", "key = \"a:b\""), vec![], "apps.old.key"),
            (MINIMAL.replace("app_id = \"1111\"", ""), vec![], "apps.old.app_id"),
            (
                format!("{MINIMAL}encryption_master_key_base64 = \"c2hvcnQ=\""),
                vec![],
                "apps.new.encryption_master_key_base64",
            ),
            (MINIMAL.replace("http://127.0.0.1:3000/check", "ftp://x"), vec![], "session_check.url"),
            (MINIMAL.replace("http://127.0.0.1:3000/check", "not a url"), vec![], "session_check.url"),
            (MINIMAL.replace("[apps.old]", "[apps.Old]"), vec![], "apps.Old"),
            (format!("[server]\nlisten = \"nope\"\n{MINIMAL}"), vec![], "server.listen"),
            (
                format!("[server]\nallowed_origins = [\"https://a.com/\"]\n{MINIMAL}"),
                vec![],
                "server.allowed_origins",
            ),
            (
                format!("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n{MINIMAL}"),
                vec![],
                "server.trusted_proxies",
            ),
            (
                MINIMAL.replace("[session_check]", "[session_check]\nforward_headers = [\"Host\"]"),
                vec![],
                "session_check.forward_headers",
            ),
            (
                MINIMAL
                    .replace("[session_check]", "[session_check]\nforward_headers = [\"X-Forwarded-For\"]"),
                vec![],
                "session_check.forward_headers",
            ),
            (
                MINIMAL.replace("[session_check]", "[session_check]\ntimeout_ms = 0"),
                vec![],
                "session_check.timeout_ms",
            ),
            (
                MINIMAL.to_string(),
                vec![("DUAL_AUTH__SESSION_CHECK__TIMEOUT_MS", "soon")],
                "session_check.timeout_ms",
            ),
            (MINIMAL.replace("[session_check]", "[session_check]\ntimeuot_ms = 5"), vec![], "timeuot_ms"),
            (format!("{MINIMAL}\n[bogus]\nx = 1"), vec![], "bogus"),
            ("[apps.a]\napp_id=\"1\"\nkey=\"k\"\nsecret=\"s\"".to_string(), vec![], "session_check"),
            ("[session_check]\nurl = \"http://x\"".to_string(), vec![], "apps"),
            (
                format!(
                    "{MINIMAL}encryption_master_key_base64 = \"zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=\"\n\
                     [publish]\napp_id = \"p\"\nkey = \"pk\"\nsecret = \"ps\"\ntargets = [\"old\", \"new\"]"
                ),
                vec![],
                "publish.targets",
            ),
            (
                format!(
                    "{MINIMAL}[publish]\napp_id = \"p\"\nkey = \"pk\"\nsecret = \"ps\"\ntargets = [\"nope\"]"
                ),
                vec![],
                "publish.targets",
            ),
        ];
        for (toml, e, key) in cases {
            let err = err(&toml, &e);
            let text = err.to_string();
            assert!(text.contains(key), "expected {key} in: {text}");
        }
    }

    #[test]
    fn syntax_errors_name_file_line_and_key_but_never_the_value() {
        for broken in [
            "secret = \"hunter2-VALUE",
            "secret = hunter2-VALUE",
            "secret = \"hunter2-VALUE\" trailing",
            "secret = '''hunter2-VALUE",
            "secret \"hunter2-VALUE\"",
        ] {
            let toml = MINIMAL.replace("secret = \"oldsecret\"", broken);
            let line = toml.lines().position(|l| l.contains("hunter2")).unwrap() + 1;
            let text = err(&toml, &[]).to_string();
            assert!(!text.contains("hunter2"), "{broken}: {text}");
            // An unterminated multi-line string is noticed (and reported) at the end of the file.
            if !broken.contains("'''") {
                assert!(text.contains(&format!("line {line}")), "{broken}: {text}");
            }
        }
        let text = err(&MINIMAL.replace("secret = \"oldsecret\"", "secret = \"x"), &[]).to_string();
        assert!(text.contains("`apps.old.secret`"), "{text}");
        // A value of the wrong type is not echoed either.
        let toml = MINIMAL.replace("[session_check]", "[session_check]\ntimeout_ms = \"hunter2-VALUE\"");
        let text = err(&toml, &[]).to_string();
        assert!(!text.contains("hunter2") && text.contains("session_check.timeout_ms"), "{text}");
    }

    #[test]
    fn redacted_output_never_contains_secrets() {
        let toml = format!(
            "{}encryption_master_key_base64 = \"zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=\"",
            MINIMAL.replace("http://127.0.0.1:3000/check", "http://user:pw@127.0.0.1:3000/check")
        );
        let s = Settings::from_toml(&toml, None).unwrap();
        let out = s.redacted_toml();
        for secret in ["oldsecret", "7ad3773142a6692b25b8", "zyrm8pvV", ":pw@"] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        assert!(out.contains("278d425bdf160c739803") && out.contains("[redacted]"));
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("oldsecret") && !dbg.contains("7ad3773142a6692b25b8"));
    }
}
