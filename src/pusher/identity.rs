//! Who the host app says the user is. These values are signed into presence
//! `channel_data` and sign-in `user_data`, so they come only from the host.

use super::{ProtocolError, quote};
use serde_json::{Map, Value};

pub const MAX_USER_ID_LEN: usize = 128;
/// Pusher's "1 KB limit for the user object", measured on the compact JSON.
pub const MAX_USER_INFO_BYTES: usize = 1024;
pub const MAX_WATCHLIST: usize = 100;

/// A user id: a non-empty string of at most 128 characters without control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(input: &str) -> Result<Self, ProtocolError> {
        let invalid = |reason| ProtocolError::InvalidUserId { id: quote(input), reason };
        if input.is_empty() {
            return Err(invalid("it is empty"));
        }
        if input.chars().count() > MAX_USER_ID_LEN {
            return Err(invalid("it is longer than 128 characters"));
        }
        if input.chars().any(char::is_control) {
            return Err(invalid("it contains control characters"));
        }
        Ok(Self(input.to_owned()))
    }

    /// Sign-in ids become part of the `#server-to-user-<id>` channel name, so
    /// they must also use the channel-name character set.
    pub fn parse_for_signin(input: &str) -> Result<Self, ProtocolError> {
        let id = Self::parse(input)?;
        if !input.chars().all(super::channel::is_name_char) {
            return Err(ProtocolError::InvalidUserId {
                id: quote(input),
                reason: concat!("sign-in ids may only use ", crate::name_chars!()),
            });
        }
        Ok(id)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Free-form user information: a JSON object of at most 1 KiB.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct UserInfo(Map<String, Value>);

impl UserInfo {
    pub fn parse(value: Value) -> Result<Self, ProtocolError> {
        let Value::Object(map) = value else {
            return Err(ProtocolError::InvalidUserInfo("it must be a JSON object"));
        };
        let mut size = Counted(0);
        let size = serde_json::to_writer(&mut size, &map).map_or(usize::MAX, |()| size.0);
        if size > MAX_USER_INFO_BYTES {
            return Err(ProtocolError::InvalidUserInfo("it is larger than 1024 bytes as JSON"));
        }
        Ok(Self(map))
    }
}

/// Counts the bytes written to it: a size without the buffer.
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// User ids whose online status a signed-in user may watch (at most 100).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct Watchlist(Vec<UserId>);

impl Watchlist {
    pub fn parse(value: Value) -> Result<Self, ProtocolError> {
        let Value::Array(items) = value else {
            return Err(ProtocolError::InvalidWatchlist("it must be an array of user id strings"));
        };
        if items.len() > MAX_WATCHLIST {
            return Err(ProtocolError::InvalidWatchlist("it has more than 100 entries"));
        }
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => UserId::parse_for_signin(s),
                _ => Err(ProtocolError::InvalidWatchlist("it must be an array of user id strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_ids_are_bounded_non_empty_strings() {
        assert!(UserId::parse("42").is_ok());
        assert!(UserId::parse("Ada Lovelace").is_ok());
        assert!(UserId::parse(&"x".repeat(128)).is_ok());
        for bad in ["", "a\nb", "a\u{0}"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UserId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn signin_ids_use_the_channel_charset() {
        assert!(UserId::parse_for_signin("user-42@example.com").is_ok());
        assert!(UserId::parse_for_signin("Ada Lovelace").is_err());
    }

    #[test]
    fn user_info_must_be_a_small_object() {
        assert!(UserInfo::parse(json!({"name": "Ada"})).is_ok());
        assert!(UserInfo::parse(json!("Ada")).is_err());
        assert!(UserInfo::parse(json!([1])).is_err());
        assert!(UserInfo::parse(json!({"n": "x".repeat(1100)})).is_err());
        // `{"n":""}` is 8 bytes: the limit is on the JSON as it is signed, to the byte.
        assert!(UserInfo::parse(json!({"n": "x".repeat(1016)})).is_ok());
        assert!(UserInfo::parse(json!({"n": "x".repeat(1017)})).is_err());
        assert!(UserInfo::parse(json!({"n": "\"".repeat(508)})).is_ok(), "escapes count as written");
        assert!(UserInfo::parse(json!({"n": "\"".repeat(509)})).is_err());
    }

    #[test]
    fn watchlists_hold_at_most_100_valid_ids() {
        assert!(Watchlist::parse(json!(["1", "2"])).is_ok());
        let ids: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        assert!(Watchlist::parse(json!(ids)).is_err());
        assert!(Watchlist::parse(json!([1])).is_err());
        assert!(Watchlist::parse(json!("1")).is_err());
    }
}
