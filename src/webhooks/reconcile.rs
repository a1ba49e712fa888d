//! Reconciling each app's occupancy with its REST API: seeded at start,
//! corrected now and then (what webhooks missed), each reading recorded for the
//! status page and the fleet.

use crate::state::AppState;
use serde_json::Value;
use std::time::Duration;

/// Reconciles each app's occupancy with its REST API: at start it seeds the
/// channels (and presence members) occupied before this process started, so
/// they are vacated correctly later; then, every `status.reconcile_secs`, it
/// compares the list with the webhook-merged state and corrects what webhooks
/// missed (a lost `channel_occupied` or `channel_vacated`), as those webhooks
/// would have. A difference is corrected only once two lists in a row show it:
/// a webhook still on its way is not taken for a lost one.
pub fn spawn(state: std::sync::Arc<AppState>) {
    if state.live().settings.webhooks.is_none() {
        return;
    }
    let http = crate::outbound::http_client(Duration::from_secs(10));
    let names: Vec<String> = state.live().settings.apps.keys().cloned().collect();
    for name in names {
        let (state, http) = (state.clone(), http.clone());
        tokio::spawn(async move {
            let mut seeded = false;
            let mut suspects = Suspects::default();
            let mut delay = Duration::from_secs(1);
            loop {
                let every = state.live().settings.status.reconcile_every;
                match reconcile_app(&state, &http, &name, seeded, &mut suspects).await {
                    Ok(None) => return, // the app was removed by a reload
                    Ok(Some(listed)) => {
                        if !seeded {
                            tracing::info!(app = %name, occupied = listed, "occupancy reconciled from the REST API");
                        }
                        seeded = true;
                        delay = Duration::from_secs(1);
                        tokio::time::sleep(every).await;
                    }
                    Err(e) => {
                        tracing::warn!(app = %name, error = %e, retry_in_s = delay.as_secs(), "could not reconcile occupancy from the REST API");
                        note_rest(&state, &name, Err(&e), (0, 0)).await;
                        tokio::time::sleep(delay).await;
                        delay =
                            (delay * 2).min(Duration::from_secs(60)).min(every.max(Duration::from_secs(1)));
                    }
                }
            }
        });
    }
}

/// Differences the previous list showed: (listed but not occupied here,
/// occupied here but not listed).
#[derive(Default)]
struct Suspects(std::collections::BTreeSet<String>, std::collections::BTreeSet<String>);

/// GETs a REST resource of `app` as JSON; errors say what failed, never the signed URL.
async fn rest_get(
    http: &reqwest::Client,
    app: &crate::config::AppSettings,
    path: &str,
) -> Result<Value, String> {
    let url = crate::outbound::signed_url(app, "GET", path, b"", &[]);
    let res = http.get(url).send().await.map_err(|e| format!("GET {path}: {}", e.without_url()))?;
    if !res.status().is_success() {
        return Err(format!("GET {path}: HTTP {}", res.status().as_u16()));
    }
    let body = crate::outbound::read_capped(res, crate::outbound::MAX_LISTING_BYTES)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("GET {path}: not JSON: {e}"))
}

/// Reads one app's channel list; seeds it (the first time) or corrects the
/// merged state from it. The number of channels listed.
async fn reconcile_app(
    state: &AppState,
    http: &reqwest::Client,
    name: &str,
    seeded: bool,
    suspects: &mut Suspects,
) -> Result<Option<usize>, String> {
    let live = state.live();
    let Some(app) = live.settings.app(name) else { return Ok(None) };
    let listing = rest_get(http, app, &format!("/apps/{}/channels", app.app_id)).await?;
    let Some(Value::Object(channels)) = listing.get("channels") else {
        return Err("the channel list has no \"channels\" object".into());
    };
    let now = crate::outbound::now_ms();
    let listed: std::collections::BTreeSet<String> = channels.keys().cloned().collect();
    let mut corrected = (0, 0);
    if !seeded {
        // Read everything first, then seed: a failed read leaves nothing half-seeded.
        let mut members = Vec::new();
        for channel in listed.iter().filter(|c| c.starts_with("presence-")) {
            let users =
                rest_get(http, app, &format!("/apps/{}/channels/{channel}/users", app.app_id)).await?;
            for user in users.get("users").and_then(Value::as_array).into_iter().flatten() {
                let id = match user.get("id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => continue,
                };
                members.push((channel.clone(), id));
            }
        }
        let names: Vec<String> = listed.iter().cloned().collect();
        state.webhooks.seed(&app.name, &names, &members).await.map_err(|e| format!("redis: {e}"))?;
    } else {
        let ours: std::collections::BTreeSet<String> = state
            .webhooks
            .occupied_on(&app.name)
            .await
            .map_err(|e| format!("redis: {e}"))?
            .into_iter()
            .collect();
        let missed_occupied: std::collections::BTreeSet<String> = listed.difference(&ours).cloned().collect();
        let missed_vacated: std::collections::BTreeSet<String> = ours.difference(&listed).cloned().collect();
        let occupy: Vec<String> = missed_occupied.intersection(&suspects.0).cloned().collect();
        let vacate: Vec<String> = missed_vacated.intersection(&suspects.1).cloned().collect();
        *suspects = Suspects(missed_occupied, missed_vacated);
        if !occupy.is_empty() || !vacate.is_empty() {
            let forwarded = state
                .webhooks
                .correct(&app.name, &occupy, &vacate, now)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            tracing::warn!(
                app = %app.name, occupied = occupy.len(), vacated = vacate.len(), forwarded,
                "occupancy corrected from the REST API: webhooks for these channels never arrived"
            );
            corrected = (occupy.len() as u64, vacate.len() as u64);
        }
    }
    note_rest(state, name, Ok(listed.len()), corrected).await;
    Ok(Some(listed.len()))
}

/// Records a reading of `app`'s REST channel list (or why it failed) and the
/// corrections made from it: here, and in the fleet's view (with Redis).
async fn note_rest(state: &AppState, app: &str, listed: Result<usize, &str>, corrected: (u64, u64)) {
    let now = crate::outbound::now_ms();
    {
        let mut rest = state.status.rest.lock().unwrap();
        let view = rest.entry(app.to_owned()).or_default();
        match listed {
            Ok(n) => (view.checked_ms, view.listed, view.error) = (Some(now), Some(n), None),
            Err(e) => view.error = Some(e.to_owned()),
        }
        if corrected != (0, 0) {
            view.corrected_occupied += corrected.0;
            view.corrected_vacated += corrected.1;
            view.last_correction_ms = Some(now);
        }
    }
    if let Some(fleet) = &state.fleet
        && let Err(e) = fleet.merge_rest(app, now, listed, corrected).await
    {
        tracing::debug!(app, error = %e, "fleet: REST reading not shared (redis)");
    }
}
