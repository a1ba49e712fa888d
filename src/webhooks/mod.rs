//! Webhooks from every app, verified and merged into one stream for the host.
//!
//! `POST /webhooks` (one URL for all apps; mounted only with `[webhooks]`): the
//! app is chosen by `X-Pusher-Key` before a body byte is read; the body
//! (capped at `max_body_bytes`, within the server's body deadline) must carry
//! that app's `X-Pusher-Signature` (HMAC-SHA256, constant time), and its
//! `time_ms` must be within `max_age_secs` — otherwise nothing changes. An
//! exact repeat within the window is acknowledged and not applied again.
//! Merged events are queued and acknowledged at once; a background sender
//! delivers them in order to `forward_url`, in Pusher's own format with the
//! source's `time_ms`, signed with the configured key/secret (so handlers using
//! the official SDKs keep working), retrying with backoff for `retry_max_secs`.
//! In memory mode the queue and merge state survive host outages and reloads,
//! not a restart (start-up reconciles occupancy and presence members from the
//! apps' REST APIs); in Redis mode they are shared and durable.

mod merge;
mod redis_store;
mod replay;

pub use merge::MergeState;
pub use redis_store::RedisStore;
pub use replay::{AgeError, SeenWebhooks, check_age};

use crate::{outbound::now_ms, pusher::hmac_sha256_hex, routes::read_body, startup::AppState};
use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};
use tokio::sync::mpsc;

/// Where merge state and the outbox live (chosen at start; not hot-reloaded).
pub enum Store {
    Memory(Mutex<MergeState>),
    Redis(RedisStore),
}

/// Webhook bodies read at once. Pusher sends a few webhooks a second; beyond
/// this a webhook gets 503 at once, unread (Pusher retries for 5 minutes), so
/// connections holding bodies open cannot grow memory past this many bodies.
const MAX_CONCURRENT_BODIES: usize = 64;

/// Events to forward, with the `time_ms` of the webhook they came in.
type Batch = (u64, Vec<Value>);

/// Process-wide webhook state (outlives config reloads).
pub struct Webhooks {
    pub store: Store,
    /// Unix ms of the last verified webhook per app (this replica).
    last_seen: Mutex<HashMap<String, u64>>,
    /// Webhooks applied within the replay window (memory mode).
    seen: Mutex<SeenWebhooks>,
    /// Permits to read a body (see MAX_CONCURRENT_BODIES).
    readers: tokio::sync::Semaphore,
    outbox: mpsc::UnboundedSender<Batch>,
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Batch>>>,
}

impl Webhooks {
    pub fn new(settings: Option<&crate::config::WebhookSettings>) -> anyhow::Result<Self> {
        let store = match settings {
            Some(crate::config::WebhookSettings {
                store: crate::config::WebhookStore::Redis { url, prefix },
                ..
            }) => Store::Redis(RedisStore::new(url, prefix)?),
            _ => Store::Memory(Mutex::default()),
        };
        let (outbox, inbox) = mpsc::unbounded_channel();
        Ok(Self {
            store,
            last_seen: Mutex::default(),
            seen: Mutex::default(),
            readers: tokio::sync::Semaphore::new(MAX_CONCURRENT_BODIES),
            outbox,
            inbox: Mutex::new(Some(inbox)),
        })
    }

    /// Records a verified webhook from `app` at `at_ms`.
    fn saw(&self, app: &str, at_ms: u64) {
        self.last_seen.lock().unwrap().insert(app.to_owned(), at_ms);
    }

    /// Unix ms of the last verified webhook per app (this replica).
    pub fn last_seen(&self) -> HashMap<String, u64> {
        self.last_seen.lock().unwrap().clone()
    }

    /// Occupied channels per app, from the merged state.
    pub async fn occupied_counts(&self, apps: &[String]) -> HashMap<String, usize> {
        match &self.store {
            Store::Memory(m) => m.lock().unwrap().occupied_counts(),
            Store::Redis(r) => r.occupied_counts(apps).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "redis: cannot read occupancy");
                HashMap::new()
            }),
        }
    }
}

fn reply(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message}))
}

/// The body's X-Pusher-Signature check (constant time).
fn signature_ok(secret: &str, body: &[u8], given_hex: &str) -> bool {
    crate::pusher::hmac_sha256_matches(secret.as_bytes(), body, given_hex)
}

/// `POST /webhooks`
pub async fn receive(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let live = state.live();
    let (status, outcome, message) = match accept(&req, payload, &state, &live).await {
        Ok(outcome) => (StatusCode::OK, outcome, None),
        Err(Refused(status, outcome, message)) => (status, outcome, Some(message)),
    };
    state.metrics.webhook_request(outcome);
    match message {
        None => HttpResponse::Ok().json(json!({})),
        Some(m) if status == StatusCode::SERVICE_UNAVAILABLE => {
            let mut res = reply(status, &m);
            res.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("1"),
            );
            res
        }
        Some(m) => reply(status, &m),
    }
}

/// A webhook not applied: status, metric label, message.
struct Refused(StatusCode, &'static str, String);

async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    live: &crate::startup::Live,
) -> Result<&'static str, Refused> {
    let Some(settings) = live.settings.webhooks.as_ref() else {
        // Unmounted without [webhooks]; a reload may race the route guard.
        return Err(Refused(StatusCode::NOT_FOUND, "not_configured", "webhooks are not configured".into()));
    };
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    // Before the body: a stranger without a configured key costs no read at all.
    let key = header("x-pusher-key");
    let Some(app) = live.settings.apps.values().find(|a| a.credentials.key.as_ref() == key) else {
        tracing::warn!("webhook with an unknown X-Pusher-Key refused");
        return Err(Refused(StatusCode::UNAUTHORIZED, "unknown_key", "unknown X-Pusher-Key".into()));
    };
    let Ok(_permit) = state.webhooks.readers.try_acquire() else {
        tracing::warn!("webhook refused: {MAX_CONCURRENT_BODIES} webhook bodies already being read");
        return Err(Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many webhooks at once; retry".into(),
        ));
    };
    let body = read_body(req, payload, settings.max_body_bytes, live.settings.server.body_timeout)
        .await
        .map_err(|e| {
            let (status, label) = e.status_and_code();
            Refused(status, label, e.to_string())
        })?;
    if !signature_ok(app.credentials.secret.expose_secret(), &body, header("x-pusher-signature")) {
        tracing::warn!(app = %app.name, "webhook with a bad X-Pusher-Signature refused");
        return Err(Refused(StatusCode::UNAUTHORIZED, "bad_signature", "invalid X-Pusher-Signature".into()));
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let Some(events) = parsed.as_ref().and_then(|v| v.get("events")?.as_array()) else {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "body must be {\"time_ms\": …, \"events\": [...]}".into(),
        ));
    };
    let now = now_ms();
    let window_ms = settings.max_age.as_millis() as u64;
    let time_ms = check_age(parsed.as_ref().and_then(|v| v.get("time_ms")?.as_u64()), now, window_ms)
        .map_err(|e| {
            tracing::warn!(app = %app.name, error = %e, "webhook outside the replay window refused");
            Refused(StatusCode::BAD_REQUEST, "stale", e.to_string())
        })?;
    let digest = replay::digest(&app.name, &body);
    let forwarded = match &state.webhooks.store {
        Store::Memory(merge) => {
            // One lock order (seen, then merge) and one critical section: a repeat
            // arriving concurrently cannot be applied twice.
            let mut seen = state.webhooks.seen.lock().unwrap();
            if seen.contains(&digest, now) {
                return Ok(duplicate(app));
            }
            let out: Vec<Value> = {
                let mut merge = merge.lock().unwrap();
                events.iter().filter_map(|e| merge.apply(&app.name, e)).collect()
            };
            seen.insert(digest, time_ms.max(now) + window_ms, now);
            let n = out.len();
            if !out.is_empty() {
                let _ = state.webhooks.outbox.send((time_ms, out));
            }
            n
        }
        Store::Redis(redis) => {
            let unavailable = |err: redis::RedisError| {
                // Not acknowledged: Pusher retries, and each script made no partial change.
                tracing::error!(error = %err, "redis: cannot record a webhook event");
                Refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "webhook state store unavailable".into(),
                )
            };
            if redis.seen(&digest).await.map_err(unavailable)? {
                return Ok(duplicate(app));
            }
            let mut n = 0;
            for e in events {
                n += redis.apply(&app.name, e, time_ms).await.map_err(unavailable)? as usize;
            }
            // Marked only once every event is applied: a retry after a failure applies the rest.
            redis.remember(&digest, window_ms).await.map_err(unavailable)?;
            n
        }
    };
    state.webhooks.saw(&app.name, now);
    state.metrics.webhooks(&app.name, events.len() as u64, forwarded as u64);
    tracing::info!(app = %app.name, received = events.len(), forwarded, "webhook");
    Ok("accepted")
}

fn duplicate(app: &crate::config::AppSettings) -> &'static str {
    tracing::info!(app = %app.name, "webhook repeated within the replay window: acknowledged, not applied again");
    "duplicate"
}

/// Starts the background sender (once per process).
pub fn spawn_sender(state: std::sync::Arc<AppState>) {
    let Some(mut inbox) = state.webhooks.inbox.lock().unwrap().take() else { return };
    let http = crate::outbound::http_client(Duration::from_secs(10));
    if let Store::Redis(_) = &state.webhooks.store {
        tokio::spawn(async move {
            let Store::Redis(redis) = &state.webhooks.store else { return };
            if let Err(e) = redis.requeue().await {
                tracing::warn!(error = %e, "redis: cannot re-queue unfinished deliveries");
            }
            loop {
                match redis.next().await {
                    Ok(Some(item)) => {
                        let (time_ms, event) = RedisStore::unwrap_item(&item);
                        deliver(&state, &http, time_ms, vec![event]).await;
                        if let Err(e) = redis.done(&item).await {
                            tracing::warn!(error = %e, "redis: cannot mark a delivery done");
                        }
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
                    Err(e) => {
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

/// Delivers with the source webhook's `time_ms`, so the host can order events.
async fn deliver(state: &AppState, http: &reqwest::Client, time_ms: u64, events: Vec<Value>) {
    let body = serde_json::to_vec(&json!({"time_ms": time_ms, "events": events})).expect("serializes");
    let started = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        let live = state.live();
        let Some(settings) = live.settings.webhooks.as_ref() else { return };
        let signature = hmac_sha256_hex(settings.secret.expose_secret().as_bytes(), &body);
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

/// At start, seeds occupancy and presence members from every app's REST API,
/// so a channel occupied (or a member present) before this process started is
/// vacated (removed) correctly later. Each app is retried with backoff until
/// its reconcile succeeds.
pub fn spawn_reconcile(state: std::sync::Arc<AppState>) {
    if state.live().settings.webhooks.is_none() {
        return;
    }
    let http = crate::outbound::http_client(Duration::from_secs(10));
    let names: Vec<String> = state.live().settings.apps.keys().cloned().collect();
    for name in names {
        let (state, http) = (state.clone(), http.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            loop {
                match reconcile_app(&state, &http, &name).await {
                    Ok(None) => return, // the app was removed by a reload
                    Ok(Some((channels, members))) => {
                        tracing::info!(app = %name, occupied = channels, members, "occupancy reconciled from the REST API");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(app = %name, error = %e, retry_in_s = delay.as_secs(), "could not reconcile occupancy from the REST API");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
    }
}

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
    res.json::<Value>().await.map_err(|e| format!("GET {path}: {}", e.without_url()))
}

/// One app's occupied channels and presence members, seeded into the store.
async fn reconcile_app(
    state: &AppState,
    http: &reqwest::Client,
    name: &str,
) -> Result<Option<(usize, usize)>, String> {
    let live = state.live();
    let Some(app) = live.settings.app(name) else { return Ok(None) };
    let listing = rest_get(http, app, &format!("/apps/{}/channels", app.app_id)).await?;
    let Some(Value::Object(channels)) = listing.get("channels") else {
        return Err("the channel list has no \"channels\" object".into());
    };
    // Read everything first, then seed: a failed read leaves nothing half-seeded.
    let mut members = Vec::new();
    for channel in channels.keys().filter(|c| c.starts_with("presence-")) {
        let users = rest_get(http, app, &format!("/apps/{}/channels/{channel}/users", app.app_id)).await?;
        for user in users.get("users").and_then(Value::as_array).into_iter().flatten() {
            let id = match user.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => continue,
            };
            members.push((channel.clone(), id));
        }
    }
    let seeded = async {
        for channel in channels.keys() {
            match &state.webhooks.store {
                Store::Memory(m) => m.lock().unwrap().seed_occupied(&app.name, channel),
                Store::Redis(r) => r.seed_occupied(&app.name, channel).await?,
            }
        }
        for (channel, user) in &members {
            match &state.webhooks.store {
                Store::Memory(m) => m.lock().unwrap().seed_member(&app.name, channel, user),
                Store::Redis(r) => r.seed_member(&app.name, channel, user).await?,
            }
        }
        Ok::<_, redis::RedisError>(())
    };
    seeded.await.map_err(|e| format!("redis: {e}"))?;
    Ok(Some((channels.len(), members.len())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_are_checked_against_the_raw_body() {
        // Vector from pusher-protocol.md (docs secret).
        let body =
            br#"{"time_ms":1530710011901,"events":[{"name":"channel_occupied","channel":"private-foobar"}]}"#;
        let sig = "44848ca690b0ae082b8db71418e9b361eb642922236b6e85700af24e660768d1";
        assert!(super::signature_ok("7ad3773142a6692b25b8", body, sig));
        assert!(!super::signature_ok("7ad3773142a6692b25b8", b"{}", sig));
        assert!(!super::signature_ok("other", body, sig));
        assert!(!super::signature_ok("7ad3773142a6692b25b8", body, "zz"));
        assert!(super::signature_ok(
            "thisisasecret",
            br#"{"hello":"world"}"#,
            "40e0ad3b9aa49529322879e84de1aaaf18bde1efe839ca263d540cc865510d25"
        ));
    }
}
