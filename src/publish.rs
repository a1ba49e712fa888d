//! Publish once, deliver on every target app: a Pusher REST-compatible surface
//! (`/apps/{id}/events`, `/batch_events`, channel queries, terminate
//! connections). Requests are verified exactly as Pusher does against the
//! `[publish]` credential, then re-signed and forwarded to each target app
//! concurrently; queries are merged across apps.

use crate::{
    config::{AppSettings, PublishSettings, PublishSuccess},
    pusher::rest::{check_body_md5, verify_rest_query},
    routes::read_body,
    startup::{AppState, Live},
};
use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Pusher's limits (rest-api docs; the official libraries use the same numbers).
const MAX_DATA_BYTES: usize = 10 * 1024;
const MAX_CHANNELS: usize = 100;
const MAX_BATCH: usize = 10;
const MAX_NAME_LEN: usize = 200;
/// Body caps per route: an event is at most 10 KiB of data (JSON-escaped, it can
/// double) plus 100 channel names; a batch is ten of them; terminate has none.
const MAX_EVENT_BODY: usize = 64 * 1024;
const MAX_BATCH_BODY: usize = 256 * 1024;
const MAX_EMPTY_BODY: usize = 1024;

pub struct Publisher {
    http: reqwest::Client,
}

impl Publisher {
    pub fn new(settings: &PublishSettings) -> anyhow::Result<Self> {
        Ok(Self { http: crate::outbound::http_client(settings.timeout) })
    }
}

fn now() -> i64 {
    crate::outbound::now_secs()
}

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message.into()}))
}

/// A refusal before anything is forwarded: status and message.
#[derive(Debug)]
struct Reject(StatusCode, String);

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl actix_web::ResponseError for Reject {
    fn status_code(&self) -> StatusCode {
        self.0
    }
    fn error_response(&self) -> HttpResponse {
        error(self.0, self.1.clone())
    }
}

/// What to send to each target app.
struct Outgoing<'a> {
    method: reqwest::Method,
    suffix: &'a str,
    extra: &'a [(String, String)],
    body: &'a [u8],
}

/// One target's outcome after retries.
struct Forwarded {
    app: String,
    result: Result<(u16, web::Bytes), String>,
}

impl Forwarded {
    fn ok(&self) -> bool {
        matches!(self.result, Ok((s, _)) if (200..300).contains(&s))
    }
    fn summary(&self) -> Value {
        match &self.result {
            Ok((s, _)) => json!(s),
            Err(e) => json!(e),
        }
    }
}

fn retryable(result: &Result<(u16, web::Bytes), String>) -> bool {
    match result {
        Err(_) => true,
        Ok((s, _)) => *s == 429 || *s >= 500,
    }
}

async fn forward_one(live: &Live, state: &AppState, target: &AppSettings, out: &Outgoing<'_>) -> Forwarded {
    let publisher = live.publisher.as_ref().expect("publish configured");
    let publish = live.settings.publish.as_ref().expect("publish configured");
    let Outgoing { method, suffix, extra, body } = out;
    let (extra, body) = (*extra, *body);
    let path = format!("/apps/{}{suffix}", target.app_id);
    let mut attempt = 0;
    loop {
        let url = crate::outbound::signed_url(target, method.as_str(), &path, body, extra);
        let mut req = publisher.http.request(method.clone(), url);
        if !body.is_empty() {
            req = req.header("content-type", "application/json").body(body.to_vec());
        }
        let result = match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                // Errors are described without their URL: it carries auth_key and auth_signature.
                res.bytes().await.map(|b| (status, b)).map_err(|e| e.without_url().to_string())
            }
            Err(e) => {
                Err(if e.is_timeout() { "timeout".to_string() } else { "connection error".to_string() })
            }
        };
        let label = match &result {
            Ok((s, _)) => format!("{}xx", s / 100),
            Err(_) => "error".into(),
        };
        state.metrics.publish(&target.name, &label);
        if attempt < publish.retries && retryable(&result) {
            attempt += 1;
            tracing::warn!(target_app = %target.name, attempt, result = %label, "publish: retrying");
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            continue;
        }
        return Forwarded { app: target.name.to_string(), result };
    }
}

async fn fan_out(live: &Live, state: &AppState, out: Outgoing<'_>) -> Vec<Forwarded> {
    let publish = live.settings.publish.as_ref().expect("publish configured");
    let calls = publish.targets.iter().map(|t| {
        let target = live.settings.app(t).expect("validated target");
        forward_one(live, state, target, &out)
    });
    let results = futures_util::future::join_all(calls).await;
    for r in &results {
        tracing::info!(target_app = %r.app, result = %r.summary(), path = out.suffix, "publish");
    }
    results
}

/// Checks the path's app id and the query's signature (which covers
/// `body_md5`), before any body byte is read; returns the query params.
fn verify(
    req: &HttpRequest,
    publish: &PublishSettings,
    app_id: &str,
) -> Result<Vec<(String, String)>, Reject> {
    if app_id != publish.app_id {
        return Err(Reject(
            StatusCode::NOT_FOUND,
            format!("Unknown app_id {}", crate::pusher::quote(app_id)),
        ));
    }
    let params: Vec<(String, String)> =
        form_urlencoded::parse(req.query_string().as_bytes()).into_owned().collect();
    let secret = publish.secret.expose_secret();
    verify_rest_query(req.method().as_str(), req.path(), &params, now(), |k| {
        (k == publish.key.as_ref()).then_some(secret)
    })
    .map_err(unauthorized)?;
    Ok(params)
}

fn unauthorized(e: crate::pusher::rest::RestAuthError) -> Reject {
    Reject(StatusCode::UNAUTHORIZED, e.to_string())
}

/// The request's own params, to forward: everything but the auth params.
fn forwardable(params: Vec<(String, String)>) -> Vec<(String, String)> {
    params.into_iter().filter(|(k, _)| !k.starts_with("auth_") && k != "body_md5").collect()
}

/// A user id or channel name that becomes a path segment of the outgoing
/// request: Pusher's name characters only, and never `.`/`..` (which a URL
/// parser would resolve into another path).
fn path_segment(value: &str, what: &str) -> Result<(), Reject> {
    let ok = (1..=MAX_NAME_LEN).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=@,.;".contains(&b))
        && value.bytes().any(|b| b != b'.');
    if ok {
        Ok(())
    } else {
        Err(Reject(StatusCode::BAD_REQUEST, format!("invalid {what} {}", crate::pusher::quote(value))))
    }
}

/// Validates one event against Pusher's limits.
fn check_event(event: &Value) -> Result<(), Reject> {
    let bad = |m: &str| Err(Reject(StatusCode::BAD_REQUEST, m.into()));
    let Some(name) = event.get("name").and_then(Value::as_str) else { return bad("name is required") };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("event name must be 1-200 characters");
    }
    let Some(data) = event.get("data").and_then(Value::as_str) else { return bad("data must be a string") };
    if data.len() > MAX_DATA_BYTES {
        return Err(Reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            "data content of this event exceeds the allowed maximum (10240 bytes)".into(),
        ));
    }
    let channels: Vec<&str> = match (event.get("channels"), event.get("channel")) {
        (Some(Value::Array(a)), None) => a.iter().filter_map(Value::as_str).collect(),
        (None, Some(Value::String(c))) => vec![c.as_str()],
        _ => return bad("give channels (an array) or channel (a string)"),
    };
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return bad("an event goes to 1-100 channels");
    }
    if channels.len() > 1 && channels.iter().any(|c| c.starts_with("private-encrypted-")) {
        return bad("cannot trigger to multiple channels if any are encrypted");
    }
    Ok(())
}

/// The answer for writes: success per the policy, else the targets' results.
fn write_answer(publish: &PublishSettings, results: &[Forwarded]) -> HttpResponse {
    let ok = results.iter().filter(|r| r.ok()).count();
    let success = match publish.success {
        PublishSuccess::All => ok == results.len(),
        PublishSuccess::Any => ok > 0,
    };
    if success {
        // Event info (`info=…`) is merged like the channel queries.
        let bodies: Vec<Value> = results.iter().filter_map(parse_ok).collect();
        return HttpResponse::Ok().json(merge_channels(&bodies).unwrap_or_else(|| json!({})));
    }
    let detail: Map<String, Value> = results.iter().map(|r| (r.app.clone(), r.summary())).collect();
    // A target's 4xx means the request itself is bad: pass the first one on.
    if let Some((status, body)) = results.iter().find_map(|r| match &r.result {
        Ok((s, b)) if (400..500).contains(s) && *s != 429 => Some((*s, b.clone())),
        _ => None,
    }) {
        return HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
            .content_type("application/json")
            .body(body);
    }
    HttpResponse::BadGateway().json(json!({"error": "not delivered to every target app", "results": detail}))
}

fn parse_ok(r: &Forwarded) -> Option<Value> {
    match &r.result {
        Ok((s, b)) if (200..300).contains(s) => serde_json::from_slice(b).ok(),
        _ => None,
    }
}

fn add_counts(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Number(a)), Value::Number(b)) => {
                *into.get_mut(k).unwrap() = json!(a.as_u64().unwrap_or(0) + b.as_u64().unwrap_or(0));
            }
            (Some(Value::Bool(a)), Value::Bool(b)) => *a = *a || *b,
            (None, _) => {
                into.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

/// `{"channels":{name:{counts}}}` bodies → one, with counts summed.
fn merge_channels(bodies: &[Value]) -> Option<Value> {
    let mut channels = Map::new();
    let mut any = false;
    for b in bodies {
        if let Some(Value::Object(cs)) = b.get("channels") {
            any = true;
            for (name, info) in cs {
                let entry = channels.entry(name.clone()).or_insert_with(|| json!({}));
                if let (Value::Object(into), Value::Object(from)) = (entry, info) {
                    add_counts(into, from);
                }
            }
        }
    }
    any.then(|| json!({ "channels": channels }))
}

fn publish_settings(live: &Live) -> Result<&PublishSettings, Reject> {
    live.settings
        .publish
        .as_ref()
        .ok_or_else(|| Reject(StatusCode::NOT_FOUND, "publishing is not configured ([publish])".into()))
}

/// Verifies the request, then reads the body (capped, with the server's body
/// deadline) and checks it against the signed `body_md5`: what every write starts with.
async fn verified(
    req: &HttpRequest,
    live: &Live,
    publish: &PublishSettings,
    app_id: &str,
    payload: web::Payload,
    limit: usize,
) -> Result<(web::Bytes, Vec<(String, String)>), Reject> {
    let params = verify(req, publish, app_id)?;
    let body = read_body(req, payload, limit, live.settings.server.body_timeout)
        .await
        .map_err(|e| Reject(e.status_and_code().0, e.to_string()))?;
    check_body_md5(&params, &body).map_err(unauthorized)?;
    Ok((body, forwardable(params)))
}

async fn events(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Reject> {
    let live = state.live();
    let publish = publish_settings(&live)?;
    let (body, extra) = verified(&req, &live, publish, &path, payload, MAX_EVENT_BODY).await?;
    let event: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err(Reject(StatusCode::BAD_REQUEST, "body must be a JSON object".into())),
    };
    check_event(&event)?;
    let out = Outgoing { method: reqwest::Method::POST, suffix: "/events", extra: &extra, body: &body };
    Ok(write_answer(publish, &fan_out(&live, &state, out).await))
}

async fn batch_events(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Reject> {
    let live = state.live();
    let publish = publish_settings(&live)?;
    let (body, extra) = verified(&req, &live, publish, &path, payload, MAX_BATCH_BODY).await?;
    let bad = |m: &str| Reject(StatusCode::BAD_REQUEST, m.into());
    let Some(Value::Array(batch)) =
        serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("batch").cloned())
    else {
        return Err(bad("body must be {\"batch\": [...]}"));
    };
    if batch.is_empty() || batch.len() > MAX_BATCH {
        return Err(bad("a batch holds 1-10 events"));
    }
    for event in &batch {
        if event.get("channels").is_some() {
            return Err(bad("batch events take one channel each"));
        }
        check_event(event)?;
    }
    let out = Outgoing { method: reqwest::Method::POST, suffix: "/batch_events", extra: &extra, body: &body };
    let results = fan_out(&live, &state, out).await;
    let answer = write_answer(publish, &results);
    // batch_events answers {} or, with info, {"batch":[…]}: pass the first target's body on.
    Ok(match results.iter().find_map(parse_ok) {
        Some(v) if answer.status().is_success() => HttpResponse::Ok().json(v),
        _ => answer,
    })
}

async fn terminate(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Reject> {
    let live = state.live();
    let publish = publish_settings(&live)?;
    let (app_id, user_id) = path.into_inner();
    path_segment(&user_id, "user id")?;
    let (_, extra) = verified(&req, &live, publish, &app_id, payload, MAX_EMPTY_BODY).await?;
    let suffix = format!("/users/{user_id}/terminate_connections");
    let out = Outgoing { method: reqwest::Method::POST, suffix: &suffix, extra: &extra, body: b"" };
    Ok(write_answer(publish, &fan_out(&live, &state, out).await))
}

/// GET queries, merged: channel lists united (counts summed), a channel
/// occupied if it is on any app, presence users united by id.
async fn query(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Reject> {
    let live = state.live();
    let publish = publish_settings(&live)?;
    let app_id = req.match_info().get("app_id").unwrap_or_default().to_owned();
    if let Some(channel) = req.match_info().get("channel") {
        path_segment(channel, "channel name")?;
    }
    let extra = forwardable(verify(&req, publish, &app_id)?);
    let suffix = req.path().trim_start_matches(&format!("/apps/{app_id}")).to_owned();
    let results = fan_out(
        &live,
        &state,
        Outgoing { method: reqwest::Method::GET, suffix: &suffix, extra: &extra, body: b"" },
    )
    .await;
    if let Some(bad) = results.iter().find(|r| !r.ok()) {
        let detail: Map<String, Value> = results.iter().map(|r| (r.app.clone(), r.summary())).collect();
        tracing::warn!(target_app = %bad.app, "publish query: a target failed");
        return Ok(HttpResponse::BadGateway()
            .json(json!({"error": "a target app did not answer", "results": detail})));
    }
    let bodies: Vec<Value> = results.iter().filter_map(parse_ok).collect();
    let merged = if suffix.ends_with("/users") {
        let mut seen = std::collections::BTreeSet::new();
        let users: Vec<Value> = bodies
            .iter()
            .filter_map(|b| b.get("users")?.as_array().cloned())
            .flatten()
            .filter(|u| seen.insert(u.get("id").map(Value::to_string).unwrap_or_default()))
            .collect();
        json!({ "users": users })
    } else if let Some(m) = merge_channels(&bodies) {
        m
    } else {
        let mut one = Map::new();
        for b in &bodies {
            if let Value::Object(o) = b {
                add_counts(&mut one, o);
            }
        }
        Value::Object(one)
    };
    Ok(HttpResponse::Ok().json(merged))
}

/// The routes; `configured` keeps them unmatched while `[publish]` is not set.
pub fn configure(cfg: &mut web::ServiceConfig, configured: impl actix_web::guard::Guard + 'static) {
    cfg.service(
        web::scope("/apps/{app_id}")
            .guard(configured)
            .route("/events", web::post().to(events))
            .route("/batch_events", web::post().to(batch_events))
            .route("/channels", web::get().to(query))
            .route("/channels/{channel}", web::get().to(query))
            .route("/channels/{channel}/users", web::get().to(query))
            .route("/users/{user_id}/terminate_connections", web::post().to(terminate)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_lists_are_united_with_counts_summed() {
        let a = json!({"channels": {"presence-a": {"user_count": 2}, "private-x": {}}});
        let b = json!({"channels": {"presence-a": {"user_count": 3}, "private-y": {}}});
        assert_eq!(
            merge_channels(&[a, b]).unwrap(),
            json!({"channels": {"presence-a": {"user_count": 5}, "private-x": {}, "private-y": {}}})
        );
    }

    #[test]
    fn events_are_checked_against_pusher_limits() {
        assert!(check_event(&json!({"name": "e", "data": "{}", "channels": ["a", "b"]})).is_ok());
        let too_big = json!({"name": "e", "data": "x".repeat(10_241), "channel": "a"});
        assert_eq!(check_event(&too_big).unwrap_err().0, 413);
        let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
        assert_eq!(check_event(&json!({"name": "e", "data": "", "channels": many})).unwrap_err().0, 400);
        let enc = json!({"name": "e", "data": "", "channels": ["private-encrypted-a", "b"]});
        assert_eq!(check_event(&enc).unwrap_err().0, 400);
        assert_eq!(check_event(&json!({"name": "e", "data": {}, "channel": "a"})).unwrap_err().0, 400);
    }
}
