//! HTTP routes, one file per endpoint family.

mod admin;
mod auth;
mod client_config;
mod cors;
mod request_id;
mod webhooks;

pub use admin::{healthz, metrics, readyz};
pub use auth::{channel_auth, user_auth};
pub use client_config::client_config;
pub use cors::cors_middleware;
pub use request_id::{RequestId, request_id_middleware};
pub use webhooks::receive as receive_webhook;
