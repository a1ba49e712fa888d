//! Webhooks from every app, verified and merged into one stream for the host.
//!
//! `POST /webhooks` (one URL for all apps): the app is chosen by `X-Pusher-Key`
//! and the raw body must carry its `X-Pusher-Signature` (HMAC-SHA256, compared
//! in constant time) — otherwise 401 and nothing changes. Merged events are
//! queued and acknowledged at once; a background sender delivers them in order
//! to `[webhooks] forward_url`, in Pusher's own format and signed with the
//! configured key/secret (so handlers using the official SDKs keep working),
//! retrying with backoff for `retry_max_secs`. The queue and the merge state
//! live in this process: they survive host outages and config reloads, not a
//! restart.

mod merge;
mod redis_store;

pub use merge::MergeState;
pub use redis_store::RedisStore;

use crate::{pusher::hmac_sha256_hex, startup::AppState};
use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::sync::mpsc;

/// Where merge state and the outbox live (chosen at start; not hot-reloaded).
pub enum Store {
    Memory(Mutex<MergeState>),
    Redis(RedisStore),
}

/// Process-wide webhook state (outlives config reloads).
pub struct Webhooks {
    pub store: Store,
    /// Unix ms of the last verified webhook per app (this replica).
    pub last_seen: Mutex<HashMap<String, u64>>,
    outbox: mpsc::UnboundedSender<Vec<Value>>,
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Vec<Value>>>>,
}

impl Webhooks {
    pub fn new(settings: Option<&crate::config::WebhookSettings>) -> anyhow::Result<Self> {
        let store = match settings {
            Some(s) if s.state == crate::config::WebhookState::Redis => {
                Store::Redis(RedisStore::new(s.redis_url.as_deref().unwrap_or_default(), &s.redis_prefix)?)
            }
            _ => Store::Memory(Mutex::default()),
        };
        let (outbox, inbox) = mpsc::unbounded_channel();
        Ok(Self { store, last_seen: Mutex::default(), outbox, inbox: Mutex::new(Some(inbox)) })
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

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

fn reply(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message}))
}

/// The body's X-Pusher-Signature check (constant time).
fn signature_ok(secret: &str, body: &[u8], given_hex: &str) -> bool {
    crate::pusher::hmac_sha256_matches(secret.as_bytes(), body, given_hex)
}

/// `POST /webhooks`
pub async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let live = state.live();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let key = header("x-pusher-key");
    let Some(app) = live.settings.apps.values().find(|a| a.credentials.key.as_ref() == key) else {
        tracing::warn!("webhook with an unknown X-Pusher-Key refused");
        return reply(StatusCode::UNAUTHORIZED, "unknown X-Pusher-Key");
    };
    if !signature_ok(app.credentials.secret.expose_secret(), &body, header("x-pusher-signature")) {
        tracing::warn!(app = %app.name, "webhook with a bad X-Pusher-Signature refused");
        return reply(StatusCode::UNAUTHORIZED, "invalid X-Pusher-Signature");
    }
    let Some(events) =
        serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("events")?.as_array().cloned())
    else {
        return reply(StatusCode::BAD_REQUEST, "body must be {\"time_ms\": …, \"events\": [...]}");
    };
    let forwarded = match &state.webhooks.store {
        Store::Memory(merge) => {
            let out: Vec<Value> = {
                let mut merge = merge.lock().unwrap();
                events.iter().filter_map(|e| merge.apply(&app.name, e)).collect()
            };
            let n = out.len();
            if !out.is_empty() && live.settings.webhooks.is_some() {
                let _ = state.webhooks.outbox.send(out);
            }
            n
        }
        Store::Redis(redis) => {
            let mut n = 0;
            for e in &events {
                match redis.apply(&app.name, e).await {
                    Ok(queued) => n += queued as usize,
                    Err(err) => {
                        // Not acknowledged: Pusher retries, and the script made no partial change.
                        tracing::error!(error = %err, "redis: cannot record a webhook event");
                        return reply(StatusCode::SERVICE_UNAVAILABLE, "webhook state store unavailable");
                    }
                }
            }
            n
        }
    };
    state.webhooks.last_seen.lock().unwrap().insert(app.name.clone(), now_ms());
    state.metrics.webhooks(&app.name, events.len() as u64, forwarded as u64);
    tracing::info!(app = %app.name, received = events.len(), forwarded, "webhook");
    HttpResponse::Ok().json(json!({}))
}

/// Starts the background sender (once per process).
pub fn spawn_sender(state: std::sync::Arc<AppState>) {
    let Some(mut inbox) = state.webhooks.inbox.lock().unwrap().take() else { return };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("webhook client");
    if let Store::Redis(_) = &state.webhooks.store {
        tokio::spawn(async move {
            let Store::Redis(redis) = &state.webhooks.store else { return };
            if let Err(e) = redis.requeue().await {
                tracing::warn!(error = %e, "redis: cannot re-queue unfinished deliveries");
            }
            loop {
                match redis.next().await {
                    Ok(Some(item)) => {
                        let event: Value = serde_json::from_str(&item).unwrap_or(Value::Null);
                        deliver(&state, &http, vec![event]).await;
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
        while let Some(mut events) = inbox.recv().await {
            while let Ok(more) = inbox.try_recv() {
                events.extend(more); // batch what piled up, in order
            }
            deliver(&state, &http, events).await;
        }
    });
}

async fn deliver(state: &AppState, http: &reqwest::Client, events: Vec<Value>) {
    let body = serde_json::to_vec(&json!({"time_ms": now_ms(), "events": events})).expect("serializes");
    let started = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        let live = state.live();
        let Some(settings) = live.settings.webhooks.as_ref() else { return };
        let signature = hmac_sha256_hex(settings.secret.expose_secret().as_bytes(), &body);
        let result = http
            .post(settings.forward_url.clone())
            .header("content-type", "application/json")
            .header("x-pusher-key", &settings.key)
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

/// At start, seeds occupancy from every app's REST channel list, so a channel
/// already occupied before this process started is vacated correctly later.
pub fn spawn_reconcile(state: std::sync::Arc<AppState>) {
    if state.live().settings.webhooks.is_none() {
        return;
    }
    tokio::spawn(async move {
        let live = state.live();
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build().expect("client");
        for app in live.settings.apps.values() {
            let path = format!("/apps/{}/channels", app.app_id);
            let now = (now_ms() / 1000) as i64;
            let query = crate::pusher::rest::signed_query(
                app.credentials.key.as_ref(),
                app.credentials.secret.expose_secret(),
                "GET",
                &path,
                None,
                now,
                &[],
            );
            let mut url = app.rest_url.clone();
            url.set_path(&path);
            url.set_query(Some(&query));
            let channels = match http.get(url).send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            };
            let Some(Value::Object(channels)) = channels.and_then(|v| v.get("channels").cloned()) else {
                tracing::warn!(app = %app.name, "could not reconcile occupancy from the REST API");
                continue;
            };
            for name in channels.keys() {
                match &state.webhooks.store {
                    Store::Memory(m) => m.lock().unwrap().seed_occupied(&app.name, name),
                    Store::Redis(r) => {
                        if let Err(e) = r.seed_occupied(&app.name, name).await {
                            tracing::warn!(error = %e, "redis: cannot seed occupancy");
                        }
                    }
                }
            }
            tracing::info!(app = %app.name, occupied = channels.len(), "occupancy reconciled from the REST API");
        }
    });
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
