//! The fan-out's hook: events that at least one app accepted are kept.

use super::Event;
use crate::state::{AppState, Live};
use serde_json::Value;

/// Keeps each of `events` (Pusher REST event objects, already checked) on its
/// channels, when `[recovery]` is on and a target app accepted the publish.
pub async fn published(state: &AppState, live: &Live, events: &[&Value], accepted: bool) {
    let Some(limits) = live.settings.recovery.as_ref() else { return };
    if !accepted {
        return;
    }
    for event in events {
        let text = |k: &str| event.get(k).and_then(Value::as_str);
        let (Some(name), Some(data)) = (text("name"), text("data")) else { continue };
        let channels: Vec<&str> = match (event.get("channels"), text("channel")) {
            (Some(Value::Array(list)), _) => list.iter().filter_map(Value::as_str).collect(),
            (_, Some(one)) => vec![one],
            _ => continue,
        };
        let kept = Event {
            seq: 0,
            at_ms: 0,
            name: name.to_owned(),
            data: data.to_owned(),
            socket_id: text("socket_id").map(str::to_owned),
        };
        let ok = state.recovery.record(&channels, kept, limits).await;
        state.metrics.recovery_kept(ok, channels.len() as u64);
    }
}
