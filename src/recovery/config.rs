//! `[recovery]`: how long and how much of what passes through the publish
//! fan-out is kept, so clients can get what they missed while away.

use crate::config::fields::{ConfigError, in_range};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecovery {
    #[serde(default = "default_window_secs")]
    window_secs: u64,
    #[serde(default = "default_max_events_per_channel")]
    max_events_per_channel: usize,
    #[serde(default = "default_max_bytes")]
    max_bytes: usize,
    #[serde(default = "default_max_channels_per_request")]
    max_channels_per_request: usize,
    #[serde(default = "default_token_ttl_secs")]
    token_ttl_secs: u64,
}
fn default_window_secs() -> u64 {
    120
}
/// 120 s of a channel publishing at 80 Hz: the cap should outlast the window on
/// busy channels, or a client that saw everything live is told of a gap.
fn default_max_events_per_channel() -> usize {
    10_000
}
fn default_max_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_channels_per_request() -> usize {
    100
}
fn default_token_ttl_secs() -> u64 {
    3_600
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RecoverySettings {
    /// Events are kept this long after they were published.
    #[serde(rename = "window_secs", serialize_with = "crate::config::print::secs")]
    pub window: Duration,
    /// At most this many per channel (the oldest go first).
    pub max_events_per_channel: usize,
    /// At most this many bytes of event data in all (memory mode; the oldest go first).
    pub max_bytes: usize,
    /// Channels one recovery request may name.
    pub max_channels_per_request: usize,
    /// How long a channel's recovery token (in its authorization answer) is good for.
    #[serde(rename = "token_ttl_secs", serialize_with = "crate::config::print::secs")]
    pub token_ttl: Duration,
}

impl RawRecovery {
    pub fn validate(self, publish: bool) -> Result<RecoverySettings, ConfigError> {
        if !publish {
            return Err(ConfigError::new(
                "recovery",
                "needs [publish]: only events published through the service's fan-out are kept",
            ));
        }
        in_range("recovery.window_secs", self.window_secs, 1..=86_400)?;
        in_range("recovery.max_events_per_channel", self.max_events_per_channel, 1..=1_000_000)?;
        in_range("recovery.max_bytes", self.max_bytes, 1024..=16 * 1024 * 1024 * 1024)?;
        in_range("recovery.max_channels_per_request", self.max_channels_per_request, 1..=1_000)?;
        in_range("recovery.token_ttl_secs", self.token_ttl_secs, 60..=7 * 86_400)?;
        Ok(RecoverySettings {
            window: Duration::from_secs(self.window_secs),
            max_events_per_channel: self.max_events_per_channel,
            max_bytes: self.max_bytes,
            max_channels_per_request: self.max_channels_per_request,
            token_ttl: Duration::from_secs(self.token_ttl_secs),
        })
    }
}
