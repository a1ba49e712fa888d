//! Request ids: accept a well-formed inbound `X-Request-Id` (so one id follows
//! a request through the proxy, this service and the host), otherwise make one;
//! echo it in the response. The request's span (method, path, id) is opened
//! here too: one middleware rather than two on every request. With
//! `[telemetry]` it is the request's OpenTelemetry span, continuing the
//! caller's `traceparent` (`telemetry::traces`); the handlers add the app,
//! kind and outcome to it (`record`).

use actix_web::{
    HttpMessage,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
};
use std::borrow::Cow;
use tracing::Instrument;

/// The request's id, in the request's extensions while it is handled; then
/// moved, not copied, into the answer's `X-Request-Id`.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// Well formed or ours, so always text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A name, not a `&str`: a lookup by string parses it (and copies a custom one) each time.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'='))
}

pub async fn request_id_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut inbound = req.headers().get_all(&X_REQUEST_ID);
    let inbound = match (inbound.next(), inbound.next()) {
        (Some(v), None) => v.to_str().is_ok_and(well_formed).then(|| v.clone()),
        _ => None,
    };
    let id = RequestId(inbound.unwrap_or_else(|| {
        let ours = uuid::Uuid::new_v4();
        HeaderValue::from_str(ours.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()))
            .expect("a UUID is a header value")
    }));
    // Nothing from headers or body: the id is well formed or ours.
    let mut res = if crate::telemetry::traces::on() {
        traced(req, next, id).await?
    } else {
        let span = tracing::debug_span!("request", method = %req.method(), path = %req.path(),
            request_id = %id.as_str());
        req.extensions_mut().insert(id);
        next.call(req).instrument(span).await?
    };
    let id = res.request().extensions_mut().remove::<RequestId>();
    if let Some(RequestId(value)) = id {
        res.headers_mut().insert(X_REQUEST_ID, value);
    }
    Ok(res)
}

/// The request in its OpenTelemetry span, continuing the caller's trace
/// (`traces::RequestTrace`; its name and attributes are made only if sampled).
async fn traced<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
    id: RequestId,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    use crate::telemetry::traces::{RequestTrace, with_trace};
    let trace = RequestTrace::start(
        // The route's pattern, not the path: a client's path segment is not an attribute.
        || match (method(&req), route(&req)) {
            ("POST", Cow::Borrowed("/auth/{app}")) => "POST /auth/{app}".into(),
            ("POST", Cow::Borrowed("/auth/{app}/user")) => "POST /auth/{app}/user".into(),
            (method, route) => format!("{method} {route}").into(),
        },
        req.headers(),
        |a| {
            a.add("http.request.method", method(&req));
            a.add("http.route", &route(&req));
            a.add("request_id", id.as_str());
        },
    );
    req.extensions_mut().insert(id);
    let Some(trace) = trace else { return next.call(req).await };
    let res = with_trace(trace.clone(), next.call(req)).await;
    if let Ok(res) = &res {
        trace.set("http.response.status_code", || i64::from(res.status().as_u16()));
    }
    trace.end();
    res
}

/// The route's pattern for a span: the `/auth` scope matches its two routes
/// itself (`auth::route`), so the router knows no pattern for them. Borrowed
/// (no allocation per span) for those two and the unmatched.
fn route(req: &ServiceRequest) -> Cow<'static, str> {
    match req.path().strip_prefix("/auth/") {
        Some(rest) if rest.ends_with("/user") => Cow::Borrowed("/auth/{app}/user"),
        Some(_) => Cow::Borrowed("/auth/{app}"),
        None => req.match_pattern().map_or(Cow::Borrowed("unmatched"), Cow::Owned),
    }
}

/// The request's method for a span: the nine of HTTP's standard without an
/// allocation, any other as `_OTHER` (the semantic conventions' word for it).
fn method(req: &ServiceRequest) -> &'static str {
    use actix_web::http::Method;
    match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// Names the app, kind and outcome on the request's span (with `[telemetry]`;
/// nothing otherwise). Only configured app names and fixed labels arrive here.
pub fn record(app: &str, kind: &'static str, outcome: &'static str) {
    if crate::telemetry::traces::on() {
        crate::telemetry::traces::record(app, kind, outcome);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn inbound_ids_must_be_short_and_plain() {
        assert!(super::well_formed("3f2b9c1e-0d5a-4c59-8a43-9d8d2c1f0b7e"));
        assert!(!super::well_formed(""));
        assert!(!super::well_formed("a b"));
        assert!(!super::well_formed("a\"b"));
        assert!(!super::well_formed(&"a".repeat(129)));
    }
}
