//! Black-box tests: the real server on port 0 against a real HTTP host stub.
mod abuse;
mod auth;
mod batch;
mod clients;
#[path = "../common/mod.rs"]
mod common;
mod cors;
mod faults;
mod hardening;
mod headers;
mod helpers;
mod host_failures;
mod keep_alive;
mod presence_bridge;
mod publish;
mod raw_http;
mod recovery;
mod refusals;
mod rollout;
mod status;
mod storm;
mod stray_answers;
mod unix_socket;
mod user;
mod webhooks;
mod webhooks_redis;
