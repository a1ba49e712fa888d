//! Process state: the live configuration (swapped whole on reload) and what
//! outlives reloads (metrics, webhook state, status history). Features use
//! this; only `startup` builds it.

use crate::{
    config::{PublishSettings, Settings},
    metrics::Metrics,
    rate_limit::ClientRateLimiter,
    session_check::SessionCheckClient,
};
use anyhow::Context;
use arc_swap::ArcSwap;
use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

/// Everything derived from one validated config. Replaced whole on reload;
/// a request keeps the `Live` it started with until it is answered.
pub struct Live {
    pub settings: Settings,
    pub session_check: SessionCheckClient,
    pub rate_limiter: Option<ClientRateLimiter>,
    /// The client that forwards publishes, when `[publish]` is set (see `publishing`).
    publish_http: Option<reqwest::Client>,
}

impl Live {
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let session_check =
            SessionCheckClient::new(&settings.session_check).context("building the session-check client")?;
        let rate_limiter = settings.rate_limit.map(ClientRateLimiter::new);
        let publish_http = settings.publish.as_ref().map(|p| crate::outbound::http_client(p.timeout));
        Ok(Self { settings, session_check, rate_limiter, publish_http })
    }

    /// `[publish]` and its client: both or neither.
    pub fn publishing(&self) -> Option<(&PublishSettings, &reqwest::Client)> {
        self.settings.publish.as_ref().zip(self.publish_http.as_ref())
    }
}

/// Process-wide state shared by every worker.
pub struct AppState {
    live: ArcSwap<Live>,
    pub metrics: Metrics,
    pub webhooks: crate::webhooks::Webhooks,
    pub status: StatusHistory,
    /// Signed authorizations per client build and app.
    pub clients: crate::client_stats::ClientStats,
    /// The file the config came from, for reloads (set once, by `watch_config`).
    config_path: OnceLock<PathBuf>,
    /// Whether the last reload was rejected (the watcher then re-checks the
    /// files now and then, so a missing secret file appearing is enough).
    rejected: std::sync::atomic::AtomicBool,
}

impl AppState {
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let webhooks = crate::webhooks::Webhooks::new(settings.webhooks.as_ref())?;
        let metrics = Metrics::new();
        metrics.reload(true);
        Ok(Self {
            live: ArcSwap::from_pointee(Live::new(settings)?),
            metrics,
            webhooks,
            status: StatusHistory::default(),
            clients: crate::client_stats::ClientStats::default(),
            config_path: OnceLock::new(),
            rejected: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The file reloads read (set once, when watching starts).
    pub fn set_config_path(&self, path: PathBuf) -> anyhow::Result<()> {
        anyhow::ensure!(self.config_path.set(path).is_ok(), "the config path is set once");
        Ok(())
    }

    /// The config file, every secret file the running config reads, and every
    /// one the file on disk names (a rejected config's too): what a reload watches.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let path = self.config_path.get();
        let mut files: Vec<PathBuf> = path.cloned().into_iter().collect();
        files.extend(self.live().settings.secret_files.iter().cloned());
        files.extend(crate::config::referenced_files(path.map(PathBuf::as_path)));
        files.sort();
        files.dedup();
        files
    }

    /// Whether the last reload was rejected (the watcher then re-checks now and then).
    pub fn last_reload_rejected(&self) -> bool {
        self.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current configuration (cheap: an `Arc` clone).
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Loads, validates and swaps in a new config. On any error the current one
    /// stays, and the error is returned (and logged and counted by the caller).
    pub fn reload(&self) -> anyhow::Result<()> {
        let result = (|| {
            let settings = Settings::load(self.config_path.get().map(PathBuf::as_path))?;
            let current = self.live();
            if settings.server.listen != current.settings.server.listen
                || settings.server.admin_listen != current.settings.server.admin_listen
            {
                tracing::warn!(
                    "server.listen / server.admin_listen changed: restart to apply; other changes are live"
                );
            }
            self.live.store(Arc::new(Live::new(settings)?));
            Ok(())
        })();
        self.metrics.reload(result.is_ok());
        self.rejected.store(result.is_err(), std::sync::atomic::Ordering::Relaxed);
        match &result {
            Ok(()) => {
                let live = self.live();
                let apps: Vec<&String> = live.settings.apps.keys().collect();
                tracing::info!(?apps, "configuration reloaded");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "configuration reload rejected; keeping the previous one")
            }
        }
        result
    }
}

/// One reading of the migration status (see `status`).
#[derive(Clone, serde::Serialize)]
pub struct Sample {
    pub t: u64,
    pub signed: BTreeMap<String, u64>,
    pub occupied: BTreeMap<String, usize>,
    /// The rollout target (percent on `to`) when the sample was taken, so changes show over time.
    #[serde(skip_serializing_if = "Option::is_none")]
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
#[derive(Clone, Default, serde::Serialize)]
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
