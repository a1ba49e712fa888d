//! `[apps.NAME]`: one section per Pusher app; each serves `/auth/NAME`.

use super::{
    fields::{ConfigError, http_url},
    secrets::SecretReader,
};
use crate::pusher::{AppCredentials, AppKey, MasterKey};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::{collections::BTreeMap, path::PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    app_id: Option<String>,
    key: Option<String>,
    secret: Option<SecretString>,
    secret_file: Option<PathBuf>,
    cluster: Option<String>,
    encryption_master_key_base64: Option<SecretString>,
    encryption_master_key_file: Option<PathBuf>,
    rest_url: Option<String>,
    client_options: Option<serde_json::Map<String, serde_json::Value>>,
    auth_endpoint: Option<String>,
    user_auth_endpoint: Option<String>,
}

/// A configured app's name: 1-32 of `a-z 0-9 - _`, starting and ending
/// alphanumeric, no `__` (names become URL path segments and env var segments).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppName(String);

impl AppName {
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        let b = name.as_bytes();
        let ok = (1..=32).contains(&b.len())
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && !name.contains("__");
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(ConfigError::new(
                format!("apps.{name}"),
                "app names are 1-32 of a-z 0-9 - _ (lowercase; they become /auth/NAME)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for AppName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AppName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, serde::Serialize)]
pub struct AppSettings {
    #[serde(skip)]
    pub name: AppName,
    pub app_id: String,
    #[serde(flatten)]
    pub credentials: AppCredentials,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The app's REST API base (publishing, reconciliation): `rest_url`, or from the cluster.
    #[serde(serialize_with = "super::print::url")]
    pub rest_url: url::Url,
    /// Handed verbatim to clients by `/client-config` (e.g. wsHost, wsPort, forceTLS).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub client_options: serde_json::Map<String, serde_json::Value>,
    /// Where clients reach this app's auth routes, as `/client-config` hands them
    /// out: a path or an absolute URL (None: `/auth/NAME`, under the proxy's prefix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_auth_endpoint: Option<String>,
}

/// A public endpoint: an absolute path, or an http(s) URL (another host).
fn endpoint(key: &str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    let path_ok = |p: &str| {
        p.starts_with('/')
            && !p.starts_with("//")
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/%".contains(&b))
    };
    let ok = if value.starts_with('/') {
        path_ok(&value)
    } else {
        url::Url::parse(&value).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.username().is_empty()
                && u.query().is_none()
                && u.fragment().is_none()
        })
    };
    ok.then_some(Some(value)).ok_or_else(|| {
        ConfigError::new(
            key,
            "must be a path (/pusher/auth-new) or an http(s) URL, without query or credentials",
        )
    })
}

pub(super) fn validate(
    raw: BTreeMap<String, RawApp>,
    secrets: &mut SecretReader,
) -> Result<BTreeMap<String, AppSettings>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new("apps", "configure at least one app, e.g. [apps.old] and [apps.new]"));
    }
    raw.into_iter()
        .map(|(name, raw)| {
            let app = raw.validate(AppName::parse(&name)?, secrets)?;
            Ok((name, app))
        })
        .collect()
}

impl RawApp {
    fn validate(self, name: AppName, secrets: &mut SecretReader) -> Result<AppSettings, ConfigError> {
        let k = |field: &str| format!("apps.{name}.{field}");
        let app_id = self
            .app_id
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ConfigError::new(k("app_id"), "missing"))?;
        let key = self.key.ok_or_else(|| ConfigError::new(k("key"), "missing"))?;
        let key = AppKey::parse(&key).map_err(|m| ConfigError::new(k("key"), m))?;
        let secret = secrets.required(&k("secret"), self.secret, self.secret_file)?;
        let (inline_key, file_key) = (k("encryption_master_key_base64"), k("encryption_master_key_file"));
        let from_key = if self.encryption_master_key_file.is_some() { &file_key } else { &inline_key };
        let master_key = secrets
            .optional(
                &inline_key,
                &file_key,
                self.encryption_master_key_base64,
                self.encryption_master_key_file,
            )?
            .map(|b64| MasterKey::from_base64(b64.expose_secret()).map_err(|m| ConfigError::new(from_key, m)))
            .transpose()?;
        let rest_url = match (&self.rest_url, &self.cluster) {
            (Some(u), _) => u.clone(),
            (None, Some(c)) => format!("https://api-{c}.pusher.com"),
            (None, None) => "https://api.pusherapp.com".into(),
        };
        let rest_url = http_url(&k("rest_url"), &rest_url)?;
        let auth_endpoint = endpoint(&k("auth_endpoint"), self.auth_endpoint)?;
        let user_auth_endpoint = endpoint(&k("user_auth_endpoint"), self.user_auth_endpoint)?;
        Ok(AppSettings {
            name,
            app_id,
            rest_url,
            cluster: self.cluster,
            credentials: AppCredentials::new(key, secret, master_key),
            client_options: self.client_options.unwrap_or_default(),
            auth_endpoint,
            user_auth_endpoint,
        })
    }
}
