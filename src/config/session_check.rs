//! `[session_check]`: the host app's check — where it is, how long it may take,
//! which headers reach it, and how identical checks are shared.

use super::{
    fields::{ConfigError, http_url, in_range, list_or_csv},
    print,
};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSessionCheck {
    url: Option<String>,
    unix_socket: Option<std::path::PathBuf>,
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
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
    max_in_flight_per_client: Option<usize>,
    #[serde(default)]
    require_check_id: bool,
}
fn default_true() -> bool {
    true
}
fn default_cache_max_entries() -> usize {
    10_000
}
fn default_max_in_flight() -> usize {
    1_024
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

/// How identical checks are shared: coalescing of concurrent ones, and the
/// optional decision cache.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CachePolicy {
    pub coalesce: bool,
    /// Leave the client address out of the key (only for hosts that never look at it).
    #[serde(rename = "coalesce_across_addresses")]
    pub across_addresses: bool,
    #[serde(rename = "cache_ttl_ms", serialize_with = "print::ms")]
    pub grant_ttl: Duration,
    #[serde(rename = "cache_deny_ttl_ms", serialize_with = "print::ms")]
    pub deny_ttl: Duration,
    /// Bounds both the decision cache and the in-flight map.
    #[serde(rename = "cache_max_entries")]
    pub max_entries: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionCheckSettings {
    #[serde(serialize_with = "print::url")]
    pub url: url::Url,
    /// Every check goes through this Unix domain socket (the sidecar case, as
    /// nginx's `unix:` upstreams); `url` still gives the path and Host header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_socket: Option<std::path::PathBuf>,
    #[serde(rename = "timeout_ms", serialize_with = "print::ms")]
    pub timeout: Duration,
    #[serde(rename = "connect_timeout_ms", serialize_with = "print::ms")]
    pub connect_timeout: Duration,
    pub max_response_bytes: usize,
    /// Extra request headers forwarded besides Cookie and Authorization
    /// (lowercase), parsed once here rather than on every check.
    #[serde(serialize_with = "print::displayed")]
    pub forward_headers: Vec<hyper::header::HeaderName>,
    /// Coalescing and the optional decision cache.
    #[serde(flatten)]
    pub cache: CachePolicy,
    /// Host calls in flight at most; past that a request is refused (503) at
    /// once rather than queued, like a proxy's circuit breaker.
    pub max_in_flight: usize,
    /// Of those, at most this many for one client (address, IPv6 /64), so one
    /// source cannot take the whole cap from everyone else.
    pub max_in_flight_per_client: usize,
    /// Every answer must echo the check's `X-Check-Id`; without it only a 2xx on
    /// a kept-alive connection must (see `http1_pool`).
    pub require_check_id: bool,
}

/// An eighth of the cap, but never below 8 (or the cap itself when smaller):
/// 128 of the default 1,024.
fn default_per_client(max_in_flight: usize) -> usize {
    (max_in_flight / 8).max(max_in_flight.min(8))
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
    // Ours per check: a client's value would be a second one.
    "x-check-id",
    // With [telemetry], the check's own span's context goes to the host; a
    // browser's would hand the host a trace the service did not continue.
    "traceparent",
    "tracestate",
];

fn forward_headers(listed: &[String]) -> Result<Vec<hyper::header::HeaderName>, ConfigError> {
    let key = "session_check.forward_headers";
    let mut out = Vec::new();
    for h in listed {
        let lower = h.trim().to_ascii_lowercase();
        if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ConfigError::new(key, format!("{h:?} is not a header name (letters, digits, '-')")));
        }
        if NEVER_FORWARD.contains(&lower.as_str()) || lower.starts_with("x-forwarded-") {
            return Err(ConfigError::new(
                key,
                format!("{h:?} is never forwarded (hop-by-hop or proxy-owned)"),
            ));
        }
        let name = hyper::header::HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| ConfigError::new(key, format!("{h:?} is not a header name")))?;
        if !matches!(lower.as_str(), "cookie" | "authorization" | "x-request-id") && !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

impl RawSessionCheck {
    pub fn validate(self) -> Result<SessionCheckSettings, ConfigError> {
        let raw_url = self.url.ok_or_else(|| ConfigError::new("session_check.url", "missing"))?;
        let url = http_url("session_check.url", &raw_url)?;
        if let Some(path) = &self.unix_socket {
            // sun_path holds 108 bytes with its NUL.
            let len = path.as_os_str().len();
            if !path.is_absolute() || len > 107 {
                return Err(ConfigError::new(
                    "session_check.unix_socket",
                    "must be an absolute path of at most 107 bytes (e.g. \"/run/app/session.sock\")",
                ));
            }
        }
        in_range("session_check.timeout_ms", self.timeout_ms, 1..=60_000)?;
        in_range("session_check.connect_timeout_ms", self.connect_timeout_ms, 1..=60_000)?;
        in_range("session_check.max_response_bytes", self.max_response_bytes, 256..=1024 * 1024)?;
        let forward_headers = forward_headers(&self.forward_headers)?;
        // Denials are remembered for a fifth of the grant TTL unless set: a user who
        // just logged in should not wait out a cached "no".
        let deny_ms = self.cache_deny_ttl_ms.unwrap_or(self.cache_ttl_ms / 5);
        if self.cache_ttl_ms > 60_000 {
            return Err(ConfigError::new("session_check.cache_ttl_ms", "must be at most 60000 (a minute)"));
        }
        if deny_ms > self.cache_ttl_ms {
            return Err(ConfigError::new("session_check.cache_deny_ttl_ms", "must not exceed cache_ttl_ms"));
        }
        if self.cache_max_entries == 0 {
            return Err(ConfigError::new("session_check.cache_max_entries", "must be at least 1"));
        }
        in_range("session_check.max_in_flight", self.max_in_flight, 1..=1_000_000)?;
        let per_client = self.max_in_flight_per_client.unwrap_or(default_per_client(self.max_in_flight));
        in_range("session_check.max_in_flight_per_client", per_client, 1..=self.max_in_flight)?;
        Ok(SessionCheckSettings {
            url,
            unix_socket: self.unix_socket,
            timeout: Duration::from_millis(self.timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms.min(self.timeout_ms)),
            max_response_bytes: self.max_response_bytes,
            forward_headers,
            cache: CachePolicy {
                coalesce: self.coalesce,
                across_addresses: self.coalesce_across_addresses,
                grant_ttl: Duration::from_millis(self.cache_ttl_ms),
                deny_ttl: Duration::from_millis(deny_ms),
                max_entries: self.cache_max_entries,
            },
            max_in_flight: self.max_in_flight,
            max_in_flight_per_client: per_client,
            require_check_id: self.require_check_id,
        })
    }
}
