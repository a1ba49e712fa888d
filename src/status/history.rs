//! What the status page keeps over time: samples, the drain clock and each
//! app's REST evidence. Plain data, shared by the local and the fleet view.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
};

/// One reading of the migration status (see `status`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub t: u64,
    pub signed: BTreeMap<String, u64>,
    pub occupied: BTreeMap<String, usize>,
    /// The rollout target (percent on `to`) when the sample was taken, so changes show over time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<f64>,
}

/// The status page's history: outlives reloads.
#[derive(Default)]
pub struct StatusHistory {
    pub samples: Mutex<VecDeque<Sample>>,
    /// Since when (unix ms) the old app has been quiet, if it is.
    pub quiet_since: Mutex<Option<u64>>,
    /// Per app: what its REST API last said of its occupied channels.
    pub rest: Mutex<BTreeMap<String, RestView>>,
}

/// An app's REST channel list: the drain evidence beside the webhooks, and
/// the corrections a periodic reconcile made to the webhook-merged occupancy.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RestView {
    /// When the list was last read (unix ms) and how many channels it listed.
    pub checked_ms: Option<u64>,
    pub listed: Option<usize>,
    /// Why the latest read failed (None once a read succeeds).
    pub error: Option<String>,
    /// Channels the webhooks missed: marked occupied / vacated from the list.
    pub corrected_occupied: u64,
    pub corrected_vacated: u64,
    pub last_correction_ms: Option<u64>,
}
