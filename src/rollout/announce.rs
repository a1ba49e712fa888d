//! `rollout-changed` on the control channel of both apps when the rollout
//! changes, so live clients move without waiting for a reconnect.

use crate::outbound::trigger::{self, Endpoint, Retry};
use crate::state::AppState;
use serde_json::json;
use std::time::Duration;

/// Announces a changed rollout on its control channel, on both apps, through
/// their REST APIs: `rollout-changed` `{"from","to","percent","spread_secs","version"}`.
/// Retried with backoff; replicas announcing the same change send the same version,
/// which clients act on once.
pub fn announce(state: std::sync::Arc<AppState>) {
    let live = state.live();
    let Some(rollout) = live.settings.rollout.clone() else { return };
    let data = json!({
        "from": rollout.from, "to": rollout.to, "percent": rollout.percent,
        "spread_secs": rollout.spread.as_secs(), "version": rollout.version,
    })
    .to_string();
    let body =
        json!({"name": "rollout-changed", "channel": rollout.control_channel, "data": data}).to_string();
    let http = crate::outbound::http_client(Duration::from_secs(10));
    let mut apps = vec![rollout.to.clone()];
    if !rollout.finished() {
        apps.insert(0, rollout.from.clone());
    }
    for name in apps {
        let (state, http, body) = (state.clone(), http.clone(), body.clone());
        tokio::spawn(async move {
            let retry = Retry { tries: 5, delay: Duration::from_millis(500) };
            let make = || {
                state.live().settings.app(&name).map(|a| trigger::request(&http, a, Endpoint::Events, &body))
            };
            let refused = |status, attempt| {
                state.metrics.rollout_announcement(&name, "failed");
                tracing::warn!(app = %name, status, attempt, "rollout-changed not accepted");
            };
            if trigger::send(retry, make, refused).await {
                state.metrics.rollout_announcement(&name, "sent");
                tracing::info!(app = %name, version = rollout.version, "rollout-changed announced");
            } else {
                tracing::error!(app = %name, "rollout-changed given up: clients pick the change up when they reconnect");
            }
        });
    }
}
