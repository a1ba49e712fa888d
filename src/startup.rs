//! Building and running the HTTP server(s): listeners, routes, background tasks.

use crate::{config::Settings, routes, state::AppState};
use actix_web::{App, HttpServer, dev::Server, middleware::from_fn, web};
use anyhow::Context;
use std::{net::TcpListener, path::PathBuf};

pub struct Application {
    port: u16,
    admin_port: u16,
    server: Server,
    admin: Server,
    state: web::Data<AppState>,
    signals: Option<StopSignals>,
}

/// SIGTERM drains in-flight requests; SIGINT and SIGQUIT stop at once (actix's
/// own meanings), for both servers together. Registered before the listeners
/// exist, so a signal sent as soon as the port answers is never missed: actix
/// registers its own only once each server runs, and with two servers one of
/// them could miss it and keep the process alive.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// None outside a Tokio runtime (actix's own handling then applies).
    fn register() -> Option<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        tokio::runtime::Handle::try_current().ok()?;
        Some(Self {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
            quit: signal(SignalKind::quit()).ok()?,
        })
    }

    /// Waits for the first stop signal: true for a graceful (SIGTERM) stop.
    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.term.recv() => true,
            _ = self.int.recv() => false,
            _ = self.quit.recv() => false,
        }
    }
}

impl Application {
    /// Binds `server.listen` (and `server.admin_listen`) and prepares the servers.
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let signals = StopSignals::register();
        let addr = settings.server.listen;
        let listener =
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} (server.listen)"))?;
        Self::build_with_signals(settings, listener, signals)
    }

    pub fn build_with_listener(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        Self::build_with_signals(settings, listener, StopSignals::register())
    }

    fn build_with_signals(
        settings: Settings,
        listener: TcpListener,
        signals: Option<StopSignals>,
    ) -> anyhow::Result<Self> {
        let addr = settings.server.admin_listen;
        let admin_listener = TcpListener::bind(addr).with_context(|| {
            format!(
                "cannot listen on {addr} (server.admin_listen; 9090 is also Prometheus's own port: \
                 give each replica on one host, and any host running Prometheus, another admin_listen)"
            )
        })?;
        let port = listener.local_addr()?.port();
        let admin_port = admin_listener.local_addr()?.port();
        limit_receive_buffer(&listener)?;
        let server_settings = settings.server.clone();
        let state = web::Data::new(AppState::new(settings)?);

        if tokio::runtime::Handle::try_current().is_ok() {
            crate::webhooks::sender::spawn(state.clone().into_inner());
            crate::presence::publisher::spawn_publisher(state.clone().into_inner());
            crate::webhooks::reconcile::spawn(state.clone().into_inner());
            crate::status::spawn_sampler(state.clone().into_inner());
            crate::fleet::flush::spawn(state.clone().into_inner());
            crate::failover::task::spawn(state.clone().into_inner());
        }
        let app_state = state.clone();
        let mut server =
            HttpServer::new(move || App::new().app_data(app_state.clone()).configure(configure_routes))
                .shutdown_timeout(server_settings.shutdown_timeout.as_secs())
                .client_request_timeout(server_settings.header_timeout)
                .listen(listener)?;
        if let Some(n) = server_settings.workers {
            server = server.workers(n);
        }
        let admin_state = state.clone();
        let mut admin = HttpServer::new(move || {
            App::new()
                .app_data(admin_state.clone())
                .configure(configure_admin_routes)
                .wrap(from_fn(routes::admin_host_middleware))
        })
        .workers(1)
        .shutdown_timeout(server_settings.shutdown_timeout.as_secs())
        .client_request_timeout(server_settings.header_timeout)
        .listen(admin_listener)?;
        if signals.is_some() {
            server = server.disable_signals();
            admin = admin.disable_signals();
        }
        Ok(Self { port, admin_port, server: server.run(), admin: admin.run(), state, signals })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Reload the config from `path` on SIGHUP and when it (or a secret file) changes.
    pub fn watch_config(&self, path: PathBuf) -> anyhow::Result<()> {
        self.state.set_config_path(path)?;
        crate::reload::spawn(self.state.clone().into_inner())
    }

    /// Runs until SIGTERM/SIGINT/SIGQUIT; SIGTERM drains in-flight requests first.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        if let Some(mut signals) = self.signals {
            let (main, admin) = (self.server.handle(), self.admin.handle());
            tokio::spawn(async move {
                let graceful = signals.next().await;
                tracing::info!(graceful, "stop signal received; stopping both listeners");
                futures_util::future::join(main.stop(graceful), admin.stop(graceful)).await;
            });
        }
        let (main, admin) = futures_util::future::join(self.server, self.admin).await;
        // The last second's counts, so a rolling restart loses none (SIGKILL: at most one flush).
        match crate::fleet::flush::flush(&**self.state, true).await {
            Some(Ok(())) => tracing::info!("fleet: final counts flushed to redis"),
            Some(Err(e)) => tracing::warn!(error = %e, "fleet: final counts not flushed; redis unavailable"),
            None => {}
        }
        main.and(admin)
    }
}

/// The kernel receive buffer of accepted connections (Linux doubles the value
/// set). actix's HTTP/1 dispatcher reads up to 128 KiB of a connection ahead
/// of the handler, whatever the handler then decides; with a small kernel
/// buffer it can only read what the kernel holds, and TCP flow control keeps
/// the rest of a hostile body at the sender — so 500 connections pushing
/// 256 KiB bodies cost the service a few MiB, not 64. Requests here are small
/// (auth bodies ≤ 8 KiB by default), so the window costs them nothing.
const RECEIVE_BUFFER_BYTES: usize = 16 * 1024;

fn limit_receive_buffer(listener: &TcpListener) -> std::io::Result<()> {
    // Accepted sockets inherit the listener's buffer size.
    socket2::SockRef::from(listener).set_recv_buffer_size(RECEIVE_BUFFER_BYTES)
}

/// Matches only while `feature` is configured: an unconfigured feature's routes
/// answer the plain 404, before a body byte is read. A guard rather than
/// conditional mounting, so a reload that adds the section turns them on.
fn configured(feature: fn(&Settings) -> bool) -> impl actix_web::guard::Guard {
    actix_web::guard::fn_guard(move |ctx| {
        ctx.app_data::<web::Data<AppState>>().is_some_and(|state| feature(&state.live().settings))
    })
}

/// The route table of the public listener: auth, and publish/webhooks when configured.
/// Metrics and the status page are on the admin listener only.
pub fn configure_routes(cfg: &mut web::ServiceConfig) {
    // First: the hot path then matches on its first, static, prefix. The scope's
    // one service tells /auth/{app} from /auth/{app}/user and gives the request
    // its id and span and runs the CORS gate itself (routes::auth).
    cfg.service(web::scope("/auth").default_service(web::to(routes::auth)));
    // Every other route, and the 404, under the request-id middleware.
    cfg.service(web::scope("").wrap(from_fn(routes::request_id_middleware)).configure(other_routes));
    // What neither scope matches (`OPTIONS *`). A scope nested below inherits
    // this default unless it names its own (`routes::not_found`), as it must:
    // this one gives the request its id and span, which the middleware has done.
    cfg.default_service(web::to(routes::unmatched));
}

/// The public listener's routes but `/auth`.
fn other_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(routes::healthz)).route("/readyz", web::get().to(routes::readyz));
    crate::publish::configure(cfg, configured(|s| s.publish.is_some()));
    cfg.service(
        web::resource("/client-config")
            .guard(configured(|s| s.rollout.is_some()))
            .wrap(from_fn(routes::cors_middleware))
            .route(web::get().to(crate::rollout::client_config::client_config)),
    );
    cfg.service(
        web::resource("/recover/{app}")
            .guard(configured(|s| s.recovery.is_some()))
            .wrap(from_fn(routes::cors_middleware))
            .route(web::post().to(crate::recovery::routes::recover)),
    );
    cfg.service(
        web::resource("/webhooks")
            .guard(configured(|s| s.webhooks.is_some()))
            .route(web::post().to(crate::webhooks::routes::receive)),
    );
    cfg.default_service(routes::not_found());
}

/// The admin listener: health, metrics and the migration status; never the auth routes.
pub fn configure_admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(routes::healthz))
        .route("/readyz", web::get().to(routes::readyz))
        .route("/metrics", web::get().to(routes::metrics))
        .route("/status", web::get().to(crate::status::status_json))
        .route("/status.html", web::get().to(crate::status::status_page))
        .route("/admin/failover", web::get().to(crate::failover::routes::show))
        .route("/admin/failover", web::post().to(crate::failover::routes::act))
        .default_service(routes::not_found());
}
