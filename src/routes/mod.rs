//! HTTP routes, one file per endpoint family.

mod admin;
mod auth;
mod cors;
mod request_id;

pub use admin::{admin_host_middleware, healthz, metrics, readyz};
pub use auth::route as auth;
pub use cors::cors_middleware;
pub use request_id::{RequestId, record, request_id_middleware};

/// The client a request is charged to (rate limit, in-flight and webhook-reader
/// shares): the peer, or the right-most untrusted hop when the peer is a
/// trusted proxy (never a header a client could set to dodge its share).
pub(crate) fn client_address(
    req: &actix_web::HttpRequest,
    trusted_proxies: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let peer = req.peer_addr().map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
    const X_FORWARDED_FOR: actix_web::http::header::HeaderName =
        actix_web::http::header::HeaderName::from_static("x-forwarded-for");
    let xff = || req.headers().get_all(&X_FORWARDED_FOR).map(|v| v.as_bytes()).collect();
    crate::session_check::client_ip(peer, xff, trusted_proxies)
}
