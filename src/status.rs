//! Migration status: `/status` (JSON) and `/status.html` (a small page over it).
//! Signed authorizations and their share per app over time, occupied channels
//! per app (from the merged webhooks), the last webhook per app, and the
//! verdict "old app drained": no new old-app authorization and no old-app
//! occupancy for `drain_window_secs`.

use crate::state::AppState;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use std::{collections::BTreeMap, sync::Arc};

const MAX_SAMPLES: usize = 360;

use crate::{outbound::now_ms, state::Sample};

async fn take_sample(state: &AppState) -> Sample {
    let live = state.live();
    let mut signed = state.metrics.signed_per_app();
    let apps: Vec<String> = live.settings.apps.keys().cloned().collect();
    let occupied_now = state.webhooks.occupied_counts(&apps).await;
    let mut occupied = BTreeMap::new();
    for app in live.settings.apps.keys() {
        signed.entry(app.clone()).or_insert(0);
        occupied.insert(app.clone(), occupied_now.get(app).copied().unwrap_or(0));
    }
    signed.retain(|app, _| live.settings.apps.contains_key(app));
    let rollout_percent = live.settings.rollout.as_ref().map(|r| r.percent);
    Sample { t: now_ms(), signed, occupied, rollout_percent }
}

/// Records a sample and updates the drain clock.
pub async fn record(state: &AppState) {
    let sample = take_sample(state).await;
    let live = state.live();
    // Without an old app there is nothing to drain: never quiet.
    let old = live.settings.status.old_app.as_deref().unwrap_or_default();
    let mut samples = state.status.samples.lock().unwrap();
    let busy = old.is_empty()
        || match samples.back() {
            Some(prev) => {
                prev.signed.get(old) != sample.signed.get(old)
                    || sample.occupied.get(old).copied().unwrap_or(0) > 0
            }
            None => sample.occupied.get(old).copied().unwrap_or(0) > 0,
        };
    let mut quiet = state.status.quiet_since.lock().unwrap();
    *quiet = if busy { None } else { Some(quiet.unwrap_or(sample.t)) };
    samples.push_back(sample);
    while samples.len() > MAX_SAMPLES {
        samples.pop_front();
    }
}

pub fn spawn_sampler(state: Arc<AppState>) {
    tokio::spawn(async move {
        loop {
            record(&state).await;
            let every = state.live().settings.status.sample_every;
            tokio::time::sleep(every).await;
        }
    });
}

pub async fn snapshot(state: &AppState) -> Value {
    let live = state.live();
    let cfg = &live.settings.status;
    let samples: Vec<Sample> = state.status.samples.lock().unwrap().iter().cloned().collect();
    let current = take_sample(state).await;
    let total: u64 = current.signed.values().sum();
    let last_seen = state.webhooks.last_seen();
    let apps: BTreeMap<&String, Value> = live
        .settings
        .apps
        .keys()
        .map(|app| {
            let signed = current.signed.get(app).copied().unwrap_or(0);
            let share = if total == 0 { 0.0 } else { signed as f64 / total as f64 };
            (
                app,
                json!({
                    "auth_signed_total": signed,
                    "share": (share * 1000.0).round() / 1000.0,
                    "occupied_channels": current.occupied.get(app).copied().unwrap_or(0),
                    "last_webhook_ms": last_seen.get(app),
                }),
            )
        })
        .collect();
    let quiet_since = *state.status.quiet_since.lock().unwrap();
    let now = now_ms();
    let window_ms = cfg.drain_window.as_millis() as u64;
    let old = cfg.old_app.as_deref().unwrap_or_default();
    let drained = !old.is_empty() && quiet_since.is_some_and(|q| now.saturating_sub(q) >= window_ms);
    let reason = match quiet_since {
        _ if old.is_empty() => "no app to drain: name it with [status] old_app".to_owned(),
        None => format!("{old} still authorizes clients or has occupied channels"),
        Some(q) if !drained => {
            format!(
                "quiet for {} s of the {} s window",
                now.saturating_sub(q) / 1000,
                cfg.drain_window.as_secs()
            )
        }
        Some(q) => format!("no authorization and no occupied channel for {} s", now.saturating_sub(q) / 1000),
    };
    json!({
        "apps": apps,
        "drain": {"app": cfg.old_app, "window_secs": cfg.drain_window.as_secs(), "drained": drained,
                  "quiet_since_ms": quiet_since, "reason": reason},
        "history": samples,
        // Which client builds still keep the old app alive: most of the day's auths on old first.
        "clients": state.clients.snapshot(now, cfg.old_app.as_deref()),
        // The target beside the measured share per app (`apps.*.share`).
        "rollout": live.settings.rollout.as_ref().map(|r| json!({
            "from": r.from, "to": r.to, "percent": r.percent, "version": r.version,
        })),
        "generated_ms": now,
    })
}

pub async fn status_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(snapshot(&state).await)
}

pub async fn status_page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(include_str!("status.html"))
}
