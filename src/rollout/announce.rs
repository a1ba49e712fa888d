//! `rollout-changed` on the control channel of both apps when the rollout
//! changes, so live clients move without waiting for a reconnect.

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
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=5 {
                let live = state.live();
                let Some(app) = live.settings.app(&name) else { return };
                let path = format!("/apps/{}/events", app.app_id);
                let url = crate::outbound::signed_url(app, "POST", &path, body.as_bytes(), &[]);
                let sent =
                    http.post(url).header("content-type", "application/json").body(body.clone()).send().await;
                let status = sent.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                if (200..300).contains(&status) {
                    state.metrics.rollout_announcement(&name, "sent");
                    tracing::info!(app = %name, version = rollout.version, "rollout-changed announced");
                    return;
                }
                state.metrics.rollout_announcement(&name, "failed");
                tracing::warn!(app = %name, status, attempt, "rollout-changed not accepted; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            tracing::error!(app = %name, "rollout-changed given up: clients pick the change up when they reconnect");
        });
    }
}
