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
pub use redis_store::{RedisStore, bounded, connect as connect_redis};
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

/// Who is present in a bridged channel through each app: (app, [(user id, info JSON)]).
pub type BridgeSnapshot = Vec<(String, Vec<(String, Option<String>)>)>;

/// Remembered member infos per channel (memory mode); Pusher allows 100 members per presence channel.
const MAX_INFOS_PER_CHANNEL: usize = 1_000;
/// Channels with remembered infos (memory mode): signed-in users name channels.
const MAX_INFO_CHANNELS: usize = 10_000;

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
    /// Memory mode: bridged presence members' `user_info` per channel (bounded per channel).
    infos: Mutex<HashMap<String, HashMap<String, String>>>,
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
            infos: Mutex::default(),
            readers: crate::fair_share::FairShare::new(MAX_CONCURRENT_BODIES, MAX_BODIES_PER_CLIENT),
            outbox,
            inbox: Mutex::new(Some(inbox)),
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
    pub async fn apply(
        &self,
        app: &str,
        digest: &Digest,
        events: &[Value],
        time_ms: u64,
        now_ms: u64,
        window_ms: u64,
    ) -> redis::RedisResult<Applied> {
        match &self.store {
            Store::Memory(merge) => {
                // One lock order (seen, then merge) and one critical section: a repeat
                // arriving concurrently cannot be applied twice.
                let mut seen = self.seen.lock().unwrap();
                if seen.contains(digest, now_ms) {
                    return Ok(Applied::Duplicate);
                }
                let out: Vec<Value> = {
                    let mut merge = merge.lock().unwrap();
                    events.iter().filter_map(|e| merge.apply(app, e)).collect()
                };
                seen.insert(*digest, time_ms.max(now_ms) + window_ms, now_ms);
                let n = out.len();
                if !out.is_empty() {
                    let _ = self.outbox.send((time_ms, out));
                }
                Ok(Applied::Forwarded(n))
            }
            Store::Redis(redis) => {
                // Remembered as long as memory mode does: until the webhook's own time leaves the window.
                let ttl_ms = time_ms.max(now_ms) + window_ms - now_ms;
                Ok(match redis.apply_webhook(app, digest, events, time_ms, ttl_ms).await? {
                    None => Applied::Duplicate,
                    Some(n) => Applied::Forwarded(n),
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
        match self.apply(app, &digest, &events, now_ms, now_ms, 1).await? {
            Applied::Forwarded(n) => Ok(n),
            Applied::Duplicate => Ok(0),
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
    /// JSON) and returns who is present through each of `apps`, with their info.
    pub async fn bridge_join(
        &self,
        channel: &str,
        member: Option<(&str, &str)>,
        apps: &[String],
    ) -> redis::RedisResult<BridgeSnapshot> {
        match &self.store {
            Store::Memory(m) => {
                let m = m.lock().unwrap();
                let mut infos = self.infos.lock().unwrap();
                if let Some((user, info)) = member {
                    if infos.len() >= MAX_INFO_CHANNELS && !infos.contains_key(channel) {
                        // Channels named by signed-in users are many: keep those with members.
                        infos.retain(|c, known| known.keys().any(|u| m.is_member(c, u)));
                    }
                    if infos.len() >= MAX_INFO_CHANNELS && !infos.contains_key(channel) {
                        return Ok(Self::present_on(&m, None, channel, apps));
                    }
                    let known = infos.entry(channel.to_owned()).or_default();
                    if known.len() >= MAX_INFOS_PER_CHANNEL && !known.contains_key(user) {
                        // Forget those present through no app (left, or authorized and never came).
                        known.retain(|u, _| m.is_member(channel, u));
                    }
                    if known.len() < MAX_INFOS_PER_CHANNEL || known.contains_key(user) {
                        known.insert(user.to_owned(), info.to_owned());
                    }
                }
                Ok(Self::present_on(&m, infos.get(channel), channel, apps))
            }
            Store::Redis(r) => r.bridge_join(channel, member, apps).await,
        }
    }

    /// Who is present in `channel` through each of `apps`, with the infos known.
    fn present_on(
        m: &MergeState,
        known: Option<&HashMap<String, String>>,
        channel: &str,
        apps: &[String],
    ) -> BridgeSnapshot {
        apps.iter()
            .map(|app| {
                let users = m.members_on(channel, app);
                (
                    app.clone(),
                    users.into_iter().map(|u| (u.clone(), known.and_then(|k| k.get(&u).cloned()))).collect(),
                )
            })
            .collect()
    }

    /// A bridged member's remembered `user_info` (JSON), if any.
    pub async fn member_info(&self, channel: &str, user: &str) -> redis::RedisResult<Option<String>> {
        match &self.store {
            Store::Memory(_) => {
                Ok(self.infos.lock().unwrap().get(channel).and_then(|k| k.get(user).cloned()))
            }
            Store::Redis(r) => r.member_info(channel, user).await,
        }
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
    /// Applied; this many transitions were queued to forward.
    Forwarded(usize),
}

#[cfg(test)]
mod bridge_tests {
    use super::*;

    #[tokio::test]
    async fn remembered_infos_stay_bounded_when_users_name_many_channels() {
        let w = Webhooks::new(None).unwrap();
        let apps = vec!["new".to_owned()];
        // A real member of one channel, present through "old".
        let Store::Memory(m) = &w.store else { panic!("memory store") };
        m.lock().unwrap().seed_member("old", "presence-real", "u1");
        w.bridge_join("presence-real", Some(("u1", r#"{"name":"One"}"#)), &apps).await.unwrap();
        // A signed-in user authorizes for 10,050 made-up bridged channels.
        for i in 0..MAX_INFO_CHANNELS + 50 {
            w.bridge_join(&format!("presence-junk-{i}"), Some(("mallory", "null")), &apps).await.unwrap();
        }
        let (len, kept) = {
            let infos = w.infos.lock().unwrap();
            (infos.len(), infos.contains_key("presence-real"))
        };
        assert!(len <= MAX_INFO_CHANNELS, "{len} channels remembered");
        assert!(kept, "the channel with a member kept its info");
        assert_eq!(w.member_info("presence-real", "u1").await.unwrap().as_deref(), Some(r#"{"name":"One"}"#));
    }
}
