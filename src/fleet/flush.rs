//! This replica's part of the fleet view: its row and the counts it has not
//! sent yet, flushed every `FLUSH_EVERY` and once more on shutdown (so a
//! rolling restart loses none; a SIGKILL at most one interval).

use super::{Counts, FLUSH_EVERY, Fleet, ReplicaRow};
use redis::RedisResult;
use std::sync::Arc;

/// What a replica reports. The process state implements it, so the fleet
/// never reaches into the state that holds it.
pub trait Reporter: Send + Sync + 'static {
    /// The fleet view, when the webhook state is in Redis.
    fn fleet(&self) -> Option<&Fleet>;
    /// This replica's row; `stopping`: the last one, which takes it off the list.
    fn row(&self, fleet: &Fleet, stopping: bool) -> ReplicaRow;
    /// The counts not flushed yet (taken once, then retried as they are).
    fn counts(&self) -> Counts;
    /// Whether the last flush reached Redis (every `FLUSH_EVERY`: Redis's health as this replica sees it).
    fn flushed(&self, ok: bool);
}

/// Sends the row and counts (None without Redis).
pub async fn flush(reporter: &impl Reporter, stopping: bool) -> Option<RedisResult<()>> {
    let fleet = reporter.fleet()?;
    let row = reporter.row(fleet, stopping);
    Some(fleet.flush(|| reporter.counts(), &row).await)
}

/// Flushes every `FLUSH_EVERY` (with Redis); failures are logged and shown by
/// the fleet view, once per outage.
pub fn spawn(reporter: Arc<impl Reporter>) {
    if reporter.fleet().is_none() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            if let Some(result) = flush(&*reporter, false).await {
                reporter.flushed(result.is_ok());
            }
        }
    });
}
