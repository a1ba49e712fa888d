//! The one refusal shape of the public routes, and the auth routes' table.
//!
//! Every refusal (auth, webhooks, `/client-config`, unmatched routes) answers
//! `{"error":{"code","message"}}` with `Cache-Control: no-store`, and never
//! carries a signature. The one exception is publishing, which answers in
//! Pusher REST's own `{"error": "…"}` shape because the SDKs read it
//! (`publish::PublishError`).

use crate::{
    auth_request::RequestError,
    body::BodyError,
    pusher::ProtocolError,
    session_check::{HeaderError, HostError},
};
use actix_web::{HttpResponse, http::StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown app {0}: no [apps.NAME] section configures it")]
    UnknownApp(String),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("origin {0} is not allowed")]
    OriginNotAllowed(String),
    #[error("the session check denied this request")]
    Denied,
    #[error("too many requests from this client; retry later")]
    RateLimited,
    #[error(transparent)]
    Host(#[from] HostError),
}

impl From<ProtocolError> for AuthError {
    fn from(e: ProtocolError) -> Self {
        Self::Request(RequestError::Protocol(e))
    }
}

/// A refusal: its status, stable code and message, answered in the one shape.
/// Each route's error type implements it (its own table) and answers through
/// it ([`refusal_response_error!`]).
pub trait Refusal: std::fmt::Debug + std::fmt::Display {
    /// The table: status and stable code (also the metric label).
    fn status_and_code(&self) -> (StatusCode, &'static str);

    /// What the client is told; by default the error's own text.
    fn public_message(&self) -> String {
        self.to_string()
    }

    /// `Retry-After` in seconds, for refusals worth retrying.
    fn retry_after_secs(&self) -> Option<u32> {
        None
    }

    /// `{"error":{"code","message"}}`.
    fn body(&self) -> serde_json::Value {
        error_body(self.status_and_code().1, &self.public_message())
    }

    fn response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_and_code().0);
        res.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
        if let Some(secs) = self.retry_after_secs() {
            res.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        res.json(self.body())
    }
}

/// Answers a [`Refusal`] type's errors as actix-web errors, in the one shape.
macro_rules! refusal_response_error {
    ($($t:ty),+ $(,)?) => {$(
        impl actix_web::ResponseError for $t {
            fn status_code(&self) -> actix_web::http::StatusCode {
                $crate::error::Refusal::status_and_code(self).0
            }
            fn error_response(&self) -> actix_web::HttpResponse {
                $crate::error::Refusal::response(self)
            }
        }
    )+};
}
pub(crate) use refusal_response_error;

refusal_response_error!(AuthError);

impl Refusal for AuthError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ProtocolError as P;
        use RequestError as R;
        match self {
            Self::UnknownApp(_) => (StatusCode::NOT_FOUND, "unknown_app"),
            Self::Request(R::UnsupportedMediaType(_)) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::Request(R::Malformed(_) | R::Missing(_)) => (StatusCode::BAD_REQUEST, "malformed_body"),
            Self::Request(R::Duplicate(_)) => (StatusCode::BAD_REQUEST, "duplicate_field"),
            Self::Request(R::BatchTooLarge { .. }) => (StatusCode::BAD_REQUEST, "batch_too_large"),
            Self::Request(R::Protocol(P::InvalidSocketId(_))) => {
                (StatusCode::BAD_REQUEST, "invalid_socket_id")
            }
            Self::Request(R::Protocol(P::InvalidChannelName { .. })) => {
                (StatusCode::BAD_REQUEST, "invalid_channel_name")
            }
            Self::Request(R::Protocol(P::PublicChannel(_))) => (StatusCode::BAD_REQUEST, "public_channel"),
            Self::Request(R::Protocol(P::EncryptionNotConfigured)) => {
                (StatusCode::BAD_REQUEST, "encryption_not_configured")
            }
            // Identity errors: not reachable from a request (the host's answer is
            // checked as HostError::InvalidBody); the table stays exhaustive.
            Self::Request(R::Protocol(_)) => (StatusCode::BAD_GATEWAY, "session_check_invalid"),
            Self::Header(_) => (StatusCode::BAD_REQUEST, "duplicate_header"),
            Self::Body(e) => e.status_and_code(),
            Self::OriginNotAllowed(_) => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            Self::Denied => (StatusCode::FORBIDDEN, "forbidden"),
            Self::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Host(HostError::Timeout) => (StatusCode::GATEWAY_TIMEOUT, "session_check_timeout"),
            Self::Host(HostError::Connect(_) | HostError::Transport(_)) => {
                (StatusCode::BAD_GATEWAY, "session_check_unreachable")
            }
            Self::Host(HostError::Status(_)) => (StatusCode::BAD_GATEWAY, "session_check_failed"),
            Self::Host(HostError::BodyTooLarge(_) | HostError::InvalidBody(_)) => {
                (StatusCode::BAD_GATEWAY, "session_check_invalid")
            }
            Self::Host(HostError::Unmatched(_)) => (StatusCode::BAD_GATEWAY, "session_check_unmatched"),
            Self::Host(HostError::Busy(_) | HostError::ClientBusy(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "session_check_busy")
            }
        }
    }

    /// Host failures are described generically: the details (status, parse
    /// error) are the operator's, and go to the log.
    fn public_message(&self) -> String {
        match self {
            Self::Host(HostError::Timeout) => "the session check did not answer in time".into(),
            Self::Host(HostError::Busy(_) | HostError::ClientBusy(_)) => {
                "too many session checks in flight; retry shortly".into()
            }
            // Identity problems in the host's answer are HostError::InvalidBody too.
            Self::Host(_) => "the session check failed; see the service log".into(),
            other => other.to_string(),
        }
    }

    /// `Retry-After` for a load refusal: 1 to 3 s at random, so the clients
    /// refused in one burst do not all come back in the same second.
    fn retry_after_secs(&self) -> Option<u32> {
        self.is_load_refusal().then(|| fastrand::u32(1..=3))
    }
}

/// The error body of the auth routes and of every unmatched route:
/// `{"error":{"code","message"}}`.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"code": code, "message": message}})
}

/// A JSON error answer outside the AuthError table (routing: 404, 405).
pub fn json_error(status: StatusCode, code: &str, message: &str) -> actix_web::HttpResponse {
    actix_web::HttpResponse::build(status).json(error_body(code, message))
}

impl AuthError {
    /// Refusals for load (rate limit, in-flight cap, a host too slow to answer)
    /// as opposed to denials and bad requests: worth retrying, and told when.
    pub fn is_load_refusal(&self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::Host(HostError::Busy(_) | HostError::ClientBusy(_) | HostError::Timeout)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;

    #[test]
    fn the_table_matches_the_design_contract() {
        let cases: Vec<(AuthError, u16)> = vec![
            (RequestError::Malformed("x".into()).into(), 400),
            (RequestError::Duplicate("socket_id".into()).into(), 400),
            (ProtocolError::InvalidSocketId("x".into()).into(), 400),
            (ProtocolError::PublicChannel("x".into()).into(), 400),
            (AuthError::UnknownApp("x".into()), 404),
            (BodyError::TooLarge(1).into(), 413),
            (BodyError::Timeout.into(), 408),
            (AuthError::Denied, 403),
            (AuthError::RateLimited, 429),
            (HostError::Status(302).into(), 502),
            (HostError::Status(404).into(), 502),
            (HostError::Status(500).into(), 502),
            (HostError::InvalidBody("x".into()).into(), 502),
            (HostError::BodyTooLarge(1).into(), 502),
            (HostError::Unmatched("x").into(), 502),
            (HostError::Connect("refused".into()).into(), 502),
            (HostError::Timeout.into(), 504),
            (HostError::Busy(1).into(), 503),
            (ProtocolError::MissingUserId.into(), 502),
        ];
        for (err, status) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{err:?}");
        }
    }

    #[test]
    fn load_refusals_say_when_to_retry_with_a_spread_and_denials_never() {
        let load: [AuthError; 4] = [
            AuthError::RateLimited,
            HostError::Busy(8).into(),
            HostError::ClientBusy(1).into(),
            HostError::Timeout.into(),
        ];
        for err in &load {
            let seen: std::collections::BTreeSet<u32> =
                (0..200).filter_map(|_| err.retry_after_secs()).collect();
            assert_eq!(seen, [1, 2, 3].into(), "{err:?}");
            let res = err.error_response();
            assert!(res.headers().contains_key(actix_web::http::header::RETRY_AFTER), "{err:?}");
        }
        for err in [AuthError::Denied, HostError::Status(500).into(), BodyError::TooLarge(1).into()] {
            assert_eq!(err.retry_after_secs(), None, "{err:?}");
            assert!(!err.error_response().headers().contains_key(actix_web::http::header::RETRY_AFTER));
        }
    }

    #[test]
    fn host_details_stay_out_of_the_response() {
        let err = AuthError::from(HostError::InvalidBody("secret-ish detail".into()));
        assert!(!err.body().to_string().contains("secret-ish"));
    }
}
