//! Interpreting the host app's answer. Pure, so it can be fuzzed.

use crate::pusher::{PresenceMember, ProtocolError, UserData, UserId, UserInfo, Watchlist};
use serde_json::Value;
use std::sync::Arc;

/// Why the session check did not produce a decision. Every variant fails closed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum HostError {
    #[error("the session check did not answer within the timeout")]
    Timeout,
    #[error("cannot connect to the session check: {0}")]
    Connect(String),
    #[error("the session check answered HTTP {0} (expected 2xx, 401 or 403)")]
    Status(u16),
    #[error("the session check answer is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the session check answer is invalid: {0}")]
    InvalidBody(String),
    #[error("the session check request failed: {0}")]
    Transport(String),
    #[error("{0} session checks are already in flight (session_check.max_in_flight)")]
    Busy(usize),
    #[error("this client already has {0} session checks in flight (session_check.max_in_flight_per_client)")]
    ClientBusy(usize),
    /// An answer that cannot be tied to its check (a stray copy of another
    /// check's answer on a kept-alive connection): never taken, whatever it says.
    #[error("the session check answer is not this check's: {0}")]
    Unmatched(&'static str),
}

/// What the host decided. The identity is shared: coalesced and cached answers
/// hand every waiter the same one instead of a deep copy of `user_info`.
#[derive(Debug, Clone, PartialEq)]
pub enum HostAnswer {
    Allowed(Arc<HostIdentity>),
    Denied,
}

/// The identity fields of an "allowed" answer, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostIdentity {
    user_id: Option<UserId>,
    user_info: Option<UserInfo>,
    watchlist: Option<Value>,
}

fn invalid(e: impl ToString) -> HostError {
    HostError::InvalidBody(e.to_string())
}

/// The fields of an "allowed" answer that are read; others are ignored. A key
/// given twice is refused (serde's "duplicate field"), as a form field given
/// twice is: which of two `user_id`s the host meant is not ours to guess.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(default, borrow)]
    user_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    user_info: Option<Value>,
    #[serde(default)]
    watchlist: Option<Value>,
}

/// Maps a host status and body to a decision:
/// 2xx + JSON object → allowed; 401/403 → denied; anything else → error.
pub fn interpret(status: u16, body: &[u8]) -> Result<HostAnswer, HostError> {
    match status {
        200..=299 => {}
        401 | 403 => return Ok(HostAnswer::Denied),
        other => return Err(HostError::Status(other)),
    }
    // An object, and only an object: serde also reads a struct from an array
    // (`["42"]` would be user_id 42).
    if body.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) != Some(&b'{') {
        return Err(invalid("expected a JSON object"));
    }
    // Read straight into the three fields (no map of the whole answer built first).
    let answer: Answer<'_> = serde_json::from_slice(body).map_err(|e| {
        invalid(if e.is_data() {
            format!("expected a JSON object of the identity fields ({e})")
        } else {
            format!("not JSON ({e})")
        })
    })?;
    let user_id = answer.user_id.map(|id| UserId::parse(&id)).transpose().map_err(invalid)?;
    // `null` is as absent (serde reads it as None).
    let user_info = answer.user_info.map(UserInfo::parse).transpose().map_err(invalid)?;
    Ok(HostAnswer::Allowed(Arc::new(HostIdentity { user_id, user_info, watchlist: answer.watchlist })))
}

impl HostIdentity {
    /// The presence member to sign; a presence channel without `user_id` is an error.
    pub fn presence_member(&self) -> Result<PresenceMember<'_>, HostError> {
        let id = self.user_id.as_ref().ok_or_else(|| invalid(ProtocolError::MissingUserId))?;
        Ok(PresenceMember { user_id: id, user_info: self.user_info.as_ref() })
    }

    /// The sign-in user data; the id must also be usable in `#server-to-user-<id>`.
    pub fn user_data(&self) -> Result<UserData, HostError> {
        let id = self.user_id.as_ref().ok_or_else(|| invalid("sign-in needs a user_id"))?.as_ref();
        let watchlist = self.watchlist.clone().map(Watchlist::parse).transpose().map_err(invalid)?;
        Ok(UserData {
            id: UserId::parse_for_signin(id).map_err(invalid)?,
            user_info: self.user_info.clone(),
            watchlist,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping_fails_closed() {
        assert!(matches!(interpret(200, b"{}"), Ok(HostAnswer::Allowed(_))));
        assert!(matches!(interpret(201, b"{}"), Ok(HostAnswer::Allowed(_))));
        assert_eq!(interpret(401, b""), Ok(HostAnswer::Denied));
        assert_eq!(interpret(403, b"{}"), Ok(HostAnswer::Denied));
        for status in [100, 204, 301, 302, 304, 307, 400, 404, 407, 429, 500, 502, 503] {
            let r = interpret(status, b"");
            assert!(r.is_err() && r != Ok(HostAnswer::Denied), "{status}");
        }
    }

    #[test]
    fn allowed_needs_a_json_object() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"[\"42\"]",
            b" [\"42\", {\"name\": \"Ada\"}]",
            b"\"ok\"",
            b"true",
            b"<html>",
            b"{\"user_id\":",
            b"{\"user_id\":\"1\"} trailing",
        ] {
            assert!(
                matches!(interpret(200, body), Err(HostError::InvalidBody(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn identity_fields_are_validated() {
        for body in [
            &br#"{"user_id":42}"#[..],
            br#"{"user_id":""}"#,
            br#"{"user_id":"a","user_info":"x"}"#,
            br#"{"user_id":"a","user_info":[1]}"#,
        ] {
            assert!(interpret(200, body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let long = format!(r#"{{"user_id":"{}"}}"#, "x".repeat(129));
        assert!(interpret(200, long.as_bytes()).is_err());
    }

    #[test]
    fn a_key_given_twice_is_refused_and_null_is_as_absent() {
        for body in [
            &br#"{"user_id":"a","user_id":"b"}"#[..],
            br#"{"user_id":"a","user_info":{},"user_info":{"name":"b"}}"#,
            br#"{"watchlist":[],"watchlist":["1"]}"#,
        ] {
            assert!(
                matches!(interpret(200, body), Err(HostError::InvalidBody(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let HostAnswer::Allowed(id) =
            interpret(200, br#"{"user_id":null,"user_info":null,"watchlist":null,"x":[1,{"y":2}]}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(*id, HostIdentity::default());
        // An escaped id is read as the string it encodes.
        let HostAnswer::Allowed(id) = interpret(200, br#"{"user_id":"a\u0062c"}"#).unwrap() else { panic!() };
        assert_eq!(id.presence_member().unwrap().user_id.as_ref(), "abc");
    }

    #[test]
    fn presence_needs_user_id_but_private_does_not() {
        let HostAnswer::Allowed(id) = interpret(200, b"{}").unwrap() else { panic!() };
        assert!(id.presence_member().is_err());
        let HostAnswer::Allowed(id) =
            interpret(200, br#"{"user_id":"42","user_info":{"name":"Ada"},"extra":1}"#).unwrap()
        else {
            panic!()
        };
        let m = id.presence_member().unwrap();
        assert_eq!(m.user_id.as_ref(), "42");
        assert!(m.user_info.is_some());
    }

    #[test]
    fn signin_identity_validates_watchlist_and_charset() {
        let HostAnswer::Allowed(id) = interpret(200, br#"{"user_id":"42","watchlist":["1","2"]}"#).unwrap()
        else {
            panic!()
        };
        assert!(id.user_data().unwrap().watchlist.is_some());
        let HostAnswer::Allowed(id) = interpret(200, br#"{"user_id":"42","watchlist":"1"}"#).unwrap() else {
            panic!()
        };
        assert!(id.user_data().is_err());
        let HostAnswer::Allowed(id) = interpret(200, br#"{"user_id":"Ada Lovelace"}"#).unwrap() else {
            panic!()
        };
        assert!(id.user_data().is_err());
        assert!(id.presence_member().is_ok());
    }
}
