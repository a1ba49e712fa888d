//! `POST /webhooks`: verify (key before the body, then the signature and the
//! replay window), apply to the merge state, acknowledge.

use crate::error::{Refusal, refusal_response_error};
use crate::{
    body::{BodyError, read_body},
    outbound::now_ms,
    state::{AppState, Live},
    webhooks::{AgeError, Applied, BODY_DEADLINE, Bridged, check_age, digest},
};
use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// Why a webhook is not applied. Pusher reads only the status (non-2xx: it
/// retries); people read the code and message, in the one refusal shape.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhooks are not configured")]
    NotConfigured,
    #[error("unknown X-Pusher-Key")]
    UnknownKey,
    #[error("too many webhooks at once; retry")]
    Busy,
    #[error("too many webhooks at once from this address; retry")]
    ClientBusy,
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("invalid X-Pusher-Signature")]
    BadSignature,
    #[error("body must be {{\"time_ms\": …, \"events\": [...]}}")]
    Malformed,
    #[error(transparent)]
    Stale(#[from] AgeError),
    #[error("webhook state store unavailable")]
    StoreUnavailable,
}

refusal_response_error!(WebhookError);

impl Refusal for WebhookError {
    /// The table: status and the metric label / code for every refusal.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotConfigured => (StatusCode::NOT_FOUND, "not_configured"),
            Self::UnknownKey => (StatusCode::UNAUTHORIZED, "unknown_key"),
            Self::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::ClientBusy => (StatusCode::SERVICE_UNAVAILABLE, "busy_client"),
            Self::Body(e) => e.status_and_code(),
            Self::BadSignature => (StatusCode::UNAUTHORIZED, "bad_signature"),
            Self::Malformed => (StatusCode::BAD_REQUEST, "malformed_body"),
            Self::Stale(_) => (StatusCode::BAD_REQUEST, "stale"),
            Self::StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }

    /// Pusher retries on its own schedule; a person retrying is told 1 s.
    fn retry_after_secs(&self) -> Option<u32> {
        (self.status_and_code().0 == StatusCode::SERVICE_UNAVAILABLE).then_some(1)
    }
}

/// The body's X-Pusher-Signature check (constant time).
fn signature_ok(secret: &str, body: &[u8], given_hex: &str) -> bool {
    crate::pusher::hmac_sha256_matches(secret.as_bytes(), body, given_hex)
}

/// `POST /webhooks`
pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let live = state.live();
    let result = accept(&req, payload, &state, &live).await;
    let label = match &result {
        Ok(Applied::Duplicate) => "duplicate",
        Ok(Applied::Forwarded(..)) => "accepted",
        Err(e) => e.status_and_code().1,
    };
    state.metrics.webhook_request(label);
    result.map(|_| HttpResponse::Ok().json(json!({})))
}

async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    live: &Live,
) -> Result<Applied, WebhookError> {
    // Unmounted without [webhooks]; a reload may race the route guard.
    let settings = live.settings.webhooks.as_ref().ok_or(WebhookError::NotConfigured)?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    // Before the body: a stranger without a configured key costs no read at all.
    let key = header("x-pusher-key");
    let Some(app) = live.settings.apps.values().find(|a| a.credentials.key.as_ref() == key) else {
        tracing::warn!("webhook with an unknown X-Pusher-Key refused");
        return Err(WebhookError::UnknownKey);
    };
    let client = crate::routes::client_address(req, &live.settings.server.trusted_proxies);
    let _slot = state.webhooks.try_reader(client).map_err(|refused| {
        tracing::warn!(?refused, "webhook refused: no body-reader slot free for this client");
        match refused {
            crate::fair_share::Refused::Full => WebhookError::Busy,
            crate::fair_share::Refused::ClientShare => WebhookError::ClientBusy,
        }
    })?;
    let deadline = live.settings.server.body_timeout.min(BODY_DEADLINE);
    let body = read_body(req, payload, settings.max_body_bytes, deadline).await?;
    if !signature_ok(app.credentials.secret.expose_secret(), &body, header("x-pusher-signature")) {
        tracing::warn!(app = %app.name, "webhook with a bad X-Pusher-Signature refused");
        return Err(WebhookError::BadSignature);
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let events = parsed.as_ref().and_then(|v| v.get("events")?.as_array()).ok_or(WebhookError::Malformed)?;
    let now = now_ms();
    let window_ms = settings.max_age.as_millis() as u64;
    let time_ms = check_age(parsed.as_ref().and_then(|v| v.get("time_ms")?.as_u64()), now, window_ms)
        .inspect_err(
            |e| tracing::warn!(app = %app.name, error = %e, "webhook outside the replay window refused"),
        )?;
    let apps: Vec<String> = live.settings.apps.keys().cloned().collect();
    let bridged = Bridged { presence: &live.settings.presence, apps: &apps };
    let mut span = if crate::telemetry::traces::on() {
        use opentelemetry::trace::SpanKind;
        crate::telemetry::traces::Span::child("webhook.apply", SpanKind::Internal, |a| {
            a.add("app", &*app.name);
            a.add("events", &(events.len() as i64));
        })
    } else {
        crate::telemetry::traces::Span::none()
    };
    let applied = state
        .webhooks
        .apply(&app.name, &digest(&app.name, &body), events, time_ms, now, window_ms, bridged)
        .await
        .inspect(|a| {
            span.set("result", || if matches!(a, Applied::Duplicate) { "duplicate" } else { "applied" });
        })
        .map_err(|err| {
            // Not acknowledged: Pusher retries, and each script made no partial change.
            tracing::error!(error = %err, "redis: cannot record a webhook event");
            WebhookError::StoreUnavailable
        })?;
    match applied {
        Applied::Duplicate => {
            tracing::info!(app = %app.name, "webhook repeated within the replay window: acknowledged, not applied again");
            Ok(Applied::Duplicate)
        }
        Applied::Forwarded(forwarded, changes) => {
            state.webhooks.saw(&app.name, now);
            state.metrics.webhooks(&app.name, events.len() as u64, forwarded as u64);
            tracing::info!(app = %app.name, received = events.len(), forwarded, "webhook");
            crate::presence::publisher::announce(state, &app.name, changes, time_ms);
            Ok(Applied::Forwarded(forwarded, Vec::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_are_checked_against_the_raw_body() {
        // Vector from pusher-protocol.md (docs secret).
        let body =
            br#"{"time_ms":1530710011901,"events":[{"name":"channel_occupied","channel":"private-foobar"}]}"#;
        let sig = "44848ca690b0ae082b8db71418e9b361eb642922236b6e85700af24e660768d1";
        assert!(super::signature_ok("7ad3773142a6692b25b8", body, sig));
        assert!(!super::signature_ok("7ad3773142a6692b25b8", b"{}", sig));
        assert!(!super::signature_ok("other", body, sig));
        assert!(!super::signature_ok("7ad3773142a6692b25b8", body, "zz"));
        assert!(super::signature_ok(
            "thisisasecret",
            br#"{"hello":"world"}"#,
            "40e0ad3b9aa49529322879e84de1aaaf18bde1efe839ca263d540cc865510d25"
        ));
    }
}
