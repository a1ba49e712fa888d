//! Publishing member changes to the other apps: one queue per process
//! (`queue::BridgeQueue`, bounded by `presence.max_queued_changes`), one
//! task draining it in rounds. A round keeps each member's latest change only,
//! and sends each app its changes through `batch_events`, `BATCH` to a call.

use super::EVENT;
use crate::{presence::queue::Queued, state::AppState, webhooks::MemberChange};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, OnceLock},
    time::Duration,
};

/// Events per `batch_events` call (Pusher's limit on multi-tenant clusters).
pub const BATCH: usize = 10;
/// Changes taken from the queue for one round at most.
const ROUND: usize = 1_000;
/// Tries of one call; a target that refused a call this often gets one try
/// per further call of its round (its REST API is failing: the queue moves on).
const TRIES: u32 = 3;

/// Queues the member changes of one webhook from `source` for the apps where
/// the channel has subscribers (never `source` itself).
pub fn announce(state: &AppState, source: &str, changes: Vec<MemberChange>, time_ms: u64) {
    if changes.is_empty() {
        return;
    }
    let live = state.live();
    let max = live.settings.presence.max_queued_changes;
    for change in changes {
        let mut targets: Vec<String> = change
            .subscribed
            .into_iter()
            .filter(|a| a != source && live.settings.apps.contains_key(a))
            .collect();
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            continue; // nobody there to tell
        }
        let info: Value = change.info.and_then(|i| serde_json::from_str(&i).ok()).unwrap_or(Value::Null);
        let data =
            json!({"app": source, "user_id": change.user, "user_info": info, "present": change.present,
                          "time_ms": time_ms, "seq": change.seq})
            .to_string();
        let member = (source.to_owned(), change.channel, change.user);
        state.webhooks.bridge.push(Queued { member, targets, data }, max, &state.metrics);
    }
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| crate::outbound::http_client(Duration::from_secs(5)))
}

/// Starts the one task that publishes the queued changes (once per process).
pub fn spawn_publisher(state: Arc<AppState>) {
    let Some(mut rx) = state.webhooks.bridge.take_receiver() else { return };
    tokio::spawn(async move {
        let mut round = Vec::new();
        while rx.recv_many(&mut round, ROUND).await > 0 {
            state.webhooks.bridge.taken(round.len());
            publish_round(&state, std::mem::take(&mut round)).await;
        }
    });
}

/// Each member's latest change of the round, sent to each target app in
/// calls of `BATCH`, the apps at once.
async fn publish_round(state: &AppState, round: Vec<Queued>) {
    let mut latest: HashMap<(String, String, String), (usize, Queued)> = HashMap::new();
    for (at, change) in round.into_iter().enumerate() {
        let mut targets = change.targets.clone();
        if let Some((_, earlier)) = latest.remove(&change.member) {
            targets.extend(earlier.targets);
            targets.sort();
            targets.dedup();
        }
        latest.insert(change.member.clone(), (at, Queued { targets, ..change }));
    }
    let mut ordered: Vec<(usize, Queued)> = latest.into_values().collect();
    ordered.sort_by_key(|(at, _)| *at);
    let mut per_target: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, change) in ordered {
        let event = json!({"name": EVENT, "channel": change.member.1, "data": change.data});
        for target in change.targets {
            per_target.entry(target).or_default().push(event.clone());
        }
    }
    let sends = per_target.into_iter().map(|(target, events)| async move {
        let mut tries = TRIES;
        for chunk in events.chunks(BATCH) {
            let body = json!({"batch": chunk}).to_string();
            let sent = publish(state, &target, &body, tries).await;
            state.metrics.presence_bridge_n(
                &target,
                if sent { "sent" } else { "failed" },
                chunk.len() as u64,
            );
            if !sent {
                tries = 1;
                state.webhooks.bridge.failed(&target, chunk.len() as u64);
            }
        }
    });
    futures_util::future::join_all(sends).await;
}

/// One `batch_events` call to `target`, tried `tries` times (briefly: a member
/// list that misses a change catches up at the member's next change, or the
/// client's next subscription).
async fn publish(state: &AppState, target: &str, body: &str, tries: u32) -> bool {
    use crate::outbound::trigger::{self, Endpoint, Retry};
    let retry = Retry { tries, delay: Duration::from_millis(250) };
    let make = || {
        state.live().settings.app(target).map(|a| trigger::request(http(), a, Endpoint::BatchEvents, body))
    };
    let refused = |status, attempt| {
        tracing::debug!(app = target, status, attempt, "presence bridge: batch not accepted");
    };
    trigger::send(retry, make, refused).await
}
