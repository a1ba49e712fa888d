use thiserror::Error;

/// Why a protocol value was refused. Messages quote the (shortened) input so
/// integrators can see what their client sent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("invalid socket_id {0}: expected digits '.' digits, like \"1234.5678\"")]
    InvalidSocketId(String),
    #[error("invalid channel_name {name}: {reason}")]
    InvalidChannelName { name: String, reason: &'static str },
    #[error(
        "channel {0} is public: only private-, presence- and private-encrypted- channels need authorization"
    )]
    PublicChannel(String),
    #[error(
        "this app has no encryption master key configured, so private-encrypted- channels cannot be authorized"
    )]
    EncryptionNotConfigured,
    #[error("a presence channel needs a user_id")]
    MissingUserId,
    #[error("invalid user id {id}: {reason}")]
    InvalidUserId { id: String, reason: &'static str },
    #[error("invalid user_info: {0}")]
    InvalidUserInfo(&'static str),
    #[error("invalid watchlist: {0}")]
    InvalidWatchlist(&'static str),
}
