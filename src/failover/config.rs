//! `[failover]`: when one of the rollout's two apps fails, every client is
//! sent to the other. Probed every `probe_secs`; failed after `fail_after_secs`
//! unhealthy without a break; back (with `return = "auto"`) after
//! `return_after_secs` healthy without a break. Hot-reloadable.

use crate::config::fields::{ConfigError, in_range};
use crate::rollout::config::RolloutSettings;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFailover {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_probe_secs")]
    probe_secs: u64,
    #[serde(default = "default_fail_after_secs")]
    fail_after_secs: u64,
    #[serde(default, rename = "return")]
    return_mode: Return,
    #[serde(default = "default_return_after_secs")]
    return_after_secs: u64,
}
fn default_probe_secs() -> u64 {
    2
}
fn default_fail_after_secs() -> u64 {
    6
}
fn default_return_after_secs() -> u64 {
    60
}

/// How clients go back once the failed app is healthy again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Return {
    /// When an operator says so (`POST /admin/failover {"action": "return"}`).
    #[default]
    Manual,
    /// Once it has been healthy for `return_after_secs`.
    Auto,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverSettings {
    #[serde(rename = "probe_secs", serialize_with = "crate::config::print::secs")]
    pub probe_every: Duration,
    #[serde(rename = "fail_after_secs", serialize_with = "crate::config::print::secs")]
    pub fail_after: Duration,
    #[serde(rename = "return")]
    pub return_mode: Return,
    #[serde(rename = "return_after_secs", serialize_with = "crate::config::print::secs")]
    pub return_after: Duration,
}

impl FailoverSettings {
    /// Each probe (WebSocket ping, REST call) gets this long: the period, at least 2 s.
    pub fn probe_timeout(&self) -> Duration {
        self.probe_every.max(Duration::from_secs(2))
    }
}

impl RawFailover {
    /// None when `enabled` is false (the section may stay in the file, switched off).
    pub fn validate(
        self,
        rollout: Option<&RolloutSettings>,
    ) -> Result<Option<FailoverSettings>, ConfigError> {
        in_range("failover.probe_secs", self.probe_secs, 1..=60)?;
        in_range("failover.fail_after_secs", self.fail_after_secs, 1..=600)?;
        if self.fail_after_secs < self.probe_secs {
            return Err(ConfigError::new("failover.fail_after_secs", "must be at least probe_secs"));
        }
        in_range("failover.return_after_secs", self.return_after_secs, 1..=86_400)?;
        if !self.enabled {
            return Ok(None);
        }
        match rollout {
            Some(r) if !r.finished() => {}
            _ => {
                return Err(ConfigError::new(
                    "failover",
                    "needs [rollout] with two apps (from and to): those are the apps clients are moved \
                     between (after a migration, keep the old app as from with percent = 100 as a standby)",
                ));
            }
        }
        Ok(Some(FailoverSettings {
            probe_every: Duration::from_secs(self.probe_secs),
            fail_after: Duration::from_secs(self.fail_after_secs),
            return_mode: self.return_mode,
            return_after: Duration::from_secs(self.return_after_secs),
        }))
    }
}
