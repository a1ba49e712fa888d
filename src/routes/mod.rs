//! HTTP routes, one file per endpoint family.

mod auth;
mod body;
mod cors;
mod health;
mod rate_limit;
mod request_id;

pub use auth::{channel_auth, user_auth};
pub use body::{BodyError, read_body};
pub use cors::cors_middleware;
pub use health::{healthz, metrics, readyz};
pub use rate_limit::ClientRateLimiter;
pub use request_id::{RequestId, request_id_middleware};
