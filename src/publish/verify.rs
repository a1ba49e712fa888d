//! What a publish request must be before anything is forwarded: the right app
//! id, a query signed with the `[publish]` credential (checked before the body
//! is read: the signature covers `body_md5`), a body within its cap and
//! deadline that matches `body_md5`, and events within Pusher's limits.

use super::PublishError;
use crate::{
    body::read_body,
    config::PublishSettings,
    pusher::rest::{check_body_md5, verify_rest_query},
};
use actix_web::{HttpRequest, web};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::time::Duration;

/// Pusher's limits (rest-api docs; the official libraries use the same numbers).
const MAX_DATA_BYTES: usize = 10 * 1024;
const MAX_CHANNELS: usize = 100;
pub const MAX_BATCH: usize = 10;
const MAX_NAME_LEN: usize = 200;
/// Body caps per route: an event is at most 10 KiB of data (JSON-escaped, it can
/// double) plus 100 channel names; a batch is ten of them; terminate has none.
pub const MAX_EVENT_BODY: usize = 64 * 1024;
pub const MAX_BATCH_BODY: usize = 256 * 1024;
pub const MAX_EMPTY_BODY: usize = 1024;

type Params = Vec<(String, String)>;

/// Checks the path's app id and the query's signature, before any body byte is
/// read; returns the query params.
pub fn verify(req: &HttpRequest, publish: &PublishSettings, app_id: &str) -> Result<Params, PublishError> {
    if app_id != publish.app_id {
        return Err(PublishError::UnknownApp(crate::pusher::quote(app_id)));
    }
    let params: Params = form_urlencoded::parse(req.query_string().as_bytes()).into_owned().collect();
    let secret = publish.secret.expose_secret();
    let now = crate::outbound::now_secs();
    verify_rest_query(req.method().as_str(), req.path(), &params, now, |k| {
        (k == publish.key.as_ref()).then_some(secret)
    })?;
    Ok(params)
}

/// Verifies the request, then reads the body (capped, within `deadline`) and
/// checks it against the signed `body_md5`: what every write starts with.
/// Returns the body and the params to forward.
pub async fn verified(
    req: &HttpRequest,
    publish: &PublishSettings,
    app_id: &str,
    payload: web::Payload,
    limit: usize,
    deadline: Duration,
) -> Result<(web::Bytes, Params), PublishError> {
    let params = verify(req, publish, app_id)?;
    let body = read_body(req, payload, limit, deadline).await?;
    check_body_md5(&params, &body)?;
    Ok((body, forwardable(params)))
}

/// The request's own params, to forward: everything but the auth params.
pub fn forwardable(params: Params) -> Params {
    params.into_iter().filter(|(k, _)| !k.starts_with("auth_") && k != "body_md5").collect()
}

/// A user id or channel name that becomes a path segment of the outgoing
/// request: Pusher's name characters only, and never `.`/`..` (which a URL
/// parser would resolve into another path).
pub fn path_segment(value: &str, what: &str) -> Result<(), PublishError> {
    let ok = crate::pusher::is_name(value, MAX_NAME_LEN) && value.bytes().any(|b| b != b'.');
    if ok {
        Ok(())
    } else {
        Err(PublishError::Invalid(format!("invalid {what} {}", crate::pusher::quote(value))))
    }
}

/// Validates one event against Pusher's limits.
pub fn check_event(event: &Value) -> Result<(), PublishError> {
    let bad = |m: &str| Err(PublishError::Invalid(m.into()));
    let Some(name) = event.get("name").and_then(Value::as_str) else { return bad("name is required") };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("event name must be 1-200 characters");
    }
    let Some(data) = event.get("data").and_then(Value::as_str) else { return bad("data must be a string") };
    if data.len() > MAX_DATA_BYTES {
        return Err(PublishError::DataTooLarge);
    }
    let channels: Vec<&str> = match (event.get("channels"), event.get("channel")) {
        (Some(Value::Array(a)), None) => a.iter().filter_map(Value::as_str).collect(),
        (None, Some(Value::String(c))) => vec![c.as_str()],
        _ => return bad("give channels (an array) or channel (a string)"),
    };
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return bad("an event goes to 1-100 channels");
    }
    if channels.len() > 1 && channels.iter().any(|c| c.starts_with("private-encrypted-")) {
        return bad("cannot trigger to multiple channels if any are encrypted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(r: Result<(), PublishError>) -> u16 {
        r.unwrap_err().status_and_code().0.as_u16()
    }

    #[test]
    fn events_are_checked_against_pusher_limits() {
        assert!(check_event(&json!({"name": "e", "data": "{}", "channels": ["a", "b"]})).is_ok());
        let too_big = json!({"name": "e", "data": "x".repeat(10_241), "channel": "a"});
        assert_eq!(status(check_event(&too_big)), 413);
        let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
        assert_eq!(status(check_event(&json!({"name": "e", "data": "", "channels": many}))), 400);
        let enc = json!({"name": "e", "data": "", "channels": ["private-encrypted-a", "b"]});
        assert_eq!(status(check_event(&enc)), 400);
        assert_eq!(status(check_event(&json!({"name": "e", "data": {}, "channel": "a"}))), 400);
    }

    #[test]
    fn path_segments_are_names_never_dots_or_slashes() {
        assert!(path_segment("user-42", "user id").is_ok());
        for bad in ["", ".", "..", "a/b", "a%2Fb", &"x".repeat(201)] {
            assert_eq!(status(path_segment(bad, "user id")), 400, "{bad:?}");
        }
    }
}
