//! What every section's validation uses: the error that names a key, and the
//! field helpers. A leaf: features' config files use it without reaching the
//! loader (`config/mod.rs`), which uses them.

use serde::Deserialize;

/// A configuration problem, naming the key (e.g. `apps.new.secret`).
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

/// A TOML array, or (from the environment) one comma-separated string.
pub fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
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

/// `value` within `range`, else an error naming `key` and the bounds.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::new(key, format!("must be between {} and {}", range.start(), range.end())))
    }
}

/// An absolute http(s) URL with a host.
pub fn http_url(key: &str, input: &str) -> Result<url::Url, ConfigError> {
    url::Url::parse(input)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| ConfigError::new(key, "must be an absolute http:// or https:// URL"))
}

/// Userinfo in a URL is a credential: never print it.
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("redacted");
        let _ = u.set_password(None);
    }
    u.to_string()
}
