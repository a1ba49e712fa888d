//! What went wrong, in plain words: the one table from what a Pusher server
//! answered (close code, `pusher:error`, REST status) to what to check.

#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// No TCP, TLS or WebSocket upgrade.
    Unreachable { url: String, error: String },
    /// The server closed the WebSocket with this code.
    Closed { code: u16, reason: String },
    /// A `pusher:error` frame (the connection may stay open).
    Refused { code: Option<u64>, message: String },
    /// The REST API answered something other than 2xx.
    Rest { status: u16, body: String },
    /// The server let the WebSocket open, then dropped it without a Pusher
    /// frame or close code (sockudo does this for an unknown app key).
    DroppedAtConnect,
    /// No answer within the deadline.
    Timeout(String),
    /// The server answered, but not what a working app answers.
    Wrong(String),
    /// An earlier step failed, so this one could not run.
    NotRun(&'static str),
}

/// The longest line a failure prints: what comes from a server is quoted and
/// cut shorter still (`said`), this bounds the rest.
const MAX_LINE_CHARS: usize = 600;

impl Failure {
    pub fn plain(&self) -> String {
        let line = self.unbounded();
        if line.chars().count() <= MAX_LINE_CHARS {
            return line;
        }
        line.chars().take(MAX_LINE_CHARS).chain(['…']).collect()
    }

    fn unbounded(&self) -> String {
        match self {
            Failure::Unreachable { url, error } => format!("cannot reach {url}: {error}"),
            Failure::Closed { code, reason } => by_code(u64::from(*code), reason),
            Failure::Refused { code: Some(code), message } => by_code(*code, message),
            // Pusher itself sends some refusals without a code: read its words.
            Failure::Refused { code: None, message }
                if message.to_ascii_lowercase().contains("invalid signature") =>
            {
                by_code(4009, message)
            }
            Failure::Refused { code: None, message } => format!("the server refused: {}", said(message)),
            Failure::DroppedAtConnect => {
                "app key unknown on this cluster? The server dropped the connection \
                                          before accepting it, without a code (wrong key, or wrong cluster?)"
                    .to_owned()
            }
            Failure::Rest { status, body } => rest(*status, body),
            Failure::Timeout(what) => format!("no answer in time: {what}"),
            Failure::Wrong(what) => what.clone(),
            Failure::NotRun(why) => format!("not checked: {why}"),
        }
    }
}

/// Pusher's close and error codes (pusher-js and the Channels docs list the
/// same ranges; sockudo uses them too).
fn by_code(code: u64, message: &str) -> String {
    let off = ["disabled", "not enabled"].iter().any(|w| message.to_ascii_lowercase().contains(w));
    let what = match code {
        4000 => "the server wants TLS (4000): set client_options.forceTLS = true",
        4001 => "app key unknown on this cluster (4001): wrong key, or wrong cluster?",
        4003 => "app disabled (4003): enable it in the app's settings",
        4004 => "over the app's connection quota (4004)",
        4005 => "path not found (4005): does wsHost/wsPort point at a Pusher WebSocket endpoint?",
        4006..=4008 => "protocol version refused: the server does not speak Pusher protocol 7",
        4009 if off => "refused (4009): the feature is switched off in this app's settings",
        4009 => "signature rejected (4009): this key and secret belong to different apps or tokens",
        4100 => "over capacity (4100): the server asks clients to back off",
        4301 => "client event refused (4301): client events are off for this app, or over their rate limit",
        _ if message.is_empty() => return format!("the server closed the connection ({code})"),
        _ => return format!("the server refused ({code}): {}", said(message)),
    };
    if message.is_empty() { what.to_owned() } else { format!("{what}; the server said {}", said(message)) }
}

fn rest(status: u16, body: &str) -> String {
    // Pusher answers in plain text, sockudo in JSON with an `error` field.
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = json.as_ref().and_then(|v| v["error"].as_str()).unwrap_or(body).trim();
    let lower = message.to_ascii_lowercase();
    let about_key = lower.contains("key");
    let what = match status {
        400 | 401 if lower.contains("timestamp") => {
            "REST: refused the request's time: this machine's clock is more than 10 minutes off"
        }
        400 | 401 | 404 if about_key => "REST: app key unknown on this cluster: wrong key, or wrong cluster?",
        401 => "REST 401: app_id/secret mismatch: key, secret and app_id are not all one app's",
        403 => "REST 403: refused: the app is disabled or over its message quota",
        404 => {
            "REST 404: app_id unknown on this cluster: wrong app_id, or rest_url/cluster points elsewhere?"
        }
        413 => "REST 413: the server refused the event's size",
        _ => return format!("REST {status}: {}", said(message)),
    };
    let what = what.replacen("REST:", &format!("REST {status}:"), 1);
    if message.is_empty() { what } else { format!("{what}; the server said {}", said(message)) }
}

/// The server's own words, quoted: bounded, control characters escaped.
pub fn said(message: &str) -> String {
    const MAX: usize = 160;
    let cut: String = message.chars().take(MAX).collect();
    let more = if message.chars().count() > MAX { "…" } else { "" };
    format!("{cut:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commonest_mix_ups_read_as_what_to_fix() {
        let sig = Failure::Refused { code: Some(4009), message: "Invalid signature".into() };
        assert!(
            sig.plain()
                .starts_with("signature rejected (4009): this key and secret belong to different apps")
        );
        let key = Failure::Closed { code: 4001, reason: String::new() };
        assert_eq!(key.plain(), "app key unknown on this cluster (4001): wrong key, or wrong cluster?");
        let rest = Failure::Rest { status: 401, body: "Invalid signature\n".into() };
        assert_eq!(
            rest.plain(),
            "REST 401: app_id/secret mismatch: key, secret and app_id are not all one app's; \
             the server said \"Invalid signature\""
        );
        assert!(
            Failure::Rest { status: 404, body: String::new() }
                .plain()
                .starts_with("REST 404: app_id unknown")
        );
        // sockudo's JSON bodies: the `error` field is what is quoted.
        let f = Failure::Rest {
            status: 404,
            body: r#"{"status":404,"error":"Application key not found"}"#.into(),
        };
        assert_eq!(
            f.plain(),
            "REST 404: app key unknown on this cluster: wrong key, or wrong cluster?; \
             the server said \"Application key not found\""
        );
    }

    #[test]
    fn pusher_s_own_wording_is_read_too() {
        // Pusher answers a bad subscription signature with a code-less pusher:error.
        let f = Failure::Refused {
            code: None,
            message: "Invalid signature: Expected HMAC SHA256 hex digest of 1.1:private-x, but got abc"
                .into(),
        };
        assert!(
            f.plain().starts_with("signature rejected (4009): this key and secret belong"),
            "{}",
            f.plain()
        );
        let f = Failure::Rest { status: 401, body: "Unknown auth_key\n".into() };
        assert!(f.plain().starts_with("REST 401: app key unknown on this cluster"), "{}", f.plain());
        let f = Failure::Rest {
            status: 401,
            body: "Timestamp expired: Given timestamp (1) not within 600s".into(),
        };
        assert!(
            f.plain().starts_with("REST 401: refused the request's time: this machine's clock"),
            "{}",
            f.plain()
        );
        let f = Failure::Refused {
            code: None,
            message: "To send client events, you must enable this feature".into(),
        };
        assert_eq!(f.plain(), "the server refused: \"To send client events, you must enable this feature\"");
    }

    #[test]
    fn a_switched_off_feature_is_not_called_a_key_mix_up() {
        let f = Failure::Refused {
            code: Some(4009),
            message: "User authentication is disabled for this app".into(),
        };
        assert!(f.plain().starts_with("refused (4009): the feature is switched off"), "{}", f.plain());
    }

    #[test]
    fn unknown_codes_quote_the_server_bounded() {
        let long = "x".repeat(500);
        let f = Failure::Refused { code: Some(4999), message: long };
        assert!(f.plain().starts_with("the server refused (4999): \"xxx") && f.plain().len() < 200);
        assert_eq!(
            Failure::Closed { code: 4999, reason: String::new() }.plain(),
            "the server closed the connection (4999)"
        );
        let f = Failure::Rest { status: 500, body: "bad\u{1b}[31m".into() };
        assert_eq!(f.plain(), "REST 500: \"bad\\u{1b}[31m\"");
    }
}
