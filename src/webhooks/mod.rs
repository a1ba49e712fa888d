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

pub(crate) mod config;
mod merge;
pub(crate) mod reconcile;
mod redis_store;
mod replay;
pub(crate) mod routes;
pub(crate) mod sender;

pub use merge::MergeState;
pub use redis_store::RedisStore;
pub use replay::{AgeError, Digest, SeenWebhooks, check_age, digest};

use serde_json::Value;
use std::{collections::HashMap, sync::Mutex};
use tokio::sync::mpsc;

/// Where merge state and the outbox live (chosen at start; not hot-reloaded).
pub enum Store {
    Memory(Mutex<MergeState>),
    Redis(RedisStore),
}

/// Webhook bodies read at once. Pusher sends a few webhooks a second; beyond
/// this a webhook gets 503 at once, unread (Pusher retries for 5 minutes), so
/// connections holding bodies open cannot grow memory past this many bodies.
pub const MAX_CONCURRENT_BODIES: usize = 64;
/// Of those, one client (address, IPv6 /64) reads at most this many: the key
/// checked before the body is public (every page has it), so strangers can
/// send webhooks too, and must not hold every slot while Pusher's wait.
pub const MAX_BODIES_PER_CLIENT: usize = 16;
/// A webhook body arrives in one go from Pusher; a sender dribbling it out
/// gives its slot back after this long (or `server.body_timeout_ms`, if shorter).
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

pub use crate::presence::infos::BridgeSnapshot;

/// What applying a webhook needs of the live config for the presence bridge.
#[derive(Clone, Copy)]
pub struct Bridged<'a> {
    pub presence: &'a crate::config::PresenceSettings,
    /// Every configured app.
    pub apps: &'a [String],
}

/// A real change of who is present in a bridged channel through the app a
/// webhook came from (a repeated join, or a leave of someone not there, is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberChange {
    /// Its event's place in the webhook: orders the changes of one webhook.
    pub seq: usize,
    pub channel: String,
    pub user: String,
    pub present: bool,
    /// The info remembered at the member's authorization (joins only).
    pub info: Option<String>,
    /// Apps where the channel has subscribers (occupied, or members present),
    /// or was authorized through within `infos::RECENT_AUTH_MS` (the webhook
    /// saying so may be on its way).
    pub subscribed: Vec<String>,
}

/// Events to forward, with the `time_ms` of the webhook they came in.
pub type Batch = (u64, Vec<Value>);

/// Process-wide webhook state (outlives config reloads).
pub struct Webhooks {
    pub store: Store,
    /// Unix ms of the last verified webhook per app (this replica).
    last_seen: Mutex<HashMap<String, u64>>,
    /// Webhooks applied within the replay window (memory mode).
    seen: Mutex<SeenWebhooks>,
    /// Slots to read a body (MAX_CONCURRENT_BODIES, MAX_BODIES_PER_CLIENT).
    readers: crate::fair_share::FairShare,
    /// Memory mode: bridged presence members' `user_info` (bounded, see `infos`).
    infos: Mutex<crate::presence::infos::Infos>,
    outbox: mpsc::UnboundedSender<Batch>,
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Batch>>>,
    /// The presence bridge's member changes to publish.
    pub bridge: crate::presence::queue::BridgeQueue,
}

impl Webhooks {
    pub fn new(settings: Option<&crate::config::WebhookSettings>) -> anyhow::Result<Self> {
        let store = match settings {
            Some(crate::config::WebhookSettings {
                store: crate::config::WebhookStore::Redis { url, prefix, acks },
                ..
            }) => Store::Redis(RedisStore::new(url, prefix, *acks)?),
            _ => Store::Memory(Mutex::default()),
        };
        let (outbox, inbox) = mpsc::unbounded_channel();
        Ok(Self {
            store,
            last_seen: Mutex::default(),
            seen: Mutex::default(),
            infos: Mutex::default(),
            readers: crate::fair_share::FairShare::new(MAX_CONCURRENT_BODIES, MAX_BODIES_PER_CLIENT),
            outbox,
            inbox: Mutex::new(Some(inbox)),
            bridge: crate::presence::queue::BridgeQueue::default(),
        })
    }

    /// Records a verified webhook from `app` at `at_ms`.
    pub fn saw(&self, app: &str, at_ms: u64) {
        self.last_seen.lock().unwrap().insert(app.to_owned(), at_ms);
    }

    /// Unix ms of the last verified webhook per app (this replica).
    pub fn last_seen(&self) -> HashMap<String, u64> {
        self.last_seen.lock().unwrap().clone()
    }

    /// Occupied channels per app, from the merged state.
    pub async fn occupied_counts(&self, apps: &[String]) -> redis::RedisResult<HashMap<String, usize>> {
        match &self.store {
            Store::Memory(m) => Ok(m.lock().unwrap().occupied_counts()),
            Store::Redis(r) => r.occupied_counts(apps).await,
        }
    }

    /// A slot to read one webhook body for `client`, if one is free and the
    /// client is within its share.
    pub fn try_reader(
        &self,
        client: std::net::IpAddr,
    ) -> Result<crate::fair_share::Slot<'_>, crate::fair_share::Refused> {
        self.readers.try_acquire(client)
    }

    /// Applies one verified webhook (`digest` of its app and body) unless it was
    /// applied within the window; transitions to forward are queued with its `time_ms`.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        app: &str,
        digest: &Digest,
        events: &[Value],
        time_ms: u64,
        now_ms: u64,
        window_ms: u64,
        bridged: Bridged<'_>,
    ) -> redis::RedisResult<Applied> {
        match &self.store {
            Store::Memory(merge) => {
                // One lock order (seen, merge, infos) and one critical section: a repeat
                // arriving concurrently cannot be applied twice.
                let mut seen = self.seen.lock().unwrap();
                if seen.contains(digest, now_ms) {
                    return Ok(Applied::Duplicate);
                }
                let (out, changes) = {
                    let mut merge = merge.lock().unwrap();
                    let mut infos = self.infos.lock().unwrap();
                    let mut out = Vec::new();
                    let mut changes = Vec::new();
                    for (seq, event) in events.iter().enumerate() {
                        let (forward, moved) = merge.apply_tracked(app, event);
                        let merged = forward.is_some();
                        out.extend(forward);
                        let field = |name: &str| event.get(name).and_then(Value::as_str);
                        let (Some(present), Some(channel), Some(user)) =
                            (moved, field("channel"), field("user_id"))
                        else {
                            continue;
                        };
                        if !bridged.presence.bridged(channel) {
                            continue;
                        }
                        if present {
                            infos.joined(channel, user);
                        } else if merged {
                            infos.left(channel, user);
                        }
                        let since = now_ms.saturating_sub(crate::presence::infos::RECENT_AUTH_MS);
                        let recent: Vec<&str> = infos.authorized_since(channel, since).collect();
                        let occupied: Vec<&str> = merge.occupied_by(channel).collect();
                        let subscribed = bridged
                            .apps
                            .iter()
                            .filter(|a| {
                                let a = a.as_str();
                                occupied.contains(&a) || recent.contains(&a) || merge.has_members(channel, a)
                            })
                            .cloned()
                            .collect();
                        let info = if present { infos.info(channel, user).map(str::to_owned) } else { None };
                        changes.push(MemberChange {
                            seq,
                            channel: channel.to_owned(),
                            user: user.to_owned(),
                            present,
                            info,
                            subscribed,
                        });
                    }
                    (out, changes)
                };
                seen.insert(*digest, time_ms.max(now_ms) + window_ms, now_ms);
                let n = out.len();
                if !out.is_empty() {
                    let _ = self.outbox.send((time_ms, out));
                }
                Ok(Applied::Forwarded(n, changes))
            }
            Store::Redis(redis) => {
                // Remembered as long as memory mode does: until the webhook's own time leaves the window.
                let ttl_ms = time_ms.max(now_ms) + window_ms - now_ms;
                Ok(match redis.apply_webhook(app, digest, events, time_ms, ttl_ms, bridged).await? {
                    None => Applied::Duplicate,
                    Some((n, changes)) => Applied::Forwarded(n, changes),
                })
            }
        }
    }

    /// The channels the merged state has occupied on `app`.
    pub async fn occupied_on(&self, app: &str) -> redis::RedisResult<Vec<String>> {
        match &self.store {
            Store::Memory(m) => Ok(m.lock().unwrap().occupied_on(app)),
            Store::Redis(r) => r.occupied_on(app).await,
        }
    }

    /// Applies corrections found by a periodic reconcile, as the webhooks that
    /// went missing would have: `channel_occupied` for `added`, `channel_vacated`
    /// for `removed`; transitions of the merged state are forwarded to the host.
    pub async fn correct(
        &self,
        app: &str,
        added: &[String],
        removed: &[String],
        now_ms: u64,
    ) -> redis::RedisResult<usize> {
        let event = |name: &str, channel: &String| serde_json::json!({"name": name, "channel": channel});
        let events: Vec<Value> = added
            .iter()
            .map(|c| event("channel_occupied", c))
            .chain(removed.iter().map(|c| event("channel_vacated", c)))
            .collect();
        if events.is_empty() {
            return Ok(0);
        }
        // Its own digest: never taken for a repeat of a webhook.
        let id = uuid::Uuid::new_v4();
        let digest = replay::digest(app, id.as_bytes());
        // Occupancy only: no member changes to bridge.
        let presence = crate::config::PresenceSettings::default();
        let bridged = Bridged { presence: &presence, apps: &[] };
        match self.apply(app, &digest, &events, now_ms, now_ms, 1, bridged).await? {
            Applied::Forwarded(n, _) => Ok(n),
            Applied::Duplicate => Ok(0),
        }
    }

    /// Forgets everything the merged state holds of `app` (failed over: its
    /// `member_removed` and `channel_vacated` will not come), as those webhooks
    /// would have: the host gets the transitions of the merged state, and the
    /// member changes for the presence bridge are returned.
    pub async fn forget(
        &self,
        app: &str,
        now_ms: u64,
        bridged: Bridged<'_>,
    ) -> redis::RedisResult<(usize, Vec<MemberChange>)> {
        let mut events = Vec::new();
        for channel in self.occupied_on(app).await? {
            if channel.starts_with("presence-") {
                for user in self.members_on(&channel, app).await? {
                    events.push(
                        serde_json::json!({"name": "member_removed", "channel": channel, "user_id": user}),
                    );
                }
            }
            events.push(serde_json::json!({"name": "channel_vacated", "channel": channel}));
        }
        if events.is_empty() {
            return Ok((0, Vec::new()));
        }
        // Its own digest: never taken for a repeat of a webhook.
        let digest = replay::digest(app, uuid::Uuid::new_v4().as_bytes());
        match self.apply(app, &digest, &events, now_ms, now_ms, 1, bridged).await? {
            Applied::Forwarded(n, changes) => Ok((n, changes)),
            Applied::Duplicate => Ok((0, Vec::new())),
        }
    }

    /// The members the merged state has present in `channel` through `app`.
    async fn members_on(&self, channel: &str, app: &str) -> redis::RedisResult<Vec<String>> {
        match &self.store {
            Store::Memory(m) => Ok(m.lock().unwrap().members_on(channel, app, usize::MAX)),
            Store::Redis(r) => r.members_on(channel, app).await,
        }
    }

    /// Seeds occupied channels and presence members of `app` (start-up reconciliation).
    pub async fn seed(
        &self,
        app: &str,
        channels: &[String],
        members: &[(String, String)],
    ) -> redis::RedisResult<()> {
        match &self.store {
            Store::Memory(m) => {
                let mut m = m.lock().unwrap();
                channels.iter().for_each(|c| m.seed_occupied(app, c));
                members.iter().for_each(|(c, u)| m.seed_member(app, c, u));
            }
            Store::Redis(r) => r.seed(app, channels, members).await?,
        }
        Ok(())
    }

    /// For a bridged presence channel: remembers `member`'s info (user id, info
    /// JSON), authorized through `via`, within `limits`; and unless `listed` is
    /// 0, returns at most `listed` members present through each of `apps`, with
    /// their infos. Also what made room for the info.
    pub async fn bridge_join(
        &self,
        channel: &str,
        member: (&str, &str),
        via: &str,
        apps: &[String],
        listed: usize,
        limits: &crate::config::PresenceSettings,
    ) -> redis::RedisResult<(Option<BridgeSnapshot>, crate::presence::infos::Evicted)> {
        match &self.store {
            Store::Memory(m) => {
                let m = m.lock().unwrap();
                let mut infos = self.infos.lock().unwrap();
                let now = crate::outbound::now_ms();
                let evicted = infos
                    .remember((channel, member.0, member.1), via, now, limits, |u| m.is_member(channel, u));
                let lists = (listed > 0).then(|| Self::present_on(&m, &infos, channel, apps, listed));
                Ok((lists, evicted))
            }
            Store::Redis(r) => {
                let remember = crate::presence::redis_infos::Remember {
                    conn: r.conn(),
                    prefix: r.prefix(),
                    script: &r.remember,
                };
                remember.bridge_join(channel, member, via, apps, listed, limits).await
            }
        }
    }

    /// Who is present in `channel` through each of `apps` (at most `listed`
    /// each), with the infos known.
    fn present_on(
        m: &MergeState,
        infos: &crate::presence::infos::Infos,
        channel: &str,
        apps: &[String],
        listed: usize,
    ) -> BridgeSnapshot {
        apps.iter()
            .map(|app| {
                let users = m.members_on(channel, app, listed);
                let with_info = users
                    .into_iter()
                    .map(|u| {
                        let info = infos.info(channel, &u).map(str::to_owned);
                        (u, info)
                    })
                    .collect();
                (app.clone(), with_info)
            })
            .collect()
    }

    /// The in-process outbox's receiving end, for the one sender task.
    pub fn take_inbox(&self) -> Option<mpsc::UnboundedReceiver<Batch>> {
        self.inbox.lock().unwrap().take()
    }
}

/// What applying a webhook did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied within the replay window already: nothing changed.
    Duplicate,
    /// Applied; this many transitions were queued to forward, and these
    /// members of bridged channels changed.
    Forwarded(usize, Vec<MemberChange>),
}

#[cfg(test)]
mod bridge_tests {
    use super::*;
    use crate::config::PresenceSettings;
    use serde_json::json;

    fn limits() -> PresenceSettings {
        PresenceSettings {
            bridge: vec![crate::pusher::PresencePattern::parse("presence-*").unwrap()],
            ..PresenceSettings::default()
        }
    }

    async fn webhook(w: &Webhooks, app: &str, n: u8, events: Value) -> Vec<MemberChange> {
        let events = events.as_array().unwrap().clone();
        let digest = replay::digest(app, &[n]);
        let now = crate::outbound::now_ms();
        let apps = ["new".to_owned(), "old".to_owned(), "third".to_owned()];
        let bridged = Bridged { presence: &limits(), apps: &apps };
        match w.apply(app, &digest, &events, now, now, 60_000, bridged).await.unwrap() {
            Applied::Forwarded(_, changes) => changes,
            Applied::Duplicate => panic!("not a repeat"),
        }
    }

    #[tokio::test]
    async fn forgetting_a_failed_app_vacates_what_only_it_held_and_removes_its_members() {
        let w = Webhooks::new(None).unwrap();
        let mut forwarded = w.take_inbox().unwrap();
        let occupy = |c: &str| json!({"name": "channel_occupied", "channel": c});
        let join = |c: &str, u: &str| json!({"name": "member_added", "channel": c, "user_id": u});
        webhook(&w, "old", 0, json!([occupy("only-old"), occupy("both"), occupy("presence-r")])).await;
        webhook(&w, "old", 1, json!([join("presence-r", "7"), join("presence-r", "8")])).await;
        webhook(&w, "new", 2, json!([occupy("both"), occupy("presence-r"), join("presence-r", "8")])).await;
        while forwarded.try_recv().is_ok() {}

        let apps = ["new".to_owned(), "old".to_owned()];
        let bridged = Bridged { presence: &limits(), apps: &apps };
        let (n, changes) = w.forget("old", crate::outbound::now_ms(), bridged).await.unwrap();
        let mut told: Vec<String> = Vec::new();
        while let Ok((_, events)) = forwarded.try_recv() {
            told.extend(events.iter().map(|e| format!("{} {}", e["name"], e["channel"]).replace('"', "")));
        }
        told.sort();
        // The host hears what it would have heard had old's webhooks come: only-old is
        // vacated, user 7 left presence-r; both and presence-r stay occupied through new,
        // and 8 is still present there.
        assert_eq!(told, ["channel_vacated only-old", "member_removed presence-r"]);
        assert_eq!(n, 2);
        assert!(w.occupied_on("old").await.unwrap().is_empty());
        assert_eq!(w.occupied_on("new").await.unwrap().len(), 2);
        let left: Vec<(&str, bool)> = changes.iter().map(|c| (c.user.as_str(), c.present)).collect();
        assert_eq!(left, [("7", false), ("8", false)], "the bridge is told each member left old");
        assert_eq!(w.forget("old", crate::outbound::now_ms(), bridged).await.unwrap().0, 0, "once");
    }

    #[tokio::test]
    async fn one_user_naming_many_channels_keeps_its_newest_infos_only() {
        let w = Webhooks::new(None).unwrap();
        let apps = vec!["new".to_owned()];
        let Store::Memory(m) = &w.store else { panic!("memory store") };
        m.lock().unwrap().seed_member("old", "presence-real", "u1");
        w.bridge_join("presence-real", ("u1", r#"{"name":"One"}"#), "old", &apps, 0, &limits())
            .await
            .unwrap();
        // A signed-in user authorizes for 10,050 made-up bridged channels.
        let mut evicted = 0;
        for i in 0..10_050 {
            let c = format!("presence-junk-{i}");
            evicted +=
                w.bridge_join(&c, ("mallory", "null"), "old", &apps, 0, &limits()).await.unwrap().1.user;
        }
        assert_eq!(w.infos.lock().unwrap().len(), 101, "mallory's 100 newest and u1's");
        assert_eq!(evicted, 9_950);
        let infos = w.infos.lock().unwrap();
        assert!(infos.info("presence-junk-10049", "mallory").is_some());
        assert!(infos.info("presence-junk-9949", "mallory").is_none());
        assert_eq!(infos.info("presence-real", "u1"), Some(r#"{"name":"One"}"#));
    }

    #[tokio::test]
    async fn only_real_changes_are_reported_with_the_apps_subscribed() {
        let w = Webhooks::new(None).unwrap();
        let add = json!({"name": "member_added", "channel": "presence-r", "user_id": "7"});
        let rm = json!({"name": "member_removed", "channel": "presence-r", "user_id": "7"});
        w.bridge_join("presence-r", ("7", r#"{"n":7}"#), "old", &[], 0, &limits()).await.unwrap();
        webhook(&w, "new", 0, json!([{"name": "channel_occupied", "channel": "presence-r"}])).await;
        let changes = webhook(&w, "old", 1, json!([add, add, rm, rm, add])).await;
        let seen: Vec<(usize, bool, Option<&str>)> =
            changes.iter().map(|c| (c.seq, c.present, c.info.as_deref())).collect();
        // Joined, then left every app: its info is forgotten by the next join.
        assert_eq!(seen, [(0, true, Some(r#"{"n":7}"#)), (2, false, None), (4, true, None)]);
        assert_eq!(changes[0].subscribed, ["new", "old"], "occupied on new, authorized through old just now");
        // Authorized anew (moving to another app) before leaving: kept for its join there.
        w.bridge_join("presence-r", ("7", r#"{"n":8}"#), "new", &[], 0, &limits()).await.unwrap();
        webhook(&w, "old", 2, json!([rm])).await;
        assert_eq!(w.infos.lock().unwrap().info("presence-r", "7"), Some(r#"{"n":8}"#));
        let changes = webhook(&w, "new", 3, json!([add])).await;
        assert_eq!(changes[0].info.as_deref(), Some(r#"{"n":8}"#));
        // A member present through third (no channel_occupied from it, no recent authorization there).
        let nine = json!({"name": "member_added", "channel": "presence-r", "user_id": "9"});
        webhook(&w, "third", 5, json!([nine])).await;
        let ten = json!({"name": "member_added", "channel": "presence-r", "user_id": "10"});
        let changes = webhook(&w, "old", 6, json!([ten])).await;
        assert!(changes[0].subscribed.contains(&"third".to_owned()), "{changes:?}");
        let unbridged = json!({"name": "member_added", "channel": "private-x", "user_id": "7"});
        assert!(webhook(&w, "old", 4, json!([unbridged])).await.is_empty());
    }
}
