//! Recovery of missed events: every event published through the fan-out
//! (`/apps/{id}/events`, `/batch_events`) is kept per channel for a window,
//! in memory (one replica) or in a Redis Stream per channel (with `[webhooks]
//! state = "redis"`: every replica serves the same history). A client whose
//! connection dropped asks `POST /recover/{app}` for what came after the last
//! position it had, with the token its channel's authorization answer carried.
//!
//! An event is kept before it is forwarded (`record.rs` says why) and taken
//! back if no app accepted it. Publishing waits on the buffer at most a
//! quarter second: a Redis error is counted, and the channel is marked so
//! that a read across the outage says "gap" instead of pretending nothing was
//! missed.

pub(crate) mod buffer;
pub(crate) mod config;
pub(crate) mod record;
mod redis_stream;
pub(crate) mod routes;
pub(crate) mod token;

pub use buffer::Event;
pub use config::RecoverySettings;

use buffer::{Buffer, Read};
use std::sync::Mutex;

enum Store {
    Memory(Mutex<Buffer>),
    Redis(redis_stream::Streams),
}

/// The buffer, whichever store holds it (chosen at start, as the webhook store).
pub struct Recovery {
    store: Store,
}

/// Where an event was kept, per channel (to take it back).
pub enum Kept {
    Memory(Vec<(String, u64)>),
    Redis(Vec<(String, String)>),
}

impl Kept {
    /// On how many channels.
    pub fn len(&self) -> usize {
        match self {
            Self::Memory(v) => v.len(),
            Self::Redis(v) => v.len(),
        }
    }
}

/// One channel's answer to a read: its events, where to read from next, and
/// whether something in between is gone (and why).
pub struct ChannelRead {
    pub events: Vec<Event>,
    pub position: String,
    pub gap: Option<&'static str>,
}

impl Recovery {
    pub fn new(redis: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let store = match redis {
            Some((url, prefix)) => Store::Redis(redis_stream::Streams::new(url, prefix)?),
            None => {
                let epoch = format!("{:08x}", fastrand::u32(..));
                Store::Memory(Mutex::new(Buffer::new(epoch)))
            }
        };
        Ok(Self { store })
    }

    /// Keeps each of a publish's `events` on its channels (in Redis, all in one
    /// round trip): what to take back if no app takes them, or None. Never
    /// fails a publish: a store error is logged once per burst and becomes a
    /// gap for later readers.
    pub async fn record(&self, events: &[(Vec<String>, Event)], limits: &RecoverySettings) -> Option<Kept> {
        let now = crate::outbound::now_ms();
        match &self.store {
            Store::Memory(b) => {
                let mut b = b.lock().unwrap();
                let mut seqs = Vec::new();
                for (channels, event) in events {
                    for c in channels {
                        seqs.push((c.clone(), b.record(c, event.clone(), now, limits)));
                    }
                }
                Some(Kept::Memory(seqs))
            }
            Store::Redis(r) => {
                let calls: Vec<(Vec<&str>, &Event)> =
                    events.iter().map(|(c, e)| (c.iter().map(String::as_str).collect(), e)).collect();
                let ids = r.record(&calls, limits).await?;
                let kept =
                    events.iter().zip(ids).flat_map(|((channels, _), ids)| channels.iter().cloned().zip(ids));
                Some(Kept::Redis(kept.collect()))
            }
        }
    }

    /// Takes back what `record` kept: no app took the event, nobody got it live.
    pub async fn forget(&self, kept: Kept) {
        match (&self.store, kept) {
            (Store::Memory(b), Kept::Memory(seqs)) => {
                let mut b = b.lock().unwrap();
                for (channel, seq) in seqs {
                    b.remove(&channel, seq);
                }
            }
            (Store::Redis(r), Kept::Redis(ids)) => r.forget(&ids).await,
            _ => {}
        }
    }

    /// The events of `channel` after `since` (None: only the position to start from).
    pub async fn read(
        &self,
        channel: &str,
        since: Option<&str>,
        limits: &RecoverySettings,
    ) -> redis::RedisResult<ChannelRead> {
        match &self.store {
            Store::Memory(b) => {
                let mut b = b.lock().unwrap();
                b.expire(crate::outbound::now_ms(), limits);
                let Read { events, head, gap } = b.read(channel, since, limits.max_events_per_channel);
                Ok(ChannelRead { events, position: b.position(head), gap })
            }
            Store::Redis(r) => r.read(channel, since, limits).await,
        }
    }

    /// Events and bytes kept, and events dropped before their window ran out
    /// (memory mode; Redis keeps its own, `None`).
    pub fn size(&self) -> Option<(usize, usize, u64)> {
        match &self.store {
            Store::Memory(b) => {
                let b = b.lock().unwrap();
                let (events, bytes) = b.size();
                Some((events, bytes, b.dropped))
            }
            Store::Redis(_) => None,
        }
    }
}
