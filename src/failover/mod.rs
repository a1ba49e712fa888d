//! Failover between the rollout's two apps: each replica probes both
//! (`probe`), the fleet agrees on which one, if any, is failed (`decide`,
//! through Redis with the webhook state), `/client-config` answers the healthy
//! one, and an announcement moves live clients. Reached by path: startup
//! spawns `task::spawn`, the admin routes are `routes::*`.

pub(crate) mod config;
pub(crate) mod decide;
pub(crate) mod probe;
pub(crate) mod routes;
pub(crate) mod shared;
pub(crate) mod state;
pub(crate) mod task;
