//! The failover loop of one replica: every `probe_secs`, probe both apps,
//! share the views, decide; with Redis, the decision is also read every
//! `REFRESH`, so replicas answer clients alike within that. A decision that
//! changes here is logged, counted and announced to live clients.

use super::{
    decide::{Failed, decide},
    probe::probe,
    shared::ReplicaView,
};
use crate::{doctor::ws::Session, outbound::now_ms, state::AppState};
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::time::Instant;

/// How often a replica reads the fleet's decision (with Redis).
const REFRESH: Duration = Duration::from_millis(500);
/// A failed app's channels and members are forgotten this long after it
/// failed (if it still is): its `channel_vacated` and `member_removed` never
/// come, and by then its clients have re-joined on the other app.
const FORGET_AFTER: Duration = Duration::from_secs(30);

pub fn spawn(state: Arc<AppState>) {
    tokio::spawn(probe_loop(state.clone()));
    if state.failover.shared.is_some() {
        tokio::spawn(refresh_loop(state));
    }
}

async fn probe_loop(state: Arc<AppState>) {
    let http = crate::outbound::http_client(Duration::from_secs(10));
    let mut sessions: HashMap<String, Session> = HashMap::new();
    loop {
        let live = state.live();
        let (Some(s), Some(r)) = (live.settings.failover.clone(), live.settings.rollout.clone()) else {
            sessions.clear();
            let previous = state.failover.decision();
            state.failover.clear();
            if let Some(previous) = previous {
                transition(&state, Some((*previous).clone()), None);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let started = Instant::now();
        let until = started + s.probe_timeout();
        sessions.retain(|name, _| *name == r.from || *name == r.to);
        let probes = [&r.from, &r.to].into_iter().filter_map(|name| live.settings.app(name)).map(|app| {
            let session = sessions.remove(app.name.as_str());
            let http = &http;
            async move {
                let (result, session) = probe(app, http, session, until).await;
                (app.name.to_string(), result, session, started.elapsed())
            }
        });
        for (name, result, session, took) in futures_util::future::join_all(probes).await {
            state.metrics.failover_probe(&name, result.is_ok(), took.as_secs_f64());
            state.failover.observed(&name, result, took.as_millis() as u64, now_ms());
            if let Some(session) = session {
                sessions.insert(name, session);
            }
        }
        round(&state, &s, (&r.from, &r.to)).await;
        tokio::time::sleep_until(started + s.probe_every).await;
    }
}

/// Shares this replica's views and decides: alone, or from every live
/// replica's views in Redis, the decision changed there by compare-and-set.
async fn round(state: &Arc<AppState>, s: &super::config::FailoverSettings, pair: (&str, &str)) {
    let now = now_ms();
    let own = state.failover.views(&[pair.0, pair.1]);
    let Some(shared) = &state.failover.shared else {
        let next = decide(state.failover.decision().as_deref(), &[&own], pair, now, s);
        return adopt(state, next);
    };
    let redirected = state
        .metrics
        .failover_redirected_counts()
        .into_iter()
        .map(|(from, to, n)| (format!("{from}>{to}"), n))
        .collect();
    let view = ReplicaView { replica: state.failover.replica.clone(), at_ms: now, apps: own, redirected };
    let exchanged = shared.exchange(&view, now).await;
    let (views, raw) = match exchanged {
        Ok(read) => read,
        Err(e) => return fleet_unreadable(state, e),
    };
    // Live: heard from within three probes (and a little).
    let live_ms = 3 * s.probe_every.as_millis() as u64 + 2_000;
    let live: Vec<_> = views.iter().filter(|v| v.at_ms + live_ms >= now).map(|v| &v.apps).collect();
    let current = parse(&raw);
    let next = decide(current.as_ref(), &live, pair, now, s);
    let in_force = if next == current {
        current
    } else {
        match shared.swap(&raw, &serde_json::to_string(&next).expect("serializes")).await {
            Ok(json) => parse(&json),
            Err(e) => return fleet_unreadable(state, e),
        }
    };
    state.failover.set_fleet(Ok(views));
    adopt(state, in_force);
}

fn fleet_unreadable(state: &AppState, e: redis::RedisError) {
    if state.failover.fleet().1.is_none() {
        tracing::warn!(error = %e, "failover: cannot reach redis; the last decision stays in force");
    }
    state.failover.set_fleet(Err(e.to_string()));
}

/// A decision as stored; anything unreadable is none.
fn parse(json: &str) -> Option<Failed> {
    serde_json::from_str(json).ok().flatten()
}

async fn refresh_loop(state: Arc<AppState>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let (Some(shared), true) = (&state.failover.shared, state.live().settings.failover.is_some()) else {
            continue;
        };
        if let Ok(json) = shared.decision().await {
            adopt(&state, parse(&json));
        }
    }
}

/// Puts `next` in force here; a change is logged, counted and announced.
pub fn adopt(state: &Arc<AppState>, next: Option<Failed>) {
    if let Some(previous) = state.failover.set_decision(next.clone()) {
        transition(state, previous, next);
    }
}

fn transition(state: &Arc<AppState>, previous: Option<Failed>, next: Option<Failed>) {
    if let Some(p) = previous.as_ref().filter(|p| next.as_ref().is_none_or(|n| n.from != p.from)) {
        state.metrics.failover_transition(&p.from, &p.to, false);
    }
    match &next {
        Some(f) => {
            tracing::warn!(
                from = %f.from, to = %f.to, reason = ?f.reason, since_ms = f.since_ms,
                "failover: clients of the failed app are sent to the healthy one"
            );
            state.metrics.failover_transition(&f.from, &f.to, true);
            forget_later(state.clone(), f.clone());
        }
        None => tracing::info!(
            from = previous.as_ref().map(|p| p.from.as_str()),
            "failover: over; clients go where the rollout assigns them again"
        ),
    }
    crate::rollout::announce::announce(state.clone());
}

/// After `FORGET_AFTER`, if `failed` is still in force: the failed app's
/// occupancy and members leave the merged webhook state (the host gets the
/// transitions it would have got; the presence bridge stops showing them).
/// Its REST channel list corrects the state when it is back (`reconcile`).
fn forget_later(state: Arc<AppState>, failed: Failed) {
    tokio::spawn(async move {
        tokio::time::sleep(FORGET_AFTER).await;
        if state.failover.decision().as_deref() != Some(&failed) {
            return;
        }
        let live = state.live();
        let apps: Vec<String> = live.settings.apps.keys().cloned().collect();
        let bridged = crate::webhooks::Bridged { presence: &live.settings.presence, apps: &apps };
        match state.webhooks.forget(&failed.from, now_ms(), bridged).await {
            Ok((forwarded, changes)) => {
                tracing::info!(app = %failed.from, forwarded, "failover: the failed app's occupancy is forgotten");
                crate::presence::publisher::announce(&state, &failed.from, changes, now_ms());
            }
            Err(e) => {
                tracing::warn!(app = %failed.from, error = %e, "failover: could not forget the failed app's occupancy")
            }
        }
    });
}
