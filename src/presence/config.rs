//! `[presence]`: which presence channels are bridged across the apps, so a
//! member on one app is seen by the members on the other (see `presence_bridge`),
//! and the bounds on what the bridge keeps, lists and queues.

use crate::config::fields::{ConfigError, in_range, list_or_csv};
use crate::pusher::PresencePattern;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPresence {
    #[serde(deserialize_with = "list_or_csv")]
    bridge: Vec<String>,
    max_infos_per_channel: Option<usize>,
    max_channels_per_user: Option<usize>,
    max_infos: Option<usize>,
    max_answer_bytes: Option<usize>,
    max_queued_changes: Option<usize>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PresenceSettings {
    /// Channel names (`presence-room`) or prefixes (`presence-*`, a `*` at the end only).
    pub bridge: Vec<PresencePattern>,
    /// Member infos remembered per bridged channel (Pusher admits 100 members
    /// per app; room for those authorized who have not joined yet).
    pub max_infos_per_channel: usize,
    /// Bridged channels one user's info is remembered in at once: a signed-in
    /// user names channels, and its oldest make room for its newest.
    pub max_channels_per_user: usize,
    /// Member infos remembered in all (memory, or Redis, shared by the replicas).
    pub max_infos: usize,
    /// Bytes of member lists in one authorization answer (a batch's together);
    /// channels beyond it are authorized without their list.
    pub max_answer_bytes: usize,
    /// Member changes waiting to be published; more are dropped (counted, logged).
    pub max_queued_changes: usize,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            bridge: Vec::new(),
            max_infos_per_channel: 250,
            max_channels_per_user: 100,
            max_infos: 50_000,
            max_answer_bytes: 512 * 1024,
            max_queued_changes: 10_000,
        }
    }
}

const MAX_PATTERNS: usize = 64;

impl RawPresence {
    pub fn validate(self, webhooks: bool) -> Result<PresenceSettings, ConfigError> {
        let d = PresenceSettings::default();
        let bounded = |name: &str, value: Option<usize>, default: usize, range| {
            let value = value.unwrap_or(default);
            in_range(&format!("presence.{name}"), value, range).map(|()| value)
        };
        let settings = PresenceSettings {
            bridge: Vec::new(),
            // Pusher admits 100 members per app: fewer would drop the infos of members present.
            max_infos_per_channel: bounded(
                "max_infos_per_channel",
                self.max_infos_per_channel,
                d.max_infos_per_channel,
                100..=100_000,
            )?,
            max_channels_per_user: bounded(
                "max_channels_per_user",
                self.max_channels_per_user,
                d.max_channels_per_user,
                1..=100_000,
            )?,
            max_infos: bounded("max_infos", self.max_infos, d.max_infos, 100..=100_000_000)?,
            max_answer_bytes: bounded(
                "max_answer_bytes",
                self.max_answer_bytes,
                d.max_answer_bytes,
                1024..=64 * 1024 * 1024,
            )?,
            max_queued_changes: bounded(
                "max_queued_changes",
                self.max_queued_changes,
                d.max_queued_changes,
                10..=10_000_000,
            )?,
        };
        let key = "presence.bridge";
        if self.bridge.is_empty() {
            return Ok(settings);
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
        let bridge = self
            .bridge
            .iter()
            .map(|p| {
                PresencePattern::parse(p).map_err(|e| {
                    ConfigError::new(
                        key,
                        format!("{e} (\"presence-room\", \"presence-*\"; a * at the end only)"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(PresenceSettings { bridge, ..settings })
    }
}

impl PresenceSettings {
    /// Whether `channel` is bridged.
    pub fn bridged(&self, channel: &str) -> bool {
        self.bridge.iter().any(|p| p.matches(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(b: &[&str]) -> RawPresence {
        RawPresence { bridge: b.iter().map(|s| s.to_string()).collect(), ..RawPresence::default() }
    }

    #[test]
    fn patterns_match_names_and_prefixes_and_bad_ones_are_refused() {
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

    #[test]
    fn bounds_default_and_out_of_range_ones_name_their_key() {
        let p = raw(&["presence-*"]).validate(true).unwrap();
        assert_eq!((p.max_infos_per_channel, p.max_channels_per_user, p.max_infos), (250, 100, 50_000));
        assert_eq!((p.max_answer_bytes, p.max_queued_changes), (512 * 1024, 10_000));
        let cases: [(RawPresence, &str); 5] = [
            (RawPresence { max_infos_per_channel: Some(99), ..raw(&[]) }, "presence.max_infos_per_channel"),
            (RawPresence { max_channels_per_user: Some(0), ..raw(&[]) }, "presence.max_channels_per_user"),
            (RawPresence { max_infos: Some(10), ..raw(&[]) }, "presence.max_infos"),
            (RawPresence { max_answer_bytes: Some(100), ..raw(&[]) }, "presence.max_answer_bytes"),
            (RawPresence { max_queued_changes: Some(0), ..raw(&[]) }, "presence.max_queued_changes"),
        ];
        for (raw, key) in cases {
            let e = raw.validate(true).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains("between"), "{e}");
        }
    }
}
