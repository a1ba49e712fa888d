//! The operators' routes: liveness, readiness and Prometheus metrics.

use crate::state::AppState;
use actix_web::{HttpResponse, web};

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
