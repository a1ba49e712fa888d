//! `rollout-changed` on the control channel of both apps when the rollout
//! or the failover decision changes, so live clients move without waiting
//! for a reconnect.

use crate::outbound::trigger::{self, Endpoint, Retry};
use crate::state::AppState;
use serde_json::json;
use std::time::Duration;

/// The longest spread of a failover's announcement.
const FAILOVER_SPREAD: Duration = Duration::from_secs(5);

/// Announces a changed rollout on its control channel, on both apps, through
/// their REST APIs: `rollout-changed` `{"from","to","percent","spread_secs","version"}`.
/// Retried with backoff; replicas announcing the same change send the same version,
/// which clients act on once.
pub fn announce(state: std::sync::Arc<AppState>) {
    let live = state.live();
    let Some(rollout) = live.settings.rollout.clone() else { return };
    let failover = state.failover.in_force(&live.settings);
    let failed = failover.as_deref();
    // A failover moves everyone at once: spread over at most FAILOVER_SPREAD.
    let spread = match failed {
        Some(_) => rollout.spread.min(FAILOVER_SPREAD),
        None => rollout.spread,
    };
    let version = crate::failover::decide::client_version(rollout.version, failed);
    let data = json!({
        "from": rollout.from, "to": rollout.to, "percent": rollout.percent,
        "spread_secs": spread.as_secs(), "version": version,
        "failover": failed.map(crate::failover::decide::Failed::told),
    })
    .to_string();
    let body =
        json!({"name": "rollout-changed", "channel": rollout.control_channel, "data": data}).to_string();
    let failed_app = failed.map(|f| f.from.clone());
    let http = crate::outbound::http_client(Duration::from_secs(10));
    let mut apps = vec![rollout.to.clone()];
    if !rollout.finished() {
        apps.insert(0, rollout.from.clone());
    }
    for name in apps {
        let (state, http, body, failed_app) = (state.clone(), http.clone(), body.clone(), failed_app.clone());
        tokio::spawn(async move {
            // The failed app is told too, in case it half works, but not insisted on.
            let down = failed_app.as_deref() == Some(name.as_str());
            let retry = Retry { tries: if down { 1 } else { 5 }, delay: Duration::from_millis(500) };
            let make = || {
                state.live().settings.app(&name).map(|a| trigger::request(&http, a, Endpoint::Events, &body))
            };
            let refused = |status, attempt| {
                state.metrics.rollout_announcement(&name, "failed");
                tracing::warn!(app = %name, status, attempt, "rollout-changed not accepted");
            };
            if trigger::send(retry, make, refused).await {
                state.metrics.rollout_announcement(&name, "sent");
                tracing::info!(app = %name, version, "rollout-changed announced");
            } else {
                tracing::error!(app = %name, "rollout-changed given up: clients pick the change up when they reconnect");
            }
        });
    }
}
