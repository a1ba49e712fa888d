//! The background sender: delivers merged webhooks to the host in order,
//! signed, retrying with backoff (memory: a queue; Redis: the shared outbox
//! with leases, so a crashed replica's deliveries are taken over).

use super::{Batch, RedisStore, Store};
use crate::state::AppState;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Starts the webhook sender (once per process).
pub fn spawn(state: std::sync::Arc<AppState>) {
    let Some(mut inbox) = state.webhooks.take_inbox() else { return };
    let http = crate::outbound::http_client(Duration::from_secs(10));
    if let Store::Redis(_) = &state.webhooks.store {
        tokio::spawn(async move {
            let Store::Redis(redis) = &state.webhooks.store else { return };
            // Sure at start: nothing of ours is being delivered, so our list may be swept.
            let mut unsure = true;
            let mut swept = Instant::now();
            loop {
                if unsure || swept.elapsed() >= LEASE_SWEEP {
                    match sweep(redis).await {
                        Ok(()) => (unsure, swept) = (false, Instant::now()),
                        Err(e) => {
                            tracing::warn!(error = %e, "redis: outbox unavailable; retrying in 1 s");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                match redis.next_batch(BATCH).await {
                    Ok(items) if !items.is_empty() => {
                        // In order, one delivery per run of events from webhooks of the same `time_ms`.
                        let events: Vec<(u64, Value)> =
                            items.iter().map(String::as_str).map(RedisStore::unwrap_item).collect();
                        let mut events = events.into_iter().peekable();
                        while let Some((time_ms, event)) = events.next() {
                            let mut run = vec![event];
                            while let Some((_, more)) = events.next_if(|(t, _)| *t == time_ms) {
                                run.push(more);
                            }
                            deliver(&state, &http, time_ms, run).await;
                        }
                        // Until Redis takes it: the batch would otherwise be delivered again.
                        while let Err(e) = redis.done().await {
                            tracing::warn!(error = %e, "redis: cannot mark a delivery done; retrying in 1 s");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    Err(e) => {
                        // The move may have happened with its answer lost: swept before the next.
                        unsure = true;
                        tracing::warn!(error = %e, "redis: outbox unavailable; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        return;
    }
    tokio::spawn(async move {
        let mut carried: Option<Batch> = None;
        loop {
            let next = match carried.take() {
                Some(batch) => Some(batch),
                None => inbox.recv().await,
            };
            let Some((time_ms, mut events)) = next else { return };
            // Batch what piled up in order, as long as it came with the same source time.
            while let Ok((t, more)) = inbox.try_recv() {
                if t != time_ms {
                    carried = Some((t, more));
                    break;
                }
                events.extend(more);
            }
            deliver(&state, &http, time_ms, events).await;
        }
    });
}

/// Events a Redis sender takes from the outbox at once: a backlog (a burst of
/// webhooks, a host back from an outage) costs two Redis round trips per this
/// many events, not two per event. A crash mid-batch delivers its delivered
/// part again (at-least-once, as a crash between a delivery and its removal did).
const BATCH: usize = 100;

/// How often a Redis sender renews its lease and re-queues what crashed replicas left.
const LEASE_SWEEP: Duration = Duration::from_secs(10);

/// Renews this replica's lease; re-queues its own stranded items and orphans.
async fn sweep(redis: &RedisStore) -> redis::RedisResult<()> {
    redis.heartbeat().await?;
    let own = redis.requeue_own().await?;
    let orphans = redis.requeue_orphans().await?;
    if own + orphans > 0 {
        tracing::warn!(own, orphans, "redis: re-queued undelivered webhook events");
    }
    Ok(())
}

/// Delivers with the source webhook's `time_ms`, so the host can order events;
/// with `[telemetry]` in a span of its own (a trace of its own: it outlives the
/// webhook request), whose `traceparent` the host receives.
async fn deliver(state: &AppState, http: &reqwest::Client, time_ms: u64, events: Vec<Value>) {
    if !crate::telemetry::traces::on() {
        deliver_untraced(state, http, time_ms, events, None).await;
        return;
    }
    use opentelemetry::trace::SpanKind;
    let mut span = crate::telemetry::traces::Span::root("webhook.forward", SpanKind::Client, |a| {
        a.add("events", &(events.len() as i64));
    });
    let trace = span.outgoing();
    let result = deliver_untraced(state, http, time_ms, events, trace).await;
    span.set("result", || result);
}

async fn deliver_untraced(
    state: &AppState,
    http: &reqwest::Client,
    time_ms: u64,
    events: Vec<Value>,
    trace: Option<crate::telemetry::traces::Outgoing>,
) -> &'static str {
    let body = serde_json::to_vec(&json!({"time_ms": time_ms, "events": events})).expect("serializes");
    let started = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        let live = state.live();
        let Some(settings) = live.settings.webhooks.as_ref() else { return "unconfigured" };
        let signature = crate::pusher::hmac_sha256_hex(settings.secret.expose_secret().as_bytes(), &body);
        let mut request = http
            .post(settings.forward_url.clone())
            .header("content-type", "application/json")
            .header("x-pusher-key", settings.key.as_ref())
            .header("x-pusher-signature", signature);
        if let Some(trace) = &trace {
            request = request.header("traceparent", &trace.traceparent);
            if let Some(state) = &trace.tracestate {
                request = request.header("tracestate", state);
            }
        }
        let result = request.body(body.clone()).send().await;
        let status = result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
        if (200..300).contains(&status) {
            state.metrics.webhook_delivery("delivered");
            return "delivered";
        }
        if started.elapsed() >= settings.retry_max {
            state.metrics.webhook_delivery("dropped");
            tracing::error!(
                status,
                events = events_len(&body),
                "webhook delivery given up after retry_max_secs"
            );
            return "dropped";
        }
        state.metrics.webhook_delivery("retried");
        tracing::warn!(status, retry_in_ms = delay.as_millis() as u64, "webhook delivery failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

fn events_len(body: &[u8]) -> usize {
    serde_json::from_slice::<Value>(body).ok().and_then(|v| v["events"].as_array().map(Vec::len)).unwrap_or(0)
}
