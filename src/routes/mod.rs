//! HTTP routes, one file per endpoint family.

mod admin;
mod auth;
mod cors;
mod request_id;

pub use admin::{admin_host_middleware, healthz, metrics, readyz};
pub use auth::route as auth;
pub use cors::cors_middleware;
pub use request_id::{RequestId, record, request_id_middleware};

use actix_web::http::header::{AUTHORIZATION, COOKIE, HeaderMap, HeaderName};

/// The JSON 404 of a path no route serves.
pub fn not_found() -> actix_web::Route {
    actix_web::web::to(|| async { not_found_answer() })
}

pub(super) fn not_found_answer() -> actix_web::HttpResponse {
    crate::error::json_error(actix_web::http::StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// The 404 of a request no scope matches (`OPTIONS *`, whose path has no
/// leading `/`), with its id and span as every other answer.
pub async fn unmatched(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    let started = request_id::start(&req);
    let Ok(res) =
        request_id::serve(started, async |_| Ok::<_, std::convert::Infallible>(not_found_answer())).await;
    res
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client a request is charged to (rate limit, in-flight and webhook-reader
/// shares): the peer, or the right-most untrusted hop when the peer is a
/// trusted proxy (never a header a client could set to dodge its share).
pub(crate) fn client_address(
    req: &actix_web::HttpRequest,
    trusted_proxies: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let peer = req.peer_addr().map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
    let xff = || req.headers().get_all(X_FORWARDED_FOR).map(|v| v.as_bytes()).collect();
    crate::session_check::client_ip(peer, xff, trusted_proxies)
}

/// Every value of the header `name` (lowercase). The names every check asks for
/// are looked up by constant: a lookup by string parses the name each time.
pub(crate) fn header_values<'r>(headers: &'r HeaderMap, name: &str) -> Vec<&'r [u8]> {
    let values = match name {
        "cookie" => headers.get_all(COOKIE),
        "authorization" => headers.get_all(AUTHORIZATION),
        "x-forwarded-for" => headers.get_all(X_FORWARDED_FOR),
        other => headers.get_all(other),
    };
    values.map(|v| v.as_bytes()).collect()
}
