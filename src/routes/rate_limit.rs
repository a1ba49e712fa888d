//! Optional per-client-IP token bucket on the auth routes (`[rate_limit]`).
//! The client IP is the peer, or the right-most untrusted hop of
//! X-Forwarded-For when the peer is a trusted proxy — never a header a client
//! could set to dodge the limit.

use crate::{error::AuthError, session_check::client_ip, startup::AppState};
use actix_web::{
    ResponseError,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::{
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
};

pub struct ClientRateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

impl ClientRateLimiter {
    pub fn new(settings: crate::config::RateLimitSettings) -> Self {
        let quota = Quota::per_second(settings.per_second).allow_burst(settings.burst);
        Self { limiter: RateLimiter::keyed(quota), checks: AtomicU64::new(0) }
    }

    fn allow(&self, ip: IpAddr) -> bool {
        // Forget idle clients now and then, so memory stays bounded by recent ones.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).is_ok()
    }
}

pub async fn rate_limit_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned().expect("AppState is registered");
    let live = state.live();
    if let (Some(limiter), Some(peer)) = (&live.rate_limiter, req.peer_addr()) {
        let trusted = &live.settings.server.trusted_proxies;
        let ip = client_ip(
            peer.ip(),
            || req.headers().get_all("x-forwarded-for").map(|v| v.as_bytes()).collect(),
            trusted,
        );
        if !limiter.allow(ip) {
            let err = AuthError::RateLimited;
            tracing::info!(outcome = "rate_limited", status = 429, client_ip = %ip, "auth");
            state.metrics.auth("-", "request", "rate_limited");
            let mut res = err.error_response();
            res.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("1"),
            );
            return Ok(req.into_response(res));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
