//! Migration status: `/status` (JSON) and `/status.html` (a small page over it).
//! Signed authorizations and their share per app over time, occupied channels
//! per app (from the merged webhooks, checked against each app's REST channel
//! list), the last webhook per app, and the verdict "old app drained": no new
//! old-app authorization and no old-app occupancy for `drain_window_secs`, and
//! the old app's own REST API listing no channel during that time — never on
//! webhook counts alone.

pub(crate) mod history;

use crate::state::AppState;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

const MAX_SAMPLES: usize = 360;
/// The headline share is over this recent window, not since the process started.
const RECENT_MS: u64 = 5 * 60 * 1000;

use crate::{
    outbound::now_ms,
    state::{RestView, Sample},
};

/// A sample of `signed` (restricted to the configured apps) and the occupancy now.
async fn take_sample(state: &AppState, mut signed: BTreeMap<String, u64>) -> redis::RedisResult<Sample> {
    let live = state.live();
    let apps: Vec<String> = live.settings.apps.keys().cloned().collect();
    let occupied_now = state.webhooks.occupied_counts(&apps).await?;
    let mut occupied = BTreeMap::new();
    for app in live.settings.apps.keys() {
        signed.entry(app.clone()).or_insert(0);
        occupied.insert(app.clone(), occupied_now.get(app).copied().unwrap_or(0));
    }
    signed.retain(|app, _| live.settings.apps.contains_key(app));
    let rollout_percent = live.settings.rollout.as_ref().map(|r| r.percent);
    Ok(Sample { t: now_ms(), signed, occupied, rollout_percent })
}

/// Records a sample and updates the drain clock: this replica's, or (with
/// Redis) the fleet's, once per interval whichever replica comes first. A
/// sample that cannot be taken is skipped: never one that says "quiet"
/// because the occupancy could not be read.
pub async fn record(state: &AppState) -> redis::RedisResult<()> {
    let live = state.live();
    let cfg = &live.settings.status;
    let old = cfg.old_app.as_deref();
    if let Some(fleet) = &state.fleet {
        let sample = take_sample(state, fleet.signed().await?).await?;
        let old = old.map(|o| {
            (o, sample.signed.get(o).copied().unwrap_or(0), sample.occupied.get(o).copied().unwrap_or(0))
        });
        // Replicas tick out of step: a little under the interval, so each interval gets one.
        let gap = cfg.sample_every.mul_f64(0.8);
        fleet.sample(&sample, old, gap, MAX_SAMPLES).await?;
        return Ok(());
    }
    let sample = take_sample(state, state.metrics.signed_per_app()).await?;
    // Without an old app there is nothing to drain: never quiet.
    let old = old.unwrap_or_default();
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
    Ok(())
}

pub fn spawn_sampler(state: Arc<AppState>) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = record(&state).await {
                tracing::debug!(error = %e, "status sample skipped");
            }
            let every = state.live().settings.status.sample_every;
            tokio::time::sleep(every).await;
        }
    });
}

/// What the page shows, from this replica or from the fleet.
struct Data {
    samples: Vec<Sample>,
    /// Signed authorizations per app now (the occupancy is read beside them, in `snapshot`).
    signed: BTreeMap<String, u64>,
    quiet_since: Option<u64>,
    rest: BTreeMap<String, RestView>,
    clients: Vec<Value>,
    last_webhook: HashMap<String, u64>,
    fleet: Value,
}

async fn gather(state: &AppState, now: u64) -> Data {
    let live = state.live();
    let old = live.settings.status.old_app.as_deref();
    let local = |fleet: Value| Data {
        samples: state.status.samples.lock().unwrap().iter().cloned().collect(),
        signed: state.metrics.signed_per_app(),
        quiet_since: *state.status.quiet_since.lock().unwrap(),
        rest: state.status.rest.lock().unwrap().clone(),
        clients: state.clients.snapshot(now, old),
        last_webhook: state.webhooks.last_seen(),
        fleet,
    };
    let Some(fleet) = &state.fleet else { return local(json!({"shared": false})) };
    // A failed read still has the last view it read, if any.
    let (read, error) = match fleet.read(now, old).await {
        Ok(d) => (Some(d), None),
        Err((d, e)) => (d, Some(e)),
    };
    let shown = crate::fleet::describe(fleet, read.as_ref(), error.as_deref(), now);
    match read {
        Some(d) => Data {
            samples: d.samples,
            signed: d.signed,
            quiet_since: d.quiet_since,
            rest: d.rest,
            clients: d.clients,
            last_webhook: d.last_webhook,
            fleet: shown,
        },
        // Never read: this replica's own view, marked stale.
        None => local(shown),
    }
}

pub async fn snapshot(state: &AppState) -> Value {
    let live = state.live();
    let cfg = &live.settings.status;
    let now = now_ms();
    let Data { samples, signed, quiet_since, rest, clients, last_webhook, fleet } = gather(state, now).await;
    // The occupancy is shared state already (memory: this replica's; Redis: everyone's).
    let current = match take_sample(state, signed.clone()).await {
        Ok(current) => current,
        Err(e) => {
            tracing::warn!(error = %e, "redis: cannot read occupancy");
            Sample { t: now, signed, occupied: BTreeMap::new(), rollout_percent: None }
        }
    };
    let total: u64 = current.signed.values().sum();
    let recent = recent_share(&samples, &current, now);
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
                    "last_webhook_ms": last_webhook.get(app),
                    "recent_share": recent.as_ref().map(|r| r.get(app).copied().unwrap_or(0.0)),
                    "rest": rest.get(app),
                }),
            )
        })
        .collect();
    let (drained, reason) = verdict(cfg, &samples, &current, &rest, quiet_since, now);
    json!({
        "apps": apps,
        "recent_window_secs": RECENT_MS / 1000,
        "drain": {"app": cfg.old_app, "window_secs": cfg.drain_window.as_secs(), "drained": drained,
                  "quiet_since_ms": quiet_since, "reason": reason},
        "history": samples,
        // Which client builds still keep the old app alive: most of the day's auths on old first.
        "clients": clients,
        // The target beside the measured share per app (`apps.*.share`).
        "rollout": live.settings.rollout.as_ref().map(|r| json!({
            "from": r.from, "to": r.to, "percent": r.percent, "version": r.version,
        })),
        // With Redis: every replica's view of the whole fleet, the replicas and their drift.
        "fleet": fleet,
        // Each app's health per replica and the failover decision in force.
        "failover": crate::failover::routes::describe(state, &live),
        // What the recovery buffer holds (memory mode; Redis keeps its own Streams).
        "recovery": live.settings.recovery.as_ref().map(|r| {
            let held = state.recovery.size();
            json!({
                "window_secs": r.window.as_secs(),
                "store": if held.is_some() { "memory" } else { "redis" },
                "buffered_events": held.map(|h| h.0),
                "buffered_bytes": held.map(|h| h.1),
                "dropped_before_window": held.map(|h| h.2),
            })
        }),
        "generated_ms": now,
    })
}

/// Each app's share of the auths signed in the last `RECENT_MS` (None: none signed).
fn recent_share(samples: &[Sample], current: &Sample, now: u64) -> Option<BTreeMap<String, f64>> {
    let since = now.saturating_sub(RECENT_MS);
    let base = samples.iter().rev().find(|s| s.t <= since).or(samples.first());
    let recent = |app: &String| {
        let before = base.and_then(|b| b.signed.get(app)).copied().unwrap_or(0);
        current.signed.get(app).copied().unwrap_or(0).saturating_sub(before)
    };
    let total: u64 = current.signed.keys().map(recent).sum();
    (total > 0).then(|| {
        current
            .signed
            .keys()
            .map(|app| (app.clone(), (recent(app) as f64 / total as f64 * 1000.0).round() / 1000.0))
            .collect()
    })
}

/// Drained, and why (or why not): the first condition that blocks, by name.
fn verdict(
    cfg: &crate::config::StatusSettings,
    samples: &[Sample],
    current: &Sample,
    rest: &BTreeMap<String, crate::state::RestView>,
    quiet_since: Option<u64>,
    now: u64,
) -> (bool, String) {
    let Some(old) = cfg.old_app.as_deref() else {
        return (false, "no app to drain: name it with [status] old_app".into());
    };
    let window = cfg.drain_window.as_secs();
    let Some(quiet) = quiet_since else {
        let occupied = current.occupied.get(old).copied().unwrap_or(0);
        let signed = match (samples.iter().rev().nth(1), samples.last()) {
            (Some(a), Some(b)) => b
                .signed
                .get(old)
                .copied()
                .unwrap_or(0)
                .saturating_sub(a.signed.get(old).copied().unwrap_or(0)),
            _ => 0,
        };
        return (
            false,
            match (signed, occupied) {
                (0, 0) => format!("{old} authorized clients or had occupied channels in the last sample"),
                (0, n) => format!("{old} has {n} occupied channel(s) by its webhooks"),
                (n, 0) => format!("{old} signed {n} authorization(s) in the last sample interval"),
                (n, m) => format!(
                    "{old} signed {n} authorization(s) in the last sample interval and has {m} occupied channel(s)"
                ),
            },
        );
    };
    let view = rest.get(old).cloned().unwrap_or_default();
    match (view.checked_ms, view.listed) {
        (None, _) | (_, None) => {
            let why = view.error.map(|e| format!(": {e}")).unwrap_or_default();
            return (false, format!("the {old} app's REST channel list has not been read yet{why}"));
        }
        (_, Some(n)) if n > 0 => {
            return (
                false,
                format!("the {old} app's REST API still lists {n} occupied channel(s) (webhooks say none)"),
            );
        }
        (Some(t), _) if t < quiet => {
            return (false, format!("waiting for a REST channel list of {old} read during the quiet period"));
        }
        _ => {}
    }
    let quiet_secs = now.saturating_sub(quiet) / 1000;
    if quiet_secs < window {
        return (false, format!("quiet for {quiet_secs} s of the {window} s window"));
    }
    (true, format!("no authorization and no occupied channel for {quiet_secs} s; its REST API lists none"))
}

pub async fn status_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(snapshot(&state).await)
}

pub async fn status_page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(include_str!("status.html"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RestView;
    use std::time::Duration;

    fn cfg() -> crate::config::StatusSettings {
        crate::config::StatusSettings {
            old_app: Some("old".into()),
            drain_window: Duration::from_secs(60),
            sample_every: Duration::from_secs(10),
            reconcile_every: Duration::from_secs(60),
        }
    }

    fn sample(t: u64, old: u64, new: u64, occupied_old: usize) -> Sample {
        Sample {
            t,
            signed: [("old".to_owned(), old), ("new".to_owned(), new)].into(),
            occupied: [("old".to_owned(), occupied_old)].into(),
            rollout_percent: None,
        }
    }

    fn rest(checked_ms: Option<u64>, listed: Option<usize>) -> BTreeMap<String, RestView> {
        [("old".to_owned(), RestView { checked_ms, listed, ..RestView::default() })].into()
    }

    #[test]
    fn the_verdict_names_the_condition_that_blocks_it() {
        let now = 1_000_000;
        let s = [sample(now - 20_000, 5, 1, 0), sample(now - 10_000, 7, 1, 2)];
        let (drained, why) = verdict(&cfg(), &s, &s[1], &rest(Some(now), Some(0)), None, now);
        assert!(!drained);
        assert_eq!(
            why,
            "old signed 2 authorization(s) in the last sample interval and has 2 occupied channel(s)"
        );

        let quiet = Some(now - 120_000);
        let s = [sample(now - 20_000, 7, 1, 0), sample(now - 10_000, 7, 1, 0)];
        let (drained, why) = verdict(&cfg(), &s, &s[1], &rest(Some(now), Some(3)), quiet, now);
        assert!(!drained, "webhook counts alone never drain it");
        assert_eq!(why, "the old app's REST API still lists 3 occupied channel(s) (webhooks say none)");
        let (_, why) = verdict(&cfg(), &s, &s[1], &rest(None, None), quiet, now);
        assert!(why.starts_with("the old app's REST channel list has not been read yet"), "{why}");
        let (_, why) = verdict(&cfg(), &s, &s[1], &rest(Some(now - 130_000), Some(0)), quiet, now);
        assert!(why.starts_with("waiting for a REST channel list"), "{why}");
        let (drained, why) =
            verdict(&cfg(), &s, &s[1], &rest(Some(now - 1_000), Some(0)), Some(now - 30_000), now);
        assert_eq!((drained, why.as_str()), (false, "quiet for 30 s of the 60 s window"));
        let (drained, why) = verdict(&cfg(), &s, &s[1], &rest(Some(now - 1_000), Some(0)), quiet, now);
        assert!(drained, "{why}");
    }

    #[test]
    fn the_recent_share_counts_the_last_five_minutes_only() {
        let now = 10_000_000;
        // 1,000 auths on old long ago; in the last 5 minutes 10 on old, 30 on new.
        let samples = [sample(now - 600_000, 1_000, 0, 0), sample(now - RECENT_MS, 1_000, 0, 0)];
        let current = sample(now, 1_010, 30, 0);
        let recent = recent_share(&samples, &current, now).unwrap();
        assert_eq!((recent["old"], recent["new"]), (0.25, 0.75));
        assert_eq!(recent_share(&samples, &sample(now, 1_000, 0, 0), now), None, "none signed lately");
    }
}
