//! `POST /recover/{app}`: what a client missed on its channels since the last
//! position it had. A private, presence or encrypted channel's history goes
//! only with the token of that channel's authorization answer for this very
//! socket; public channels are open. Nothing else is answered: an unknown
//! app, a bad body, too many channels, or a stranger's token.

use super::token;
use crate::{
    body::{BodyError, read_body},
    error::{Refusal, refusal_response_error},
    pusher::{ChannelName, PublicChannelName, SocketId},
    state::AppState,
};
use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("no [recovery] is configured")]
    NotConfigured,
    #[error("unknown app {0}: no [apps.NAME] section configures it")]
    UnknownApp(String),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(
        "body must be {{\"socket_id\": \"…\", \"channels\": [{{\"channel\", \"since\", \"token\"}}, …]}}: {0}"
    )]
    Malformed(String),
    #[error("at most {0} channels in one request (recovery.max_channels_per_request)")]
    TooManyChannels(usize),
    #[error("too many requests from this client; retry later")]
    RateLimited,
}

refusal_response_error!(RecoveryError);

impl Refusal for RecoveryError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotConfigured => (StatusCode::NOT_FOUND, "not_configured"),
            Self::UnknownApp(_) => (StatusCode::NOT_FOUND, "unknown_app"),
            Self::Body(e) => e.status_and_code(),
            Self::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
            Self::TooManyChannels(_) => (StatusCode::BAD_REQUEST, "too_many_channels"),
            Self::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::UnknownApp(name) => format!("unknown app {}", crate::pusher::quote(name)),
            other => other.to_string(),
        }
    }

    fn retry_after_secs(&self) -> Option<u32> {
        matches!(self, Self::RateLimited).then(|| fastrand::u32(1..=3))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    socket_id: String,
    channels: Vec<Wanted>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wanted {
    channel: String,
    /// The last position the client had; left out: only the position to start from.
    since: Option<String>,
    token: Option<String>,
}

fn refused(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

/// Whether `channel` may be read by this socket: open for public channels,
/// else with its authorization's token. `Err`: the per-channel refusal.
fn allowed(w: &Wanted, app: &crate::config::AppSettings, socket_id: &str, now: u64) -> Result<(), Value> {
    if PublicChannelName::parse(&w.channel).is_ok() {
        return Ok(());
    }
    ChannelName::parse(&w.channel).map_err(|e| refused("invalid_channel_name", &e.to_string()))?;
    let Some(t) = w.token.as_deref() else {
        return Err(refused("missing_token", "give the token of this channel's authorization answer"));
    };
    let secret = app.credentials.secret.expose_secret();
    token::check(secret, &app.name, socket_id, &w.channel, t, now).map_err(|why| match why {
        token::Refused::Expired => refused("expired_token", "the token expired: authorize the channel again"),
        _ => refused("invalid_token", "not a token of this app, socket and channel"),
    })
}

/// One channel's history, in a span of its own with `[telemetry]` (the app,
/// what was found, how many events; not the channel's name).
async fn read_traced(
    state: &AppState,
    app: &str,
    wanted: &Wanted,
    limits: &super::RecoverySettings,
) -> redis::RedisResult<super::ChannelRead> {
    let read = state.recovery.read(&wanted.channel, wanted.since.as_deref(), limits);
    if !crate::telemetry::traces::on() {
        return read.await;
    }
    use opentelemetry::trace::SpanKind;
    let mut span = crate::telemetry::traces::Span::child("recovery.read", SpanKind::Internal, |a| {
        a.add("app", app);
    });
    let result = read.await;
    match &result {
        Ok(r) => {
            span.set("result", || r.gap.unwrap_or("recovered"));
            span.set("events", || r.events.len() as i64);
        }
        Err(_) => span.set("result", || "unavailable"),
    }
    result
}

pub async fn recover(
    req: HttpRequest,
    app: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, RecoveryError> {
    let live = state.live();
    let limits = live.settings.recovery.as_ref().ok_or(RecoveryError::NotConfigured)?;
    let app = live.settings.app(&app).ok_or_else(|| RecoveryError::UnknownApp(app.into_inner()))?;
    let server = &live.settings.server;
    let body = read_body(&req, payload, server.max_body_bytes, server.body_timeout).await?;
    let request: Request =
        serde_json::from_slice(&body).map_err(|e| RecoveryError::Malformed(e.to_string()))?;
    SocketId::parse(&request.socket_id).map_err(|e| RecoveryError::Malformed(e.to_string()))?;
    if request.channels.len() > limits.max_channels_per_request {
        return Err(RecoveryError::TooManyChannels(limits.max_channels_per_request));
    }
    let client = crate::routes::client_address(&req, &server.trusted_proxies);
    if let Some(limiter) = &live.rate_limiter
        && !limiter.allow(client)
    {
        return Err(RecoveryError::RateLimited);
    }
    let now = crate::outbound::now_ms() / 1000;
    let mut answer = Map::new();
    for wanted in &request.channels {
        if answer.contains_key(&wanted.channel) {
            return Err(RecoveryError::Malformed(format!(
                "{} is named twice",
                crate::pusher::quote(&wanted.channel)
            )));
        }
        let one = match allowed(wanted, app, &request.socket_id, now) {
            Err(refusal) => {
                state.metrics.recovery("refused", 0);
                refusal
            }
            Ok(()) => match read_traced(&state, &app.name, wanted, limits).await {
                Ok(read) => {
                    state.metrics.recovery(read.gap.unwrap_or("recovered"), read.events.len() as u64);
                    json!({"events": read.events, "position": read.position, "gap": read.gap})
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recovery: buffer unavailable (redis)");
                    state.metrics.recovery("unavailable", 0);
                    refused("buffer_unavailable", "the recovery buffer cannot be read now; retry shortly")
                }
            },
        };
        answer.insert(wanted.channel.clone(), one);
    }
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        // The limits a client paces itself by: re-sync within the window, batch within the cap.
        .json(json!({
            "channels": answer,
            "window_secs": limits.window.as_secs(),
            "max_channels_per_request": limits.max_channels_per_request,
        })))
}
