//! The operators' routes: liveness, readiness and Prometheus metrics, and the
//! admin listener's `Host` check.

use crate::state::AppState;
use actix_web::{
    HttpResponse,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};

/// Whether the admin listener answers a request naming `host` (the `Host`
/// header, port included). DNS rebinding: a page an operator opens can point
/// its own name at 127.0.0.1 and read this listener through their browser;
/// such a request names that domain. An IP literal cannot be rebound, and
/// localhost names never leave the machine; anything else must be listed in
/// `server.admin_hosts`. No Host (HTTP/1.0) is a client that is not a browser.
pub fn admin_host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(host) = host else { return true };
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split(']').next().is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.contains(&name)
}

/// Refuses (403) requests whose `Host` the admin listener does not answer.
pub async fn admin_host_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let host = match req.headers().get(actix_web::http::header::HOST) {
        Some(v) => Some(v.to_str().unwrap_or("\u{0}")),
        None => None,
    };
    let allowed = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| admin_host_allowed(host, &state.live().settings.server.admin_hosts));
    if !allowed {
        let body = crate::error::error_body(
            "host_not_allowed",
            "the admin listener answers IP addresses, localhost and server.admin_hosts only",
        );
        return Ok(req.into_response(HttpResponse::Forbidden().json(body)));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Liveness: the process answers. No dependencies, so a slow host app never
/// gets every replica restarted at once.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: a validated configuration with at least one app is loaded.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let live = state.live();
    let apps: Vec<&str> = live.settings.apps.keys().map(String::as_str).collect();
    if apps.is_empty() {
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "no apps configured"}));
    }
    HttpResponse::Ok().json(serde_json::json!({"status": "ready", "apps": apps}))
}

/// Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.set_checks_in_flight(state.live().session_check.in_flight());
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}

#[cfg(test)]
mod tests {
    use super::admin_host_allowed as ok;

    #[test]
    fn ip_literals_and_localhost_pass_and_other_names_only_when_listed() {
        let listed = vec!["metrics.internal".to_owned()];
        for host in [
            "127.0.0.1:9090",
            "10.1.2.3:9090",
            "10.1.2.3",
            "[::1]:9090",
            "localhost:9090",
            "LOCALHOST",
            "app.localhost:1",
            "metrics.internal:9090",
            "metrics.internal.",
        ] {
            assert!(ok(Some(host), &listed), "{host}");
        }
        assert!(ok(None, &listed), "no Host: not a browser");
        for host in [
            "attacker.example:9090",
            "attacker.example",
            "127.0.0.1.nip.io:9090",
            "localhost.attacker.example",
            "[not-an-ip]:9090",
            "\u{0}",
            "",
        ] {
            assert!(!ok(Some(host), &listed), "{host}");
        }
        assert!(!ok(Some("metrics.internal"), &[]), "not listed here");
    }
}
