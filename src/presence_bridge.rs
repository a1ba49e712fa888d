//! The presence bridge: during a move, members of a bridged presence channel
//! (`[presence] bridge`) on one app are shown to the members on the others.
//!
//! Each app's webhooks say who joined and left through it (the merge state
//! keeps who is present through which app); every such change is published,
//! through each other app's REST API, as an event of our own (`EVENT`) on the
//! same channel. The JS helper merges those into the channel's members, so app
//! code sees one list. A client learns the other apps' current members in its
//! authorization answer (`presence_bridge`): only someone the host lets into
//! the channel learns its members, as with Pusher's own member list.
//! Changes carry the source webhook's `time_ms` and their place in it (`seq`):
//! replicas publish concurrently, and the helper keeps the latest per member.

use crate::state::AppState;
use serde_json::{Value, json};
use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

/// The event name: no app publishes it (pusher-js hands it to the helper's merge).
pub const EVENT: &str = "dual-auth:presence";
/// Members of one app listed in an authorization answer (Pusher allows 100).
const MAX_LISTED: usize = 1_000;

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| crate::outbound::http_client(Duration::from_secs(5)))
}

/// Tells every app but `source` of the member changes on bridged channels in
/// one applied webhook from `source` (in the background, in order).
pub fn announce(state: Arc<AppState>, source: &str, events: &[Value], time_ms: u64) {
    let live = state.live();
    let changes: Vec<(String, String, bool)> = events
        .iter()
        .filter_map(|e| {
            let present = match e.get("name")?.as_str()? {
                "member_added" => true,
                "member_removed" => false,
                _ => return None,
            };
            let channel = e.get("channel")?.as_str()?;
            let user = e.get("user_id")?.as_str()?;
            live.settings.presence.bridged(channel).then(|| (channel.to_owned(), user.to_owned(), present))
        })
        .collect();
    if changes.is_empty() {
        return;
    }
    let targets: Vec<String> = live.settings.apps.keys().filter(|a| *a != source).cloned().collect();
    let source = source.to_owned();
    tokio::spawn(async move {
        for (seq, (channel, user, present)) in changes.into_iter().enumerate() {
            let info = match present {
                true => state.webhooks.member_info(&channel, &user).await.ok().flatten(),
                false => None,
            };
            let info: Value = info.and_then(|i| serde_json::from_str(&i).ok()).unwrap_or(Value::Null);
            let data = json!({"app": source, "user_id": user, "user_info": info, "present": present,
                              "time_ms": time_ms, "seq": seq})
            .to_string();
            let body = json!({"name": EVENT, "channel": channel, "data": data}).to_string();
            for target in &targets {
                publish(&state, target, &body).await;
            }
        }
    });
}

/// One change to one app, retried briefly (a member list that misses one
/// catches up at the member's next change, or the client's next subscription).
async fn publish(state: &AppState, target: &str, body: &str) {
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=3 {
        let live = state.live();
        let Some(app) = live.settings.app(target) else { return };
        let path = format!("/apps/{}/events", app.app_id);
        let url = crate::outbound::signed_url(app, "POST", &path, body.as_bytes(), &[]);
        let sent =
            http().post(url).header("content-type", "application/json").body(body.to_owned()).send().await;
        let status = sent.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
        if (200..300).contains(&status) {
            state.metrics.presence_bridge(target, "sent");
            return;
        }
        tracing::warn!(app = target, status, attempt, "presence bridge: change not accepted");
        if attempt < 3 {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    state.metrics.presence_bridge(target, "failed");
}

/// The other apps' members of a bridged channel, for an authorization answer:
/// `{"<app>": {"<user_id>": <user_info or null>, …}, …}`; remembers `member`'s info.
pub async fn snapshot(
    webhooks: &crate::webhooks::Webhooks,
    channel: &str,
    member: (&str, &str),
    others: &[String],
) -> Option<Value> {
    match webhooks.bridge_join(channel, Some(member), others).await {
        Ok(per_app) => Some(Value::Object(
            per_app
                .into_iter()
                .map(|(app, users)| {
                    let users = users
                        .into_iter()
                        .take(MAX_LISTED)
                        .map(|(u, info)| {
                            (u, info.and_then(|i| serde_json::from_str(&i).ok()).unwrap_or(Value::Null))
                        })
                        .collect();
                    (app, Value::Object(users))
                })
                .collect(),
        )),
        Err(e) => {
            // The authorization is not refused for it: the members come with the next changes.
            tracing::warn!(error = %e, "presence bridge: members not read (redis)");
            None
        }
    }
}
