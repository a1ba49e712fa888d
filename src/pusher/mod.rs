//! The Pusher Channels auth protocol, pure: parsing, signing, no I/O.
//!
//! Everything here is checked against the vectors in `pusher-protocol.md`.

mod channel;
mod credentials;
pub mod encryption;
mod error;
mod identity;
pub mod rest;
mod signature;
mod socket_id;

pub use channel::{
    ChannelKind, ChannelName, MAX_CHANNEL_NAME_LEN, PresencePattern, PublicChannelName, is_name,
};
pub use credentials::{AppCredentials, AppKey, MasterKey};
pub use error::ProtocolError;
pub use identity::{MAX_USER_ID_LEN, MAX_USER_INFO_BYTES, MAX_WATCHLIST, UserId, UserInfo, Watchlist};
pub use signature::{
    ChannelAuth, PresenceMember, SignedUser, UserData, authenticate_user, authorize_channel,
    channel_string_to_sign, hmac_sha256_hex, hmac_sha256_matches, shared_secret,
};
pub use socket_id::SocketId;

/// Shortens and escapes client input for error messages, so a hostile value can
/// neither flood a log line nor inject control characters into it.
pub fn quote(input: &str) -> String {
    const MAX: usize = 64;
    let mut s: String = input.chars().take(MAX).collect();
    if input.chars().count() > MAX {
        s.push('…');
    }
    format!("{s:?}")
}
