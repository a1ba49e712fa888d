//! Cross-origin requests to the auth routes.
//!
//! A signature is only worth stealing if another site can *read* it, so:
//! exact-origin allowlist, credentials only for listed origins, never `*`,
//! `Vary: Origin`, and an unlisted Origin is refused before the body is read
//! or the host is asked. Preflights are answered here and never reach the host.
//! Same-origin requests (no Origin, `Sec-Fetch-Site: same-origin`, or an Origin
//! naming this service's own Host) pass as before.

use crate::{
    error::AuthError,
    metrics::Metrics,
    state::{AppState, Live},
};
use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        Method,
        header::{self, HeaderValue},
    },
    middleware::Next,
    web,
};

enum Decision {
    /// No Origin, or our own origin: not a cross-origin request.
    SameOrigin,
    /// A listed origin: answer with CORS headers for exactly this origin.
    Allowed(HeaderValue),
    Refused(String),
}

fn authority(origin: &str) -> Option<(String, u16)> {
    let url = url::Url::parse(origin).ok()?;
    Some((url.host_str()?.to_ascii_lowercase(), url.port_or_known_default()?))
}

fn host_matches(host_header: &str, origin: &(String, u16)) -> bool {
    let with_port = format!("{}:{}", origin.0, origin.1);
    let host = host_header.to_ascii_lowercase();
    host == with_port || (host == origin.0 && matches!(origin.1, 80 | 443))
}

fn decide(req: &HttpRequest, live: &Live) -> Decision {
    let Some(origin) = req.headers().get(header::ORIGIN) else { return Decision::SameOrigin };
    let text = origin.to_str().unwrap_or_default();
    if req.headers().get("sec-fetch-site").is_some_and(|v| v == "same-origin") {
        return Decision::SameOrigin;
    }
    if let Some(auth) = authority(text) {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        if host.is_some_and(|h| host_matches(h, &auth)) {
            return Decision::SameOrigin;
        }
    }
    let server = &live.settings.server;
    if server.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(text)) {
        return Decision::Allowed(origin.clone());
    }
    Decision::Refused(text.to_owned())
}

fn allow_headers(req: &HttpRequest) -> HeaderValue {
    let requested = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|v| v.to_str().ok());
    let valid = |s: &&str| {
        s.len() <= 512
            && s.split(',').all(|h| {
                let h = h.trim();
                !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    match requested.filter(valid) {
        Some(list) => HeaderValue::from_str(list).unwrap_or(HeaderValue::from_static("content-type")),
        None => HeaderValue::from_static("authorization, content-type, x-csrf-token, x-request-id"),
    }
}

fn add_cors_headers(headers: &mut header::HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("x-request-id"));
}

/// A request's fate at the CORS gate, decided before its route runs.
pub enum Gate {
    /// Answered here: a preflight, or an origin not on the list (never reaches the route).
    Answered(HttpResponse),
    /// Goes on to its route; `Pass::finish` adds the CORS headers to its answer.
    Pass(Pass),
}

/// The headers a passed request's answer gets, whatever the route answers.
pub struct Pass {
    allowed_origin: Option<HeaderValue>,
    vary: bool,
}

impl Pass {
    pub fn finish(self, headers: &mut header::HeaderMap) {
        if self.vary {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Some(origin) = self.allowed_origin {
            add_cors_headers(headers, origin);
        }
    }
}

/// The gate for `req` under the config `live`. The auth routes call it inline
/// (one middleware layer less on every authorization), with the config they then
/// answer by; the other CORS routes through `cors_middleware`.
pub fn gate(req: &HttpRequest, live: &Live, metrics: &Metrics) -> Gate {
    let decision = decide(req, live);
    let vary = !live.settings.server.allowed_origins.is_empty();

    // The auth routes take POST; /client-config is read with GET.
    let (methods, allow) =
        if req.path() == "/client-config" { ("GET", "GET, OPTIONS") } else { ("POST", "POST, OPTIONS") };
    if req.method() == Method::OPTIONS {
        return Gate::Answered(match decision {
            Decision::Allowed(origin) => {
                let mut res = HttpResponse::NoContent()
                    .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, methods))
                    .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers(req)))
                    .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
                    .insert_header((header::VARY, "Origin, Access-Control-Request-Headers"))
                    .finish();
                add_cors_headers(res.headers_mut(), origin);
                res
            }
            Decision::SameOrigin => HttpResponse::NoContent().insert_header((header::ALLOW, allow)).finish(),
            Decision::Refused(origin) => {
                AuthError::OriginNotAllowed(crate::pusher::quote(&origin)).error_response()
            }
        });
    }

    let allowed_origin = match decision {
        Decision::Refused(origin) => {
            let err = AuthError::OriginNotAllowed(crate::pusher::quote(&origin));
            tracing::info!(outcome = "origin_not_allowed", status = 403, error = %err, "auth");
            metrics.auth(crate::metrics::NO_APP, "request", "origin_not_allowed");
            let mut res = err.error_response();
            if vary {
                res.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            return Gate::Answered(res);
        }
        Decision::Allowed(origin) => Some(origin),
        Decision::SameOrigin => None,
    };
    Gate::Pass(Pass { allowed_origin, vary })
}

/// The gate as a middleware, for the routes other than auth's.
pub async fn cors_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().expect("AppState is registered");
    match gate(req.request(), &state.live(), &state.metrics) {
        Gate::Answered(res) => Ok(req.into_response(res)),
        Gate::Pass(pass) => {
            let mut res = next.call(req).await?.map_into_boxed_body();
            pass.finish(res.headers_mut());
            Ok(res)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_comparison_handles_default_ports() {
        let a = authority("https://app.example.com").unwrap();
        assert!(host_matches("app.example.com", &a));
        assert!(host_matches("APP.example.com:443", &a));
        assert!(!host_matches("evil.example.com", &a));
        let b = authority("http://127.0.0.1:8080").unwrap();
        assert!(host_matches("127.0.0.1:8080", &b));
        assert!(!host_matches("127.0.0.1", &b));
        assert!(authority("null").is_none());
    }
}
