//! `POST /auth/{app}` (channel authorization, single or batch) and
//! `POST /auth/{app}/user` (user sign-in).
//!
//! Order matters and is the security argument: validate everything the client
//! sent, then ask the host, then sign. Nothing is signed on any error path.

use super::RequestId;
use crate::body::read_body;
use crate::{
    auth_request::{Channels, parse_channel_request, parse_user_request},
    config::AppSettings,
    error::{AuthError, Refusal},
    metrics::Metrics,
    pusher::{
        ChannelAuth, ChannelKind, ChannelName, ProtocolError, SocketId, authenticate_user, authorize_channel,
    },
    session_check::{
        CheckKind, CheckRequest, ForwardedHeaders, HostAnswer, HostError, HostIdentity, Source,
        forwarded_headers,
    },
    state::{AppState, Live},
};
use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    http::{Method, StatusCode, header},
    web,
};
use futures_util::{StreamExt, stream};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Host checks of one batch run at most this many at a time.
const BATCH_CONCURRENCY: usize = 8;

fn ok_json(body: &impl serde::Serialize) -> HttpResponse {
    // A presence answer is about 300 bytes: serde_json's 128-byte start grew twice.
    let mut out = Vec::with_capacity(512);
    match serde_json::to_writer(&mut out, body) {
        Ok(()) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, header::HeaderValue::from_static("no-store")))
            .insert_header((header::CONTENT_TYPE, header::HeaderValue::from_static("application/json")))
            .body(out),
        // As actix's `.json()` answers it: a 500, nothing signed sent.
        Err(e) => HttpResponse::from_error(actix_web::error::JsonPayloadError::Serialize(e)),
    }
}

fn content_type(req: &HttpRequest) -> Option<&str> {
    req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

/// Per-request context shared by every channel of a batch.
struct Ctx<'a> {
    live: &'a Live,
    metrics: &'a Metrics,
    app: &'a AppSettings,
    socket_id: &'a SocketId,
    params: &'a Map<String, Value>,
    headers: &'a ForwardedHeaders,
    /// Who is charged for session checks: `[rate_limit]` and the in-flight share.
    client_ip: std::net::IpAddr,
    /// Signed authorizations per client build (the status page's drain-by-client table).
    clients: &'a crate::client_stats::ClientStats,
    client_group: String,
    /// The presence bridge's member lists.
    webhooks: &'a crate::webhooks::Webhooks,
    list_budget: crate::presence::answer::Budget,
}

/// A channel authorization, and (bridged presence channels) the other apps' members.
struct AuthAnswer {
    auth: ChannelAuth,
    presence_bridge: Option<Value>,
    /// With `[recovery]`: `{"token"}`, what `POST /recover/{app}` takes for this
    /// socket and channel (so recovery costs the host no second check).
    recovery: Option<Value>,
}

/// `ChannelAuth`'s fields and the extras, in one object. Written out rather
/// than `#[serde(flatten)]`, which goes through serde's map buffering and cost
/// more than the rest of the answer's JSON.
impl serde::Serialize for AuthAnswer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let ChannelAuth { auth, channel_data, shared_secret } = &self.auth;
        let mut o = s.serialize_struct("AuthAnswer", 5)?;
        o.serialize_field("auth", auth)?;
        if let Some(data) = channel_data {
            o.serialize_field("channel_data", data)?;
        }
        if let Some(secret) = shared_secret {
            o.serialize_field("shared_secret", secret)?;
        }
        if let Some(bridge) = &self.presence_bridge {
            o.serialize_field("presence_bridge", bridge)?;
        }
        if let Some(recovery) = &self.recovery {
            o.serialize_field("recovery", recovery)?;
        }
        o.end()
    }
}

impl Ctx<'_> {
    async fn ask_host(
        &self,
        kind: CheckKind,
        channel: Option<&ChannelName>,
    ) -> Result<Arc<HostIdentity>, AuthError> {
        let request = CheckRequest {
            app: &self.app.name,
            kind,
            socket_id: self.socket_id.as_ref(),
            channel_name: channel.map(AsRef::as_ref),
            params: self.params,
        };
        // One token per check: a batch pays per channel, and refused input never gets here.
        if let Some(limiter) = &self.live.rate_limiter
            && !limiter.allow(self.client_ip)
        {
            return Err(AuthError::RateLimited);
        }
        let started = std::time::Instant::now();
        let (answer, source) =
            self.live.session_check.check_shared(&request, self.headers, self.client_ip).await;
        match source {
            Source::Called => {}
            Source::Coalesced => self.metrics.shared_check(&self.app.name, "coalesced"),
            Source::Cached => {
                self.metrics.shared_check(&self.app.name, "cache");
                return match answer? {
                    HostAnswer::Allowed(identity) => Ok(identity),
                    HostAnswer::Denied => Err(AuthError::Denied),
                };
            }
        }
        let result = match &answer {
            Ok(HostAnswer::Allowed(_)) => "2xx",
            Ok(HostAnswer::Denied) => "denied",
            Err(HostError::Timeout) => "timeout",
            Err(HostError::Connect(_)) => "connect_error",
            Err(HostError::Status(300..=399)) => "3xx",
            Err(HostError::Status(400..=499)) => "4xx",
            Err(HostError::Status(_)) => "5xx",
            Err(HostError::BodyTooLarge(_) | HostError::InvalidBody(_)) => "invalid",
            Err(HostError::Transport(_)) => "transport_error",
            Err(HostError::Busy(_)) => "busy",
            Err(HostError::ClientBusy(_)) => "busy_client",
            Err(HostError::Unmatched(_)) => "unmatched",
        };
        self.metrics.session_check(&self.app.name, result, started.elapsed().as_secs_f64());
        match answer? {
            HostAnswer::Allowed(identity) => Ok(identity),
            HostAnswer::Denied => Err(AuthError::Denied),
        }
    }

    async fn authorize(&self, channel: &ChannelName) -> Result<AuthAnswer, AuthError> {
        if channel.kind() == ChannelKind::PrivateEncrypted && self.app.credentials.master_key.is_none() {
            return Err(ProtocolError::EncryptionNotConfigured.into());
        }
        let identity = self.ask_host(CheckKind::Channel, Some(channel)).await?;
        let member = match channel.kind() {
            ChannelKind::Presence => Some(identity.presence_member()?),
            _ => None,
        };
        let auth = authorize_channel(&self.app.credentials, self.socket_id, channel, member.as_ref())?;
        self.signed();
        let presence_bridge = match &member {
            Some(m) if self.live.settings.presence.bridged(channel.as_ref()) => {
                let answering = crate::presence::answer::Answering {
                    live: self.live,
                    webhooks: self.webhooks,
                    metrics: self.metrics,
                    client: self.client_ip,
                    via: &self.app.name,
                    budget: &self.list_budget,
                };
                answering.list(channel.as_ref(), m).await
            }
            _ => None,
        };
        let recovery = self.live.settings.recovery.as_ref().map(|r| {
            let expires = crate::outbound::now_ms() / 1000 + r.token_ttl.as_secs();
            let secret = secrecy::ExposeSecret::expose_secret(&self.app.credentials.secret);
            let socket = self.socket_id.as_ref();
            serde_json::json!({"token": crate::recovery::token::issue(secret, &self.app.name, socket, channel.as_ref(), expires)})
        });
        Ok(AuthAnswer { auth, presence_bridge, recovery })
    }

    /// Counts a signed authorization for this client's build.
    fn signed(&self) {
        self.clients.record(&self.client_group, &self.app.name, crate::outbound::now_ms());
    }
}

/// One log line and one counter per decision. Never the signature, cookies or credentials.
fn log_outcome<T>(metrics: &Metrics, app: &str, kind: &str, result: &Result<T, AuthError>) {
    match result {
        Ok(_) => {
            metrics.auth(app, kind, "signed");
            // Successes are counted in the metrics; a line each at info cost a
            // fifth of the CPU per request (bench/load.py). Refusals stay at info.
            tracing::debug!(app, kind, outcome = "signed", status = 200, "auth")
        }
        Err(e) => log_error(metrics, app, kind, e),
    }
}

/// The request span's app, kind and outcome (with `[telemetry]`): the labels the
/// metrics use, a configured app name or `unknown`.
fn traced<T>(app: &str, kind: &'static str, result: &Result<T, AuthError>) {
    if !crate::telemetry::traces::on() {
        return;
    }
    match result {
        Ok(_) => super::record(app, kind, "signed"),
        Err(e) => traced_error(app, kind, e),
    }
}

fn traced_error(app: &str, kind: &'static str, e: &AuthError) {
    let app = if matches!(e, AuthError::UnknownApp(_)) { crate::metrics::NO_APP } else { app };
    super::record(app, kind, e.status_and_code().1);
}

fn log_error(metrics: &Metrics, app: &str, kind: &str, e: &AuthError) {
    let (status, code) = e.status_and_code();
    // Only configured names become label values, and an unknown one is logged cut
    // short and escaped (the path segment is the client's, of any length).
    let unknown = matches!(e, AuthError::UnknownApp(_));
    metrics.auth(if unknown { crate::metrics::NO_APP } else { app }, kind, code);
    let app: std::borrow::Cow<str> = if unknown { crate::pusher::quote(app).into() } else { app.into() };
    let app = app.as_ref();
    let status = status.as_u16();
    if status >= 500 {
        tracing::warn!(app, kind, outcome = code, status, error = %e, "auth");
    } else {
        tracing::info!(app, kind, outcome = code, status, error = %e, "auth");
    }
}

/// What every auth request has once read: its app, body, the headers for the
/// host and the client the rate limit charges.
struct Prepared<'a> {
    live: &'a Live,
    app: &'a AppSettings,
    body: web::Bytes,
    headers: ForwardedHeaders,
    client_ip: std::net::IpAddr,
    user_agent: Option<String>,
}

impl Prepared<'_> {
    /// The context for asking the host about `socket_id` with `params`.
    fn ctx<'b>(
        &'b self,
        state: &'b AppState,
        socket_id: &'b SocketId,
        params: &'b Map<String, Value>,
    ) -> Ctx<'b> {
        let version = params.get("client_version").and_then(Value::as_str);
        Ctx {
            live: self.live,
            metrics: &state.metrics,
            clients: &state.clients,
            webhooks: &state.webhooks,
            list_budget: crate::presence::answer::Budget::new(self.live.settings.presence.max_answer_bytes),
            client_group: crate::client_group::group(self.user_agent.as_deref(), version),
            app: self.app,
            socket_id,
            params,
            headers: &self.headers,
            client_ip: self.client_ip,
        }
    }
}

/// Looks up the app, reads the body and builds the forwarded headers.
async fn prepare<'a>(
    req: &HttpRequest,
    live: &'a Live,
    app_name: &str,
    payload: web::Payload,
    id: &RequestId,
) -> Result<Prepared<'a>, AuthError> {
    let app =
        live.settings.app(app_name).ok_or_else(|| AuthError::UnknownApp(crate::pusher::quote(app_name)))?;
    let server = &live.settings.server;
    let body = read_body(req, payload, server.max_body_bytes, server.body_timeout).await?;
    let headers = forwarded_headers(
        |name| super::header_values(req.headers(), name),
        req.peer_addr().map(|a| a.ip()),
        &server.trusted_proxies,
        &live.settings.session_check.forward_headers,
        id.as_bytes(),
    )?;
    let user_agent = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        // Only grouped (`client_group`), never kept or logged: any UTF-8 will do,
        // and checking it is a fraction of `to_str`'s byte-by-byte visible-ASCII test.
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .map(str::to_owned);
    let client_ip = super::client_address(req, &server.trusted_proxies);
    Ok(Prepared { live, app, body, headers, client_ip, user_agent })
}

/// `/auth/{app}` and `/auth/{app}/user` (`rest` is the path after `/auth`),
/// matched here rather than by the router, whose pattern match cost about 2 % of
/// an authorization's CPU: the app (percent-decoded, as the router's extractor
/// did) and whether it is the sign-in route.
fn auth_path(rest: &str) -> Option<(String, bool)> {
    let rest = rest.strip_prefix('/')?;
    let (segment, user) = match rest.split_once('/') {
        None => (rest, false),
        Some((segment, "user")) => (segment, true),
        Some(_) => return None,
    };
    if segment.is_empty() {
        return None;
    }
    Some((percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned(), user))
}

/// The `/auth` scope's one service. It runs inline what middleware layers do
/// for the other routes (one boxed future less per authorization for each):
/// the request's id and span, then the CORS gate; then 404 off the two routes,
/// 405 for other methods. One config snapshot serves the whole request, the
/// gate and the answer (a reload between them changes neither).
pub async fn route(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let started = super::request_id::start(&req);
    let served = super::request_id::serve(started, async move |id| {
        let live = state.live();
        let pass = match super::cors::gate(&req, &live, &state.metrics) {
            super::cors::Gate::Answered(res) => return Ok::<_, std::convert::Infallible>(res),
            super::cors::Gate::Pass(pass) => pass,
        };
        let mut res = answer(req, payload, state, live, id).await.unwrap_or_else(|e| e.error_response());
        pass.finish(res.headers_mut());
        Ok(res)
    });
    let Ok(res) = served.await;
    res
}

async fn answer(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    live: Arc<Live>,
    id: &RequestId,
) -> Result<HttpResponse, AuthError> {
    let Some((app_name, user)) = auth_path(req.match_info().unprocessed()) else {
        return Ok(super::not_found_answer());
    };
    if req.method() != Method::POST {
        return Ok(crate::error::json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST",
        ));
    }
    if user {
        user_auth(req, app_name, payload, state, live, id).await
    } else {
        channel_auth(req, app_name, payload, state, live, id).await
    }
}

async fn channel_auth(
    req: HttpRequest,
    app_name: String,
    payload: web::Payload,
    state: web::Data<AppState>,
    live: Arc<Live>,
    id: &RequestId,
) -> Result<HttpResponse, AuthError> {
    let metrics = &state.metrics;
    let prepared = async {
        let prepared = prepare(&req, &live, &app_name, payload, id).await?;
        let max_batch = live.settings.server.max_batch_channels;
        let request = parse_channel_request(content_type(&req), &prepared.body, max_batch)?;
        Ok((prepared, request))
    }
    .await;
    let (prepared, request) = prepared.inspect_err(|e| {
        log_error(metrics, &app_name, "request", e);
        if crate::telemetry::traces::on() {
            traced_error(&app_name, "request", e);
        }
    })?;
    let ctx = prepared.ctx(&state, &request.socket_id, &request.params);
    match &request.channels {
        Channels::Single(channel) => {
            let result = ctx.authorize(channel).await;
            log_outcome(metrics, &app_name, channel.kind().as_str(), &result);
            traced(&app_name, channel.kind().as_str(), &result);
            Ok(ok_json(&result?))
        }
        Channels::Batch(items) => {
            // pusher-js-auth format: 200 and one entry per channel, each with its own status.
            let entries: Map<String, Value> = stream::iter(items)
                .map(|item| {
                    let ctx = &ctx;
                    let app_name = &app_name;
                    async move {
                        let result = match &item.parsed {
                            Ok(channel) => ctx.authorize(channel).await,
                            Err(e) => Err(AuthError::from(e.clone())),
                        };
                        let kind = item.parsed.as_ref().map_or("invalid", |c| c.kind().as_str());
                        log_outcome(metrics, app_name, kind, &result);
                        let entry = match result {
                            Ok(auth) => serde_json::json!({"status": 200, "data": auth}),
                            Err(e) => {
                                let mut body = e.body();
                                body["status"] = e.status_and_code().0.as_u16().into();
                                body
                            }
                        };
                        (item.raw.clone(), entry)
                    }
                })
                .buffered(BATCH_CONCURRENCY)
                .collect()
                .await;
            if crate::telemetry::traces::on() {
                let signed = entries.values().filter(|e| e["status"] == 200).count();
                let outcome = match signed {
                    n if n == entries.len() => "signed",
                    0 => "refused",
                    _ => "partly_signed",
                };
                super::record(&app_name, "batch", outcome);
            }
            Ok(ok_json(&entries))
        }
    }
}

async fn user_auth(
    req: HttpRequest,
    app_name: String,
    payload: web::Payload,
    state: web::Data<AppState>,
    live: Arc<Live>,
    id: &RequestId,
) -> Result<HttpResponse, AuthError> {
    let metrics = &state.metrics;
    let result = async {
        let prepared = prepare(&req, &live, &app_name, payload, id).await?;
        let request = parse_user_request(content_type(&req), &prepared.body)?;
        let ctx = prepared.ctx(&state, &request.socket_id, &request.params);
        let identity = ctx.ask_host(CheckKind::User, None).await?;
        let user = identity.user_data()?;
        let signed = authenticate_user(&prepared.app.credentials, &request.socket_id, &user);
        ctx.signed();
        Ok(ok_json(&signed))
    }
    .await;
    log_outcome(metrics, &app_name, "user", &result);
    traced(&app_name, "user", &result);
    result
}

#[cfg(test)]
mod tests {
    use super::{AuthAnswer, ChannelAuth, auth_path};
    use serde_json::json;

    #[test]
    fn an_answer_is_the_channel_auth_with_its_extras_in_one_object() {
        let auth = |data: Option<&str>, secret: Option<&str>| ChannelAuth {
            auth: "key:sig".into(),
            channel_data: data.map(Into::into),
            shared_secret: secret.map(Into::into),
        };
        let plain = AuthAnswer { auth: auth(None, None), presence_bridge: None, recovery: None };
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#"{"auth":"key:sig"}"#);
        let presence = AuthAnswer {
            auth: auth(Some(r#"{"user_id":"1"}"#), None),
            presence_bridge: None,
            recovery: None,
        };
        assert_eq!(
            serde_json::to_string(&presence).unwrap(),
            r#"{"auth":"key:sig","channel_data":"{\"user_id\":\"1\"}"}"#,
            "channel_data stays a JSON string"
        );
        let all = AuthAnswer {
            auth: auth(Some("d"), Some("s")),
            presence_bridge: Some(json!({"old": {"count": 1}})),
            recovery: Some(json!({"token": "t"})),
        };
        assert_eq!(
            serde_json::to_string(&all).unwrap(),
            r#"{"auth":"key:sig","channel_data":"d","shared_secret":"s","presence_bridge":{"old":{"count":1}},"recovery":{"token":"t"}}"#
        );
    }

    #[test]
    fn only_the_two_auth_routes_match() {
        assert_eq!(auth_path("/new"), Some(("new".into(), false)));
        assert_eq!(auth_path("/new/user"), Some(("new".into(), true)));
        assert_eq!(auth_path("/%6Eew"), Some(("new".into(), false)), "percent-decoded as the router did");
        for rest in ["", "/", "//user", "/new/", "/new/users", "/new/user/", "/a/b/c", "new"] {
            assert_eq!(auth_path(rest), None, "{rest:?}");
        }
    }
}
