//! Building and running the HTTP server.

use crate::{config::Settings, routes, session_check::SessionCheckClient, telemetry::RequestSpan};
use actix_web::{App, HttpResponse, HttpServer, dev::Server, middleware::from_fn, web};
use anyhow::Context;
use std::net::TcpListener;
use tracing_actix_web::TracingLogger;

/// Shared, immutable per-process state.
pub struct AppState {
    pub settings: Settings,
    pub session_check: SessionCheckClient,
    pub rate_limiter: Option<routes::ClientRateLimiter>,
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Binds `server.listen` and prepares the server (it runs once awaited).
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let addr = settings.server.listen;
        let listener =
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} (server.listen)"))?;
        Self::build_with_listener(settings, listener)
    }

    pub fn build_with_listener(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        let session_check =
            SessionCheckClient::new(&settings.session_check).context("building the session-check client")?;
        let workers = settings.server.workers;
        let shutdown = settings.server.shutdown_timeout.as_secs();
        let header_timeout = settings.server.header_timeout;
        let rate_limiter = settings.rate_limit.map(routes::ClientRateLimiter::new);
        let state = web::Data::new(AppState { settings, session_check, rate_limiter });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(configure_routes)
                .wrap(TracingLogger::<RequestSpan>::new())
                .wrap(from_fn(routes::request_id_middleware))
        })
        .shutdown_timeout(shutdown)
        .client_request_timeout(header_timeout)
        .listen(listener)?;
        if let Some(n) = workers {
            server = server.workers(n);
        }
        Ok(Self { port, server: server.run() })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until SIGTERM/SIGINT; SIGTERM drains in-flight requests first.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

fn json_error(status: actix_web::http::StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({"error": {"code": code, "message": message}}))
}

/// The route table.
pub fn configure_routes(cfg: &mut web::ServiceConfig) {
    use actix_web::http::StatusCode;
    let method_not_allowed = || {
        web::route()
            .to(|| async { json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST") })
    };
    cfg.route("/healthz", web::get().to(routes::healthz))
        .route("/readyz", web::get().to(routes::readyz))
        .service(
            web::scope("/auth")
                .wrap(from_fn(routes::cors_middleware))
                .wrap(from_fn(routes::rate_limit_middleware))
                .service(
                    web::resource("/{app}")
                        .route(web::post().to(routes::channel_auth))
                        .default_service(method_not_allowed()),
                )
                .service(
                    web::resource("/{app}/user")
                        .route(web::post().to(routes::user_auth))
                        .default_service(method_not_allowed()),
                ),
        )
        .default_service(web::to(|| async {
            json_error(StatusCode::NOT_FOUND, "not_found", "no such route")
        }));
}
