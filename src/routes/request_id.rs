//! Request ids: accept a well-formed inbound `X-Request-Id` (so one id follows
//! a request through the proxy, this service and the host), otherwise make one;
//! echo it in the response. The request's span (method, path, id) is opened
//! here too (`serve`): a middleware for every route but `/auth`, whose handler
//! runs the same function itself. With
//! `[telemetry]` it is the request's OpenTelemetry span, continuing the
//! caller's `traceparent` (`telemetry::traces`); the handlers add the app,
//! kind and outcome to it (`record`).

use actix_web::{
    HttpRequest, HttpResponse,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{
        StatusCode,
        header::{HeaderMap, HeaderName, HeaderValue},
    },
    middleware::Next,
};
use std::borrow::Cow;
use std::sync::Arc;
use tracing::Instrument;

/// The request's id, lent to its handler; then moved, not copied, into the
/// answer's `X-Request-Id`.
#[derive(Debug)]
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

/// The id `req` is known by: its own `X-Request-Id` if there is one and it is
/// well formed, else a new UUID. Nothing else from headers or body.
fn id_of(req: &HttpRequest) -> RequestId {
    let mut inbound = req.headers().get_all(&X_REQUEST_ID);
    let inbound = match (inbound.next(), inbound.next()) {
        (Some(v), None) => v.to_str().is_ok_and(well_formed).then(|| v.clone()),
        _ => None,
    };
    RequestId(inbound.unwrap_or_else(|| {
        let ours = uuid::Uuid::new_v4();
        HeaderValue::from_str(ours.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()))
            .expect("a UUID is a header value")
    }))
}

/// An answer: its status goes on the request's trace, the id into its headers.
pub trait Answer {
    fn status(&self) -> StatusCode;
    fn headers_mut(&mut self) -> &mut HeaderMap;
}

impl<B> Answer for ServiceResponse<B> {
    fn status(&self) -> StatusCode {
        self.status()
    }
    fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers_mut()
    }
}

impl<B> Answer for HttpResponse<B> {
    fn status(&self) -> StatusCode {
        self.status()
    }
    fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers_mut()
    }
}

/// A request's id and span, made from its head before it is handled.
pub struct Started {
    id: RequestId,
    span: Spanned,
}

enum Spanned {
    Log(tracing::Span),
    /// With `[telemetry]`: the request's OpenTelemetry span, continuing the
    /// caller's trace (`traces::RequestTrace`; its name and attributes are
    /// made only if sampled). None when it is not started.
    Trace(Option<Arc<crate::telemetry::traces::RequestTrace>>),
}

/// The id and span of `req`.
pub fn start(req: &HttpRequest) -> Started {
    let id = id_of(req);
    let span = if crate::telemetry::traces::on() {
        Spanned::Trace(crate::telemetry::traces::RequestTrace::start(
            // The route's pattern, not the path: a client's path segment is not an attribute.
            || match (method(req), route(req)) {
                ("POST", Cow::Borrowed("/auth/{app}")) => "POST /auth/{app}".into(),
                ("POST", Cow::Borrowed("/auth/{app}/user")) => "POST /auth/{app}/user".into(),
                (method, route) => format!("{method} {route}").into(),
            },
            req.headers(),
            |a| {
                a.add("http.request.method", method(req));
                a.add("http.route", &route(req));
                a.add("request_id", id.as_str());
            },
        ))
    } else {
        Spanned::Log(tracing::debug_span!("request", method = %req.method(), path = %req.path(),
            request_id = %id.as_str()))
    };
    Started { id, span }
}

/// Runs `handle` as a request `started`: given its id, in its span, and the id
/// echoed on the answer. The middleware does this for every route but `/auth`,
/// whose handler does it itself (`auth::route`: one boxed layer less per
/// authorization).
pub async fn serve<A: Answer, E>(
    started: Started,
    handle: impl AsyncFnOnce(&RequestId) -> Result<A, E>,
) -> Result<A, E> {
    let Started { id, span } = started;
    let mut res = match span {
        Spanned::Log(span) => handle(&id).instrument(span).await?,
        // Boxed: an untraced request's future (copied whole into actix's box for
        // every request) carries none of it.
        Spanned::Trace(trace) => Box::pin(traced(trace, handle(&id))).await?,
    };
    res.headers_mut().insert(X_REQUEST_ID, id.0);
    Ok(res)
}

pub async fn request_id_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = start(req.request());
    serve(started, async move |_| next.call(req).await).await
}

async fn traced<A: Answer, E>(
    trace: Option<Arc<crate::telemetry::traces::RequestTrace>>,
    handling: impl Future<Output = Result<A, E>>,
) -> Result<A, E> {
    let Some(trace) = trace else { return handling.await };
    let res = crate::telemetry::traces::with_trace(trace.clone(), handling).await;
    if let Ok(res) = &res {
        trace.set("http.response.status_code", || i64::from(res.status().as_u16()));
    }
    trace.end();
    res
}

/// The route's pattern for a span: the `/auth` scope matches its two routes
/// itself (`auth::route`), so the router knows no pattern for them. Borrowed
/// (no allocation per span) for those two and the unmatched.
fn route(req: &HttpRequest) -> Cow<'static, str> {
    match req.path().strip_prefix("/auth/") {
        Some(rest) if rest.ends_with("/user") => Cow::Borrowed("/auth/{app}/user"),
        Some(_) => Cow::Borrowed("/auth/{app}"),
        None => req.match_pattern().map_or(Cow::Borrowed("unmatched"), Cow::Owned),
    }
}

/// The request's method for a span: the nine of HTTP's standard without an
/// allocation, any other as `_OTHER` (the semantic conventions' word for it).
fn method(req: &HttpRequest) -> &'static str {
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
