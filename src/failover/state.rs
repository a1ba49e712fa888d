//! What this replica knows of failover: its own probes, the decision in force
//! (read lock-free by `/client-config`), and the fleet's views as last read.

use super::{
    decide::{Failed, Health},
    shared::ReplicaView,
};
use arc_swap::ArcSwapOption;
use serde::Serialize;
use std::{collections::BTreeMap, sync::Mutex};

/// This replica's latest probe of one app.
#[derive(Debug, Clone, Serialize)]
pub struct Probed {
    #[serde(flatten)]
    pub health: Health,
    pub checked_ms: u64,
    pub latency_ms: u64,
    pub error: Option<String>,
}

pub struct Failover {
    /// This process, as the fleet names it.
    pub replica: String,
    /// The fleet's state in Redis, when the webhook state is there.
    pub shared: Option<super::shared::Shared>,
    probed: Mutex<BTreeMap<String, Probed>>,
    decision: ArcSwapOption<Failed>,
    /// The fleet's views as last read (with Redis), and the error if the last read failed.
    fleet: Mutex<(Vec<ReplicaView>, Option<String>)>,
}

impl Failover {
    pub fn new(redis: Option<(&str, &str)>, replica: String) -> anyhow::Result<Self> {
        Ok(Self {
            replica,
            shared: redis.map(|(url, prefix)| super::shared::Shared::new(url, prefix)).transpose()?,
            probed: Mutex::default(),
            decision: ArcSwapOption::empty(),
            fleet: Mutex::default(),
        })
    }

    /// The decision as last adopted here (also after `[failover]` was switched off: see `in_force`).
    pub fn decision(&self) -> Option<std::sync::Arc<Failed>> {
        self.decision.load_full()
    }

    /// The decision that applies under `settings`: none while `[failover]` is off.
    /// What `/client-config`, announcements and the fan-out follow.
    pub fn in_force(&self, settings: &crate::config::Settings) -> Option<std::sync::Arc<Failed>> {
        settings.failover.as_ref().and(self.decision())
    }

    /// Sets the decision; the previous one if it changed.
    pub fn set_decision(&self, next: Option<Failed>) -> Option<Option<Failed>> {
        let current = self.decision.load_full();
        if current.as_deref() == next.as_ref() {
            return None;
        }
        self.decision.store(next.map(std::sync::Arc::new));
        Some(current.map(|c| (*c).clone()))
    }

    /// Records a probe of `app`: healthy since the last change.
    pub fn observed(&self, app: &str, result: Result<(), String>, latency_ms: u64, now_ms: u64) {
        let mut probed = self.probed.lock().unwrap();
        let healthy = result.is_ok();
        let unchanged = probed.get(app).filter(|p| p.health.healthy == healthy).map(|p| p.health.since_ms);
        let since_ms = unchanged.unwrap_or(now_ms);
        if unchanged.is_none() {
            match &result {
                Ok(()) => tracing::info!(app, "failover: probes find the app healthy"),
                Err(e) => tracing::warn!(app, error = %e, "failover: probe failed; the app is unhealthy"),
            }
        }
        let health = Health { healthy, since_ms };
        probed.insert(app.to_owned(), Probed { health, checked_ms: now_ms, latency_ms, error: result.err() });
    }

    /// This replica's views, of the apps still probed.
    pub fn views(&self, apps: &[&str]) -> BTreeMap<String, Health> {
        let mut probed = self.probed.lock().unwrap();
        probed.retain(|app, _| apps.contains(&app.as_str()));
        probed.iter().map(|(app, p)| (app.clone(), p.health)).collect()
    }

    pub fn probed(&self) -> BTreeMap<String, Probed> {
        self.probed.lock().unwrap().clone()
    }

    /// Failover switched off: nothing probed, no decision.
    pub fn clear(&self) {
        self.probed.lock().unwrap().clear();
        self.decision.store(None);
    }

    pub fn set_fleet(&self, read: Result<Vec<ReplicaView>, String>) {
        let mut fleet = self.fleet.lock().unwrap();
        match read {
            Ok(views) => *fleet = (views, None),
            Err(e) => fleet.1 = Some(e),
        }
    }

    pub fn fleet(&self) -> (Vec<ReplicaView>, Option<String>) {
        self.fleet.lock().unwrap().clone()
    }
}
