//! Forwarding to the target apps: re-signed per app, concurrent, retried on
//! connection errors, timeouts, 429 and 5xx; and the answer per the success
//! policy.

use super::merge;
use crate::{
    config::{AppSettings, PublishSettings, PublishSuccess},
    metrics::Metrics,
    state::{AppState, Live},
};
use actix_web::{HttpResponse, http::StatusCode, web};
use futures_util::{StreamExt, stream::FuturesUnordered};
use serde_json::{Map, Value, json};
use std::{sync::Arc, time::Duration};

/// What to send to each target app.
pub struct Outgoing {
    pub method: reqwest::Method,
    pub suffix: String,
    pub extra: Vec<(String, String)>,
    pub body: web::Bytes,
}

/// How long a fan-out waits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// For every target (queries merge every answer; `success = "all"`).
    All,
    /// For the first target that takes it (writes with `success = "any"`): the
    /// others go on in the background, counted and logged as always, so a slow
    /// or dead app does not hold the host's publish.
    FirstSuccess,
}

/// One target's outcome after retries.
pub struct Forwarded {
    pub app: String,
    result: Result<(u16, web::Bytes), String>,
}

impl Forwarded {
    pub fn ok(&self) -> bool {
        matches!(self.result, Ok((s, _)) if (200..300).contains(&s))
    }

    fn summary(&self) -> Value {
        match &self.result {
            Ok((s, _)) => json!(s),
            Err(e) => json!(e),
        }
    }

    /// The target's JSON answer, when it succeeded.
    pub fn parsed(&self) -> Option<Value> {
        match &self.result {
            Ok((s, b)) if (200..300).contains(s) => serde_json::from_slice(b).ok(),
            _ => None,
        }
    }
}

fn retryable(result: &Result<(u16, web::Bytes), String>) -> bool {
    match result {
        Err(_) => true,
        Ok((s, _)) => *s == 429 || *s >= 500,
    }
}

/// A failed-over app gets one try, this long at most: its clients are on the
/// other app, and the healthy app's publish must not wait on it.
const FAILED_OVER_TIMEOUT: Duration = Duration::from_secs(1);

async fn forward_one(
    http: &reqwest::Client,
    publish: &PublishSettings,
    metrics: &Metrics,
    (target, failed_over): (&AppSettings, bool),
    out: &Outgoing,
    span: &mut crate::telemetry::traces::Span,
) -> Forwarded {
    let Outgoing { method, suffix, extra, body } = out;
    let path = format!("/apps/{}{suffix}", target.app_id);
    let retries = if failed_over { 0 } else { publish.retries };
    let mut attempt = 0;
    loop {
        let url = crate::outbound::signed_url(target, method.as_str(), &path, body, extra);
        let mut req = http.request(method.clone(), url);
        if failed_over {
            req = req.timeout(FAILED_OVER_TIMEOUT.min(publish.timeout));
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/json").body(body.clone());
        }
        let result = match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                // Errors are described without their URL: it carries auth_key and auth_signature.
                crate::outbound::read_capped(res, crate::outbound::MAX_REST_ANSWER_BYTES)
                    .await
                    .map(|b| (status, b.into()))
                    .map_err(|e| e.to_string())
            }
            Err(e) => {
                Err(if e.is_timeout() { "timeout".to_string() } else { "connection error".to_string() })
            }
        };
        let label = match &result {
            Ok((s, _)) => format!("{}xx", s / 100),
            Err(_) => "error".into(),
        };
        metrics.publish(&target.name, &label);
        if attempt < retries && retryable(&result) {
            attempt += 1;
            tracing::warn!(target_app = %target.name, attempt, result = %label, "publish: retrying");
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            continue;
        }
        span.set("result", || label.clone());
        span.set("attempts", || i64::from(attempt) + 1);
        return Forwarded { app: target.name.to_string(), result };
    }
}

/// Sends `out` to every target, concurrently, each in a task of its own; a
/// failed-over one is tried once, briefly. The results in target order: all of
/// them, or with `Wait::FirstSuccess` those in by the first success.
pub async fn fan_out(live: Arc<Live>, state: Arc<AppState>, out: Outgoing, wait: Wait) -> Vec<Forwarded> {
    let Some((publish, _)) = live.publishing() else { return Vec::new() };
    let failed = state.failover.in_force(&live.settings);
    let out = Arc::new(out);
    // Targets are checked against the apps at load, in the same config.
    let mut calls: FuturesUnordered<_> = publish
        .targets
        .iter()
        .filter(|t| live.settings.app(t).is_some())
        .enumerate()
        .map(|(i, name)| {
            let down = failed.as_ref().is_some_and(|f| &f.from == name);
            // A span per target (with [telemetry]): which app, how many tries, what
            // came back. Made here, in the request, whose span is its parent.
            let mut span = if crate::telemetry::traces::on() {
                use opentelemetry::trace::SpanKind;
                crate::telemetry::traces::Span::child("publish", SpanKind::Client, |a| {
                    a.add("target_app", &**name);
                    a.add("path", &*out.suffix);
                    a.add("failed_over", &down);
                })
            } else {
                crate::telemetry::traces::Span::none()
            };
            let (live, state, out, name) = (live.clone(), state.clone(), out.clone(), name.clone());
            let task = tokio::spawn(async move {
                let (publish, http) = live.publishing().expect("checked above, same config");
                let target = live.settings.app(&name).expect("checked above, same config");
                let r = forward_one(http, publish, &state.metrics, (target, down), &out, &mut span).await;
                tracing::info!(target_app = %r.app, result = %r.summary(), path = out.suffix, "publish");
                r
            });
            async move { (i, task.await) }
        })
        .collect();
    let mut results = Vec::new();
    while let Some((i, joined)) = calls.next().await {
        let Ok(r) = joined else { continue }; // a panicked forward: not delivered
        let ok = r.ok();
        results.push((i, r));
        if ok && wait == Wait::FirstSuccess {
            break; // the rest carry on, detached
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// 502 with each target's result.
pub fn not_delivered(results: &[Forwarded], message: &str) -> HttpResponse {
    let detail: Map<String, Value> = results.iter().map(|r| (r.app.clone(), r.summary())).collect();
    HttpResponse::BadGateway().json(json!({"error": message, "results": detail}))
}

/// The answer for writes: success per the policy, else the targets' results.
pub fn write_answer(publish: &PublishSettings, results: &[Forwarded]) -> HttpResponse {
    let ok = results.iter().filter(|r| r.ok()).count();
    let success = match publish.success {
        PublishSuccess::All => ok == results.len(),
        PublishSuccess::Any => ok > 0,
    };
    if success {
        // Event info (`info=…`) is merged like the channel queries.
        let bodies: Vec<Value> = results.iter().filter_map(Forwarded::parsed).collect();
        return HttpResponse::Ok().json(merge::channels(&bodies).unwrap_or_else(|| json!({})));
    }
    // A target's 4xx means the request itself is bad: pass the first one on.
    if let Some((status, body)) = results.iter().find_map(|r| match &r.result {
        Ok((s, b)) if (400..500).contains(s) && *s != 429 => Some((*s, b.clone())),
        _ => None,
    }) {
        return HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
            .content_type("application/json")
            .body(body);
    }
    not_delivered(results, "not delivered to every target app")
}
