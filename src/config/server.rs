//! `[server]` (listeners, origins, proxies, body and header limits) and
//! `[rate_limit]`.

use super::{
    fields::{ConfigError, in_range, list_or_csv},
    print,
};
use ipnet::IpNet;
use serde::Deserialize;
use std::{net::SocketAddr, num::NonZeroU32, time::Duration};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    listen: String,
    admin_listen: String,
    #[serde(deserialize_with = "list_or_csv")]
    allowed_origins: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    trusted_proxies: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    admin_hosts: Vec<String>,
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
            admin_hosts: vec![],
            max_body_bytes: 8 * 1024,
            max_batch_channels: 100,
            workers: None,
            shutdown_timeout_secs: 20,
            body_timeout_ms: 5_000,
            header_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// The operators' listener: /metrics, /status, /status.html (and /healthz, /readyz).
    pub admin_listen: SocketAddr,
    /// Exact origins (`scheme://host[:port]`, lowercase) allowed cross-origin.
    pub allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    #[serde(serialize_with = "print::displayed")]
    pub trusted_proxies: Vec<IpNet>,
    /// Host names the admin listener answers besides IP literals and localhost
    /// (lowercase): any other `Host` is refused, against DNS rebinding.
    pub admin_hosts: Vec<String>,
    pub max_body_bytes: usize,
    pub max_batch_channels: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    #[serde(rename = "shutdown_timeout_secs", serialize_with = "print::secs")]
    pub shutdown_timeout: Duration,
    #[serde(rename = "body_timeout_ms", serialize_with = "print::ms")]
    pub body_timeout: Duration,
    /// Time a client has to send the request headers (slowloris defence).
    #[serde(rename = "header_timeout_ms", serialize_with = "print::ms")]
    pub header_timeout: Duration,
}

fn address(key: &str, input: &str, example: &str) -> Result<SocketAddr, ConfigError> {
    input.parse().map_err(|_| ConfigError::new(key, format!("{input:?} is not an address like {example}")))
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

impl RawServer {
    pub fn validate(self) -> Result<ServerSettings, ConfigError> {
        let listen = address("server.listen", &self.listen, "127.0.0.1:8080")?;
        let admin_listen = address("server.admin_listen", &self.admin_listen, "127.0.0.1:9090")?;
        if admin_listen == listen && listen.port() != 0 {
            return Err(ConfigError::new("server.admin_listen", "must differ from server.listen"));
        }
        let allowed_origins = self
            .allowed_origins
            .iter()
            .map(|o| normalize_origin("server.allowed_origins", o))
            .collect::<Result<_, _>>()?;
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<IpNet>().or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from)).map_err(|_| {
                    ConfigError::new("server.trusted_proxies", format!("{p:?} is not an IP or CIDR"))
                })
            })
            .collect::<Result<_, _>>()?;
        let admin_hosts = self
            .admin_hosts
            .iter()
            .map(|h| {
                let lower = h.trim().to_ascii_lowercase();
                let ok = !lower.is_empty()
                    && lower.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                ok.then_some(lower).ok_or_else(|| {
                    ConfigError::new("server.admin_hosts", format!("{h:?} is not a host name (no port)"))
                })
            })
            .collect::<Result<_, _>>()?;
        in_range("server.max_body_bytes", self.max_body_bytes, 256..=1024 * 1024)?;
        in_range("server.max_batch_channels", self.max_batch_channels, 1..=1000)?;
        if self.workers == Some(0) {
            return Err(ConfigError::new("server.workers", "must be at least 1"));
        }
        if self.body_timeout_ms == 0 {
            return Err(ConfigError::new("server.body_timeout_ms", "must be greater than 0"));
        }
        // actix measures this against a clock it refreshes every 500 ms: shorter
        // values time out healthy requests at random.
        in_range("server.header_timeout_ms", self.header_timeout_ms, 1_000..=300_000)?;
        Ok(ServerSettings {
            listen,
            admin_listen,
            allowed_origins,
            trusted_proxies,
            admin_hosts,
            max_body_bytes: self.max_body_bytes,
            max_batch_channels: self.max_batch_channels,
            workers: self.workers,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            header_timeout: Duration::from_millis(self.header_timeout_ms),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRateLimit {
    enabled: bool,
    per_second: u32,
    burst: u32,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self { enabled: false, per_second: 20, burst: 40 }
    }
}

/// Per-client-IP token bucket on the auth routes (off unless configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RateLimitSettings {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl RawRateLimit {
    pub fn validate(self) -> Result<Option<RateLimitSettings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let nz =
            |v: u32, key: &str| NonZeroU32::new(v).ok_or_else(|| ConfigError::new(key, "must be at least 1"));
        Ok(Some(RateLimitSettings {
            per_second: nz(self.per_second, "rate_limit.per_second")?,
            burst: nz(self.burst, "rate_limit.burst")?,
        }))
    }
}

/// `[rate_limit]` as printed: `enabled = false` when off.
/// `[rate_limit]` as printed: `enabled`, and its settings when it is.
pub(super) fn print_rate_limit<S: serde::Serializer>(
    r: &Option<RateLimitSettings>,
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(serde::Serialize)]
    struct Printed<'a> {
        enabled: bool,
        #[serde(flatten)]
        settings: Option<&'a RateLimitSettings>,
    }
    serde::Serialize::serialize(&Printed { enabled: r.is_some(), settings: r.as_ref() }, s)
}
