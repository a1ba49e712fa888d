pub mod auth_request;
pub mod config;
pub mod pusher;
pub mod session_check;
