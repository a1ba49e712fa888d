//! `[presence]`: which presence channels are bridged across the apps, so a
//! member on one app is seen by the members on the other (see `presence_bridge`).

use super::fields::{ConfigError, list_or_csv};
use serde::Deserialize;
use toml::{Table, Value};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPresence {
    #[serde(deserialize_with = "list_or_csv")]
    bridge: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct PresenceSettings {
    /// Channel names (`presence-room`) or prefixes (`presence-*`, a `*` at the end only).
    pub bridge: Vec<String>,
}

const MAX_PATTERNS: usize = 64;

impl RawPresence {
    pub fn validate(self, webhooks: bool) -> Result<PresenceSettings, ConfigError> {
        let key = "presence.bridge";
        if self.bridge.is_empty() {
            return Ok(PresenceSettings::default());
        }
        if !webhooks {
            return Err(ConfigError::new(
                key,
                "needs [webhooks], with both apps' webhooks (member_added, member_removed) pointed at /webhooks",
            ));
        }
        if self.bridge.len() > MAX_PATTERNS {
            return Err(ConfigError::new(key, format!("at most {MAX_PATTERNS} patterns")));
        }
        for pattern in &self.bridge {
            let stem = pattern.strip_suffix('*').unwrap_or(pattern);
            let valid = stem.starts_with("presence-")
                && stem.len() <= 164
                && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=@,.;".contains(&b));
            if !valid {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "{pattern:?} is not a presence channel name or prefix (\"presence-room\", \"presence-*\"; a * at the end only)"
                    ),
                ));
            }
        }
        Ok(PresenceSettings { bridge: self.bridge })
    }
}

impl PresenceSettings {
    /// Whether `channel` is bridged.
    pub fn bridged(&self, channel: &str) -> bool {
        self.bridge.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => channel.starts_with(prefix),
            None => channel == p,
        })
    }

    pub fn redacted(&self) -> Table {
        let mut t = Table::new();
        t.insert("bridge".into(), Value::Array(self.bridge.iter().cloned().map(Value::String).collect()));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_and_prefixes_and_bad_ones_are_refused() {
        let raw = |b: &[&str]| RawPresence { bridge: b.iter().map(|s| s.to_string()).collect() };
        let p = raw(&["presence-room", "presence-chat-*"]).validate(true).unwrap();
        assert!(p.bridged("presence-room"));
        assert!(!p.bridged("presence-room-2"));
        assert!(p.bridged("presence-chat-42"));
        assert!(!p.bridged("private-chat-42"));
        for bad in ["private-*", "*", "presence-*-x", "presence-a b", "presence-*x*"] {
            assert!(raw(&[bad]).validate(true).is_err(), "{bad}");
        }
        let e = raw(&["presence-*"]).validate(false).unwrap_err();
        assert!(e.to_string().contains("needs [webhooks]"), "{e}");
        assert!(raw(&[]).validate(false).unwrap().bridge.is_empty());
    }
}
