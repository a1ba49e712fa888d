//! The operator's side of failover: `GET /admin/failover` (what `/status`
//! shows as `failover`) and `POST /admin/failover` to fail an app over by hand
//! or to send clients back, on the admin listener only.

use super::decide::{Failed, Reason};
use crate::{
    body::{BodyError, read_body},
    error::{Refusal, refusal_response_error},
    outbound::now_ms,
    state::{AppState, Live},
};
use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("[failover] is not enabled")]
    NotConfigured,
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("a browser's request (it has an Origin header) is not taken here")]
    FromBrowser,
    #[error("the body must be JSON (Content-Type: application/json)")]
    NotJson,
    #[error(r#"body must be {{"action": "fail", "app": "NAME"}} or {{"action": "return"}}: {0}"#)]
    Malformed(String),
    #[error("{0:?} is not one of the rollout's two apps")]
    UnknownApp(String),
    #[error("the fleet's decision cannot be written to redis: {0}")]
    Unavailable(String),
}

refusal_response_error!(FailoverError);

impl Refusal for FailoverError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotConfigured => (StatusCode::NOT_FOUND, "not_configured"),
            Self::Body(e) => e.status_and_code(),
            Self::FromBrowser => (StatusCode::FORBIDDEN, "browser_request"),
            Self::NotJson => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_json"),
            Self::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
            Self::UnknownApp(_) => (StatusCode::BAD_REQUEST, "unknown_app"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable"),
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
enum Action {
    Fail { app: String },
    Return,
}

pub async fn show(state: web::Data<AppState>) -> Result<HttpResponse, FailoverError> {
    let live = state.live();
    live.settings.failover.as_ref().ok_or(FailoverError::NotConfigured)?;
    Ok(HttpResponse::Ok().json(describe(&state, &live)))
}

/// An operator's decision: in force on this replica at once, on the fleet
/// (with Redis) within the others' next read.
pub async fn act(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FailoverError> {
    let live = state.live();
    live.settings.failover.as_ref().ok_or(FailoverError::NotConfigured)?;
    let rollout = live.settings.rollout.as_ref().ok_or(FailoverError::NotConfigured)?;
    // A page in an operator's browser can POST to 127.0.0.1: only non-browser JSON is taken.
    if req.headers().contains_key(actix_web::http::header::ORIGIN) {
        return Err(FailoverError::FromBrowser);
    }
    let json =
        req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(
            |v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")),
        );
    if !json {
        return Err(FailoverError::NotJson);
    }
    let server = &live.settings.server;
    let body = read_body(&req, payload, server.max_body_bytes.min(4096), server.body_timeout).await?;
    let action: Action =
        serde_json::from_slice(&body).map_err(|e| FailoverError::Malformed(e.to_string()))?;
    let next = match action {
        Action::Fail { app } => {
            let to = if app == rollout.from {
                &rollout.to
            } else if app == rollout.to {
                &rollout.from
            } else {
                return Err(FailoverError::UnknownApp(app));
            };
            Some(Failed { from: app.clone(), to: to.clone(), since_ms: now_ms(), reason: Reason::Operator })
        }
        Action::Return => None,
    };
    if let Some(shared) = &state.failover.shared {
        let json = serde_json::to_string(&next).expect("serializes");
        shared.set(&json).await.map_err(|e| FailoverError::Unavailable(e.to_string()))?;
    }
    tracing::warn!(decision = ?next, "failover: an operator's decision");
    super::task::adopt(&state.clone().into_inner(), next);
    Ok(HttpResponse::Ok().json(describe(&state, &live)))
}

/// The `failover` object of `/status`: the settings, the decision in force,
/// this replica's probes, and (with Redis) every replica's views.
pub fn describe(state: &AppState, live: &Live) -> Value {
    let Some(s) = &live.settings.failover else { return Value::Null };
    let (views, error) = state.failover.fleet();
    let redirected: u64 = state.metrics.failover_redirected_counts().iter().map(|c| c.2).sum();
    json!({
        "enabled": true,
        "settings": s,
        "decision": state.failover.decision().as_deref(),
        "replica": state.failover.replica,
        "probes": state.failover.probed(),
        "redirected": redirected,
        "fleet": state.failover.shared.as_ref().map(|_| json!({
            "views": views,
            "redirected": views.iter().flat_map(|v| v.redirected.values()).sum::<u64>(),
            "error": error,
        })),
    })
}
