//! `[status]`: what the migration status page calls the old app, and when it is drained.

use super::{
    apps::AppSettings,
    fields::{ConfigError, in_range},
    print,
};
use serde::Deserialize;
use std::{collections::BTreeMap, time::Duration};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStatus {
    old_app: Option<String>,
    drain_window_secs: Option<u64>,
    sample_secs: Option<u64>,
    reconcile_secs: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusSettings {
    /// The app being drained: `old_app` (checked at load), or the app named
    /// "old" when there is one; None otherwise (the page then says so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_app: Option<String>,
    #[serde(rename = "drain_window_secs", serialize_with = "print::secs")]
    pub drain_window: Duration,
    #[serde(rename = "sample_secs", serialize_with = "print::secs")]
    pub sample_every: Duration,
    /// How often each app's REST channel list is read to check (and correct)
    /// the occupancy the webhooks built.
    #[serde(rename = "reconcile_secs", serialize_with = "print::secs")]
    pub reconcile_every: Duration,
}

impl RawStatus {
    pub fn validate(self, apps: &BTreeMap<String, AppSettings>) -> Result<StatusSettings, ConfigError> {
        let old_app = match self.old_app {
            Some(name) if apps.contains_key(&name) => Some(name),
            Some(name) => {
                return Err(ConfigError::new("status.old_app", format!("{name:?} is not a configured app")));
            }
            None => apps.contains_key("old").then(|| "old".to_owned()),
        };
        let sample_secs = self.sample_secs.unwrap_or(10);
        in_range("status.sample_secs", sample_secs, 1..=3600)?;
        let reconcile_secs = self.reconcile_secs.unwrap_or(60);
        in_range("status.reconcile_secs", reconcile_secs, 2..=86_400)?;
        Ok(StatusSettings {
            old_app,
            drain_window: Duration::from_secs(self.drain_window_secs.unwrap_or(86_400)),
            sample_every: Duration::from_secs(sample_secs),
            reconcile_every: Duration::from_secs(reconcile_secs),
        })
    }
}
