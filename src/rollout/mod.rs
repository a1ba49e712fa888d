//! The rollout: which app each client is told to use (`[rollout]`), the
//! `GET /client-config` route that tells it, and the `rollout-changed`
//! announcements that move live clients when the config changes. Reached by
//! path (`rollout::client_config::client_config`): this file re-exports
//! nothing, so the config (which the loader uses) never leads to the routes.

pub(crate) mod announce;
pub(crate) mod assign;
pub(crate) mod client_config;
pub(crate) mod config;
