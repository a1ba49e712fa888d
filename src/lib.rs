//! pusher-dual-auth: Pusher Channels auth for two (or more) apps at once,
//! deciding through the host app's session check and signing with the secret
//! of the app each route serves.
//!
//! Public: what the binary, the integration tests, the benches and the fuzz
//! targets use. Everything else is internal, so unused code is flagged.

pub mod auth_request;
pub mod cli;
pub mod config;
pub mod pusher;
pub mod session_check;
pub mod startup;
pub mod telemetry;

mod body;
mod burst;
mod client_group;
mod client_stats;
mod demo;
mod doctor;
mod error;
mod failover;
mod fair_share;
mod fleet;
mod metrics;
mod outbound;
mod presence;
mod publish;
mod rate_limit;
mod recovery;
mod redis_client;
mod reload;
mod rollout;
mod routes;
mod seeded_map;
mod state;
mod status;
mod tools;
mod webhooks;
