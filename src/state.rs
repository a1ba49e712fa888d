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
    path::PathBuf,
    sync::{Arc, OnceLock},
};

pub use crate::status::history::{RestView, Sample, StatusHistory};

/// Everything derived from one validated config. Replaced whole on reload;
/// a request keeps the `Live` it started with until it is answered.
pub struct Live {
    pub settings: Settings,
    /// A digest of the effective config (listen addresses aside) and when it
    /// was loaded: how replicas tell they run the same one.
    pub digest: String,
    pub loaded_ms: u64,
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
        Ok(Self {
            digest: settings.digest(),
            loaded_ms: crate::outbound::now_ms(),
            settings,
            session_check,
            rate_limiter,
            publish_http,
        })
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
    /// What the publish fan-out kept for clients to recover (in Redis with the webhook state).
    pub recovery: crate::recovery::Recovery,
    /// This replica's probes and the failover decision in force.
    pub failover: crate::failover::state::Failover,
    pub status: StatusHistory,
    /// The fleet view in Redis, when the webhook state is there (see `fleet`).
    pub fleet: Option<crate::fleet::Fleet>,
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
        let fleet = match settings.webhooks.as_ref().map(|w| &w.store) {
            Some(crate::config::WebhookStore::Redis { url, prefix, .. }) => {
                Some(crate::fleet::Fleet::new(url, prefix)?)
            }
            _ => None,
        };
        let recovery = crate::recovery::Recovery::new(match settings.webhooks.as_ref().map(|w| &w.store) {
            Some(crate::config::WebhookStore::Redis { url, prefix, .. }) => {
                Some((url.as_str(), prefix.as_str()))
            }
            _ => None,
        })?;
        let redis = match settings.webhooks.as_ref().map(|w| &w.store) {
            Some(crate::config::WebhookStore::Redis { url, prefix, .. }) => {
                Some((url.as_str(), prefix.as_str()))
            }
            _ => None,
        };
        let replica = fleet.as_ref().map(|f| f.replica.clone()).unwrap_or_else(|| "this".into());
        let failover = crate::failover::state::Failover::new(redis, replica)?;
        let clients = crate::client_stats::ClientStats::default();
        if fleet.is_some() {
            clients.keep_pending();
        }
        Ok(Self {
            fleet,
            live: ArcSwap::from_pointee(Live::new(settings)?),
            metrics,
            webhooks,
            recovery,
            failover,
            status: StatusHistory::default(),
            clients,
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
            let pending = start_only_changes(&current.settings, &settings);
            if !pending.is_empty() {
                let keys = pending.join(", ");
                tracing::warn!(
                    keys,
                    "changed settings that apply at the next start only; the other changes are live"
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

/// What this replica tells the fleet view: its row (config, rollout, version)
/// and the counts it has not flushed.
impl crate::fleet::flush::Reporter for AppState {
    fn fleet(&self) -> Option<&crate::fleet::Fleet> {
        self.fleet.as_ref()
    }

    fn flushed(&self, ok: bool) {
        self.metrics.redis_reachable(ok);
    }

    fn row(&self, fleet: &crate::fleet::Fleet, stopping: bool) -> crate::fleet::ReplicaRow {
        let live = self.live();
        crate::fleet::ReplicaRow {
            id: fleet.replica.clone(),
            host: fleet.replica.rsplit_once('-').map(|(h, _)| h.to_owned()).unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_ms: fleet.started_ms,
            config: live.digest.clone(),
            config_loaded_ms: live.loaded_ms,
            rollout: live.settings.rollout.as_ref().map(|r| crate::fleet::RolloutRow {
                from: r.from.clone(),
                to: r.to.clone(),
                percent: r.percent,
                version: r.version,
            }),
            last_seen_ms: crate::outbound::now_ms(),
            stopped_ms: stopping.then(crate::outbound::now_ms),
        }
    }

    fn counts(&self) -> crate::fleet::Counts {
        crate::fleet::Counts {
            signed_totals: self.metrics.signed_per_app(),
            last_webhook: self.webhooks.last_seen(),
            builds: self.clients.take_pending(),
        }
    }
}

/// The settings read once at start (listeners, workers, timeouts, the webhook
/// store) that differ between `running` and `loaded`: a reload cannot apply
/// them, and says so rather than looking applied.
fn start_only_changes(running: &Settings, loaded: &Settings) -> Vec<&'static str> {
    let (a, b) = (&running.server, &loaded.server);
    // No [webhooks] keeps its (empty) state in memory: adding a memory one is live.
    let memory = crate::config::WebhookStore::Memory;
    let store = |s: &Settings| s.webhooks.as_ref().map_or(memory.clone(), |w| w.store.clone());
    [
        ("server.listen", a.listen != b.listen),
        ("server.admin_listen", a.admin_listen != b.admin_listen),
        ("server.workers", a.workers != b.workers),
        ("server.shutdown_timeout_secs", a.shutdown_timeout != b.shutdown_timeout),
        ("server.header_timeout_ms", a.header_timeout != b.header_timeout),
        (
            "webhooks.state / redis_url / sentinels / redis_prefix / replica_acks",
            store(running) != store(loaded),
        ),
        ("telemetry", running.telemetry != loaded.telemetry),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Settings {
        let base = "[session_check]\nurl = \"http://127.0.0.1:9/check\"\n\
                    [apps.old]\napp_id = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
        Settings::from_toml(&format!("{extra}\n{base}"), None).unwrap()
    }

    #[test]
    fn a_reload_names_the_settings_it_cannot_apply() {
        let running = settings("[server]\nworkers = 2");
        assert!(start_only_changes(&running, &settings("[server]\nworkers = 2")).is_empty());
        let loaded = settings("[server]\nworkers = 4\nheader_timeout_ms = 3000");
        assert_eq!(start_only_changes(&running, &loaded), ["server.workers", "server.header_timeout_ms"]);
        let hooks = |state: &str| {
            settings(&format!(
                "[server]\nworkers = 2\n[webhooks]\nforward_url = \"http://127.0.0.1:9/h\"\nkey = \"k\"\nsecret = \"s\"\n{state}"
            ))
        };
        assert!(start_only_changes(&running, &hooks("")).is_empty(), "a memory [webhooks] added is live");
        let redis = hooks("state = \"redis\"\nredis_url = \"redis://127.0.0.1:9/0\"");
        assert_eq!(
            start_only_changes(&running, &redis),
            ["webhooks.state / redis_url / sentinels / redis_prefix / replica_acks"]
        );
        let traced = settings("[server]\nworkers = 2\n[telemetry]\nsample_ratio = 0.5");
        assert_eq!(start_only_changes(&running, &traced), ["telemetry"], "[telemetry] applies at start");
    }
}
