//! Background work: delivering merged webhooks to the host, and reconciling
//! webhook state from the apps' REST APIs at start.

use crate::{
    state::AppState,
    webhooks::{Batch, RedisStore, Store},
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Starts the webhook sender (once per process).
pub fn spawn_sender(state: std::sync::Arc<AppState>) {
    let Some(mut inbox) = state.webhooks.take_inbox() else { return };
    let http = crate::outbound::http_client(Duration::from_secs(10));
    if let Store::Redis(_) = &state.webhooks.store {
        tokio::spawn(async move {
            let Store::Redis(redis) = &state.webhooks.store else { return };
            // Sure at start: nothing of ours is being delivered, so our list may be swept.
            let mut unsure = true;
            let mut swept = Instant::now();
            loop {
                if unsure || swept.elapsed() >= LEASE_SWEEP {
                    match sweep(redis).await {
                        Ok(()) => (unsure, swept) = (false, Instant::now()),
                        Err(e) => {
                            tracing::warn!(error = %e, "redis: outbox unavailable; retrying in 1 s");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                match redis.next().await {
                    Ok(Some(item)) => {
                        let (time_ms, event) = RedisStore::unwrap_item(&item);
                        deliver(&state, &http, time_ms, vec![event]).await;
                        // Until Redis takes it: the item would otherwise be delivered again.
                        while let Err(e) = redis.done(&item).await {
                            tracing::warn!(error = %e, "redis: cannot mark a delivery done; retrying in 1 s");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
                    Err(e) => {
                        // The move may have happened with its answer lost: swept before the next.
                        unsure = true;
                        tracing::warn!(error = %e, "redis: outbox unavailable; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        return;
    }
    tokio::spawn(async move {
        let mut carried: Option<Batch> = None;
        loop {
            let next = match carried.take() {
                Some(batch) => Some(batch),
                None => inbox.recv().await,
            };
            let Some((time_ms, mut events)) = next else { return };
            // Batch what piled up in order, as long as it came with the same source time.
            while let Ok((t, more)) = inbox.try_recv() {
                if t != time_ms {
                    carried = Some((t, more));
                    break;
                }
                events.extend(more);
            }
            deliver(&state, &http, time_ms, events).await;
        }
    });
}

/// How often a Redis sender renews its lease and re-queues what crashed replicas left.
const LEASE_SWEEP: Duration = Duration::from_secs(10);

/// Renews this replica's lease; re-queues its own stranded items and orphans.
async fn sweep(redis: &RedisStore) -> redis::RedisResult<()> {
    redis.heartbeat().await?;
    let own = redis.requeue_own().await?;
    let orphans = redis.requeue_orphans().await?;
    if own + orphans > 0 {
        tracing::warn!(own, orphans, "redis: re-queued undelivered webhook events");
    }
    Ok(())
}

/// Delivers with the source webhook's `time_ms`, so the host can order events.
async fn deliver(state: &AppState, http: &reqwest::Client, time_ms: u64, events: Vec<Value>) {
    let body = serde_json::to_vec(&json!({"time_ms": time_ms, "events": events})).expect("serializes");
    let started = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        let live = state.live();
        let Some(settings) = live.settings.webhooks.as_ref() else { return };
        let signature = crate::pusher::hmac_sha256_hex(settings.secret.expose_secret().as_bytes(), &body);
        let result = http
            .post(settings.forward_url.clone())
            .header("content-type", "application/json")
            .header("x-pusher-key", settings.key.as_ref())
            .header("x-pusher-signature", signature)
            .body(body.clone())
            .send()
            .await;
        let status = result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
        if (200..300).contains(&status) {
            state.metrics.webhook_delivery("delivered");
            return;
        }
        if started.elapsed() >= settings.retry_max {
            state.metrics.webhook_delivery("dropped");
            tracing::error!(
                status,
                events = events_len(&body),
                "webhook delivery given up after retry_max_secs"
            );
            return;
        }
        state.metrics.webhook_delivery("retried");
        tracing::warn!(status, retry_in_ms = delay.as_millis() as u64, "webhook delivery failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

fn events_len(body: &[u8]) -> usize {
    serde_json::from_slice::<Value>(body).ok().and_then(|v| v["events"].as_array().map(Vec::len)).unwrap_or(0)
}

/// Reconciles each app's occupancy with its REST API: at start it seeds the
/// channels (and presence members) occupied before this process started, so
/// they are vacated correctly later; then, every `status.reconcile_secs`, it
/// compares the list with the webhook-merged state and corrects what webhooks
/// missed (a lost `channel_occupied` or `channel_vacated`), as those webhooks
/// would have. A difference is corrected only once two lists in a row show it:
/// a webhook still on its way is not taken for a lost one.
pub fn spawn_reconcile(state: std::sync::Arc<AppState>) {
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

/// Announces a changed rollout on its control channel, on both apps, through
/// their REST APIs: `rollout-changed` `{"from","to","percent","spread_secs","version"}`.
/// Retried with backoff; replicas announcing the same change send the same version,
/// which clients act on once.
pub fn announce_rollout(state: std::sync::Arc<AppState>) {
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
