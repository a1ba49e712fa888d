//! The presence bridge's queue of member changes to publish (drained by
//! `presence_bridge`'s publisher), beside the webhook outbox; and the counting
//! and once-per-burst warnings of what the bridge leaves out.

use crate::{burst::Burst, metrics::Metrics};
use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};
use tokio::sync::mpsc;

/// One change, ready to publish.
pub struct Queued {
    /// (source app, channel, user): a round keeps each one's latest.
    pub member: (String, String, String),
    pub targets: Vec<String>,
    /// The event's data (JSON text).
    pub data: String,
}

/// The queue of changes to publish, and the warnings of what the bridge drops.
pub struct BridgeQueue {
    tx: mpsc::UnboundedSender<Queued>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Queued>>>,
    queued: AtomicUsize,
    dropped: Burst,
    failed: Burst,
    evicted: Burst,
    omitted: Burst,
}

impl Default for BridgeQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            queued: AtomicUsize::new(0),
            dropped: Burst::default(),
            failed: Burst::default(),
            evicted: Burst::default(),
            omitted: Burst::default(),
        }
    }
}

impl BridgeQueue {
    /// Counts (and warns of, once per burst) infos forgotten to make room.
    pub fn evicted(&self, metrics: &Metrics, evicted: super::infos::Evicted) {
        if !evicted.any() {
            return;
        }
        for (reason, n) in
            [("channel_cap", evicted.channel), ("user_cap", evicted.user), ("total_cap", evicted.total)]
        {
            metrics.presence_dropped("info", reason, n);
        }
        if let Some(n) = self.evicted.hit(evicted.channel + evicted.user + evicted.total) {
            tracing::warn!(
                evicted = n,
                "presence bridge: remembered member infos forgotten to stay within presence.max_infos_per_channel, \
                 max_channels_per_user or max_infos"
            );
        }
    }

    /// Counts (and warns of, once per burst) a member list left out of an answer.
    pub fn omitted(&self, metrics: &Metrics, reason: &'static str) {
        metrics.presence_dropped("list", reason, 1);
        if let Some(n) = self.omitted.hit(1) {
            tracing::warn!(
                omitted = n,
                reason,
                "presence bridge: channels authorized without their member list (presence.max_answer_bytes, \
                 or [rate_limit])"
            );
        }
    }

    /// Queues one change unless `max` are waiting.
    pub fn push(&self, change: Queued, max: usize, metrics: &Metrics) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= max {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            for target in &change.targets {
                metrics.presence_bridge(target, "dropped");
            }
            metrics.presence_dropped("change", "queue_full", 1);
            if let Some(n) = self.dropped.hit(1) {
                tracing::warn!(
                    dropped = n,
                    max,
                    "presence bridge: member changes dropped, presence.max_queued_changes are waiting to be published"
                );
            }
            return;
        }
        let _ = self.tx.send(change);
    }

    /// The receiving end, for the one publisher task.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Queued>> {
        self.rx.lock().unwrap().take()
    }

    /// `n` changes were taken off the queue.
    pub fn taken(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// Warns (once per burst) of `n` changes `target`'s REST API did not accept.
    pub fn failed(&self, target: &str, n: u64) {
        if let Some(n) = self.failed.hit(n) {
            tracing::warn!(app = target, failed = n, "presence bridge: changes not accepted by the REST API");
        }
    }
}
