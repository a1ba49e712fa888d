//! HTTP routes, one file per endpoint family.

mod auth;
mod cors;
mod health;
mod request_id;
mod webhooks;

pub use auth::{channel_auth, user_auth};
pub use cors::cors_middleware;
pub use health::{healthz, metrics, readyz};
pub use request_id::{RequestId, request_id_middleware};
pub use webhooks::{WebhookError, receive as receive_webhook};
