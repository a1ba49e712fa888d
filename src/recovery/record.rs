//! The fan-out's hook: an event is kept *before* it is forwarded, and taken
//! back if no app took it. Kept after, a client recovering in the moment
//! between Pusher's delivery and the write would read past the event and
//! never get it (seen: one client of 100 reconnecting under a steady stream).

use super::Event;
use crate::state::{AppState, Live};
use serde_json::Value;
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;

/// How long a publish waits for the buffer before forwarding anyway: a slow
/// Redis never holds publishing up (an event kept later than this can be
/// missed by a reader in between, as before this hook).
const WAIT_FOR_BUFFER: Duration = Duration::from_millis(250);

/// Events kept for one publish, or still being kept.
pub enum Keeping {
    Kept(Vec<super::Kept>),
    Keeping(JoinHandle<Vec<super::Kept>>),
}

/// Starts keeping `events` (Pusher REST event objects, already checked) on
/// their channels when `[recovery]` is on, and waits for it (bounded).
pub async fn before(state: &Arc<AppState>, live: &Arc<Live>, events: &[&Value]) -> Option<Keeping> {
    live.settings.recovery.as_ref()?;
    let parsed: Vec<(Vec<String>, Event)> = events.iter().filter_map(|e| parse(e)).collect();
    let (state, live) = (state.clone(), live.clone());
    let mut keep = Box::pin(async move {
        let limits = live.settings.recovery.as_ref().expect("checked before the task");
        let k = state.recovery.record(&parsed, limits).await;
        let channels: usize = parsed.iter().map(|(c, _)| c.len()).sum();
        state.metrics.recovery_kept(k.is_some(), channels as u64);
        Vec::from_iter(k)
    });
    // The memory buffer keeps at once: polled here first, it needs no task nor
    // timer. What is still waiting (Redis) goes on in a task of its own, so the
    // writes run to the end even if this publish stops waiting.
    if let Some(kept) = futures_util::FutureExt::now_or_never(&mut keep) {
        return Some(Keeping::Kept(kept));
    }
    let mut task = tokio::spawn(keep);
    Some(match tokio::time::timeout(WAIT_FOR_BUFFER, &mut task).await {
        Ok(done) => Keeping::Kept(done.unwrap_or_default()),
        Err(_) => Keeping::Keeping(task),
    })
}

/// After the fan-out: what no app accepted is taken back.
pub async fn after(state: &AppState, keeping: Option<Keeping>, accepted: bool) {
    let kept = match keeping {
        None => return,
        Some(_) if accepted => return, // a task still keeping finishes on its own
        Some(Keeping::Kept(kept)) => kept,
        Some(Keeping::Keeping(task)) => task.await.unwrap_or_default(),
    };
    for k in kept {
        let n = k.len();
        state.recovery.forget(k).await;
        state.metrics.recovery_withdrawn(n as u64);
    }
}

/// The channels and the event to keep, or None for one without a name or data.
fn parse(event: &Value) -> Option<(Vec<String>, Event)> {
    let text = |k: &str| event.get(k).and_then(Value::as_str);
    let channels: Vec<String> = match (event.get("channels"), text("channel")) {
        (Some(Value::Array(list)), _) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        (_, Some(one)) => vec![one.to_owned()],
        _ => return None,
    };
    let kept = Event {
        seq: 0,
        at_ms: 0,
        name: text("name")?.to_owned(),
        data: text("data")?.to_owned(),
        socket_id: text("socket_id").map(str::to_owned),
    };
    Some((channels, kept))
}
