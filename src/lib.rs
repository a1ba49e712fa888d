//! pusher-dual-auth: Pusher Channels auth for two (or more) apps at once,
//! deciding through the host app's session check and signing with the secret
//! of the app each route serves.

pub mod auth_request;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod outbound;
pub mod publish;
pub mod pusher;
pub mod rate_limit;
pub mod reload;
pub mod routes;
pub mod session_check;
pub mod startup;
pub mod state;
pub mod status;
pub mod tasks;
pub mod telemetry;
pub mod tools;
pub mod webhooks;
