//! `[rollout]`: moving clients from one app to another in steps. Which app a
//! client is told to use comes from its sticky bucket (0-9999) against
//! `percent`, unless a force list names it. Hot-reloadable; a bad value keeps
//! the running rollout. Without `from`, the migration is over: every client is
//! told `to` (so a helper build shipped for the migration keeps connecting
//! after the old app is deleted).

use crate::config::{
    apps::AppSettings,
    fields::{ConfigError, list_or_csv},
};
use crate::pusher::{PublicChannelName, UserId};
use hmac::{Hmac, KeyInit};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::{collections::BTreeMap, time::Duration};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRollout {
    from: Option<String>,
    to: Option<String>,
    percent: Option<f64>,
    #[serde(default, deserialize_with = "list_or_csv")]
    force_to: Vec<String>,
    #[serde(default, deserialize_with = "list_or_csv")]
    force_from: Vec<String>,
    #[serde(default = "default_control_channel")]
    control_channel: String,
    #[serde(default = "default_spread_secs")]
    spread_secs: u64,
}
fn default_control_channel() -> String {
    "pusher-dual-auth-rollout".into()
}
fn default_spread_secs() -> u64 {
    30
}

#[derive(Debug, Clone)]
pub struct RolloutSettings {
    /// The app clients move away from, and the one they move to (the same
    /// app once the migration is over: `from` left out of the config).
    pub from: String,
    pub to: String,
    /// 0-100: the share of buckets assigned to `to`.
    pub percent: f64,
    pub force_to: Vec<UserId>,
    pub force_from: Vec<UserId>,
    /// A public channel on both apps that carries `rollout-changed`.
    pub control_channel: PublicChannelName,
    /// Clients spread their switch over this window.
    pub spread: Duration,
    /// Derived from the settings clients act on (not a counter), so replicas
    /// that reload the same change announce the same version.
    pub version: u32,
    /// Keeps a user's bucket when percent or the lists change: derived from the two apps only.
    pub salt: [u8; 32],
    /// The bucket's HMAC keyed with `salt`, once per load (`rollout::assign`).
    pub salt_key: SaltKey,
}

/// An HMAC-SHA256 keyed with the rollout's salt. Keying is two of the four
/// SHA-256 compressions of a client's bucket and the same for every client, so
/// `/client-config` starts each bucket from a copy of this.
#[derive(Clone)]
pub struct SaltKey(Hmac<Sha256>);

impl SaltKey {
    pub fn new(salt: &[u8; 32]) -> Self {
        Self(<Hmac<Sha256> as KeyInit>::new_from_slice(salt).expect("HMAC takes any key length"))
    }

    /// A fresh MAC under the salt, ready for an id.
    pub fn mac(&self) -> Hmac<Sha256> {
        self.0.clone()
    }
}

impl std::fmt::Debug for SaltKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaltKey(..)")
    }
}

impl RawRollout {
    pub fn validate(self, apps: &BTreeMap<String, AppSettings>) -> Result<RolloutSettings, ConfigError> {
        let app = |key: &str, name: Option<String>| -> Result<String, ConfigError> {
            let name = name.ok_or_else(|| ConfigError::new(key, "missing: name a configured app"))?;
            if apps.contains_key(&name) {
                Ok(name)
            } else {
                Err(ConfigError::new(key, format!("{name:?} is not a configured app")))
            }
        };
        let to = app("rollout.to", self.to)?;
        let from = match self.from {
            Some(from) => app("rollout.from", Some(from))?,
            None => to.clone(),
        };
        // The end state (`from` left out, or the same app): one app left, everyone on it.
        let percent = if from == to {
            if self.percent.is_some_and(|p| p != 100.0) {
                return Err(ConfigError::new(
                    "rollout.percent",
                    "with one app (rollout.from left out, or equal to rollout.to) every client is on it: \
                     leave percent out",
                ));
            }
            if !self.force_to.is_empty() || !self.force_from.is_empty() {
                return Err(ConfigError::new(
                    "rollout.force_to",
                    "with one app (rollout.from left out, or equal to rollout.to) there is nothing to force",
                ));
            }
            100.0
        } else {
            self.percent.unwrap_or(0.0)
        };
        if !(0.0..=100.0).contains(&percent) {
            return Err(ConfigError::new("rollout.percent", "must be between 0 and 100"));
        }
        // The ids clients are told by: the sign-in id rule (they go in `?uid=`).
        let uids = |key: &str, list: &[String]| -> Result<Vec<UserId>, ConfigError> {
            list.iter()
                .map(|u| UserId::parse_for_signin(u).map_err(|e| ConfigError::new(key, e.to_string())))
                .collect()
        };
        let force_to = uids("rollout.force_to", &self.force_to)?;
        let force_from = uids("rollout.force_from", &self.force_from)?;
        if let Some(both) = self.force_to.iter().find(|u| self.force_from.contains(u)) {
            return Err(ConfigError::new("rollout.force_from", format!("{both:?} is in force_to too")));
        }
        let channel = &self.control_channel;
        let control_channel = PublicChannelName::parse(channel).map_err(|e| {
            ConfigError::new("rollout.control_channel", format!("must be a public channel: {e}"))
        })?;
        if self.spread_secs > 3600 {
            return Err(ConfigError::new("rollout.spread_secs", "must be at most 3600"));
        }
        // The force lists are in it too: naming a user moves that user live (an announcement).
        let version = {
            let canon = format!(
                "{from}\n{to}\n{percent}\n{}\n{channel}\n{}\n{}",
                self.spread_secs,
                self.force_to.join(","),
                self.force_from.join(",")
            );
            let d = Sha256::digest(canon.as_bytes());
            u32::from_be_bytes([d[0], d[1], d[2], d[3]])
        };
        let salt =
            Sha256::digest(format!("pusher-dual-auth rollout\n{}\n{}", apps[&from].app_id, apps[&to].app_id))
                .into();
        Ok(RolloutSettings {
            from,
            to,
            percent,
            force_to,
            force_from,
            control_channel,
            spread: Duration::from_secs(self.spread_secs),
            version,
            salt_key: SaltKey::new(&salt),
            salt,
        })
    }
}

impl RolloutSettings {
    /// The migration is over: one app left, every client on `to`.
    pub fn finished(&self) -> bool {
        self.from == self.to
    }
}

/// Printed under its config keys: `from` is left out once the migration is
/// over, and the derived `version` and `salt` are not config.
impl serde::Serialize for RolloutSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        if !self.finished() {
            map.serialize_entry("from", &self.from)?;
        }
        map.serialize_entry("to", &self.to)?;
        map.serialize_entry("percent", &self.percent)?;
        map.serialize_entry("force_to", &self.force_to)?;
        map.serialize_entry("force_from", &self.force_from)?;
        map.serialize_entry("control_channel", &self.control_channel)?;
        map.serialize_entry("spread_secs", &self.spread.as_secs())?;
        map.end()
    }
}
