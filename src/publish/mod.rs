//! Publish once, deliver on every target app: a Pusher REST-compatible surface
//! (`/apps/{id}/events`, `/batch_events`, channel queries, terminate
//! connections). Requests are verified exactly as Pusher does against the
//! `[publish]` credential — the query signature before the body is read —
//! then re-signed and forwarded to each target app concurrently; queries are
//! merged across apps. Mounted only while `[publish]` is configured.

mod forward;
mod merge;
mod routes;
mod verify;

pub use routes::configure;

use crate::{body::BodyError, pusher::rest::RestAuthError};
use actix_web::{HttpResponse, ResponseError, http::StatusCode};

/// Why a publish request is refused before anything is forwarded. Answered in
/// Pusher REST's own error shape, `{"error": "<message>"}`, on purpose (not the
/// auth routes' `{"error":{"code","message"}}`): the official server SDKs
/// surface that message to the caller.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publishing is not configured ([publish])")]
    NotConfigured,
    #[error("Unknown app_id {0}")]
    UnknownApp(String),
    #[error(transparent)]
    Auth(#[from] RestAuthError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("data content of this event exceeds the allowed maximum (10240 bytes)")]
    DataTooLarge,
    #[error("{0}")]
    Invalid(String),
}

impl PublishError {
    /// The table: status and stable code for every refusal.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotConfigured => (StatusCode::NOT_FOUND, "not_configured"),
            Self::UnknownApp(_) => (StatusCode::NOT_FOUND, "unknown_app"),
            Self::Auth(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Body(e) => e.status_and_code(),
            Self::DataTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "data_too_large"),
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        }
    }
}

impl ResponseError for PublishError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(serde_json::json!({"error": self.to_string()}))
    }
}
