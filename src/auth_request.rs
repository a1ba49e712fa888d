//! Parsing the bodies pusher-js (and friends) send to the auth endpoints.
//! Pure: bytes in, typed request out; nothing here talks to the network.
//!
//! Accepted shapes:
//! - `application/x-www-form-urlencoded` as pusher-js builds it by hand
//!   (`socket_id=…&channel_name=…&extra=…`), including the pusher-js-auth batch
//!   form with a leading `&` and `channel_name[0]=…&channel_name[1]=…`;
//! - `application/json`: `{"socket_id": "…", "channel_name": "…" | ["…"], …}`.
//!
//! Every other field is an extra param handed to the session check. A field
//! given twice is refused: the first and last value could both be "the" value,
//! and we never guess what we sign (socket_id injection starts that way).

use crate::pusher::{ChannelName, ProtocolError, SocketId};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use thiserror::Error;

/// At most this many extra params; a pusher-js client sends a handful.
pub const MAX_PARAMS: usize = 32;

#[derive(Debug, Error, PartialEq)]
pub enum RequestError {
    #[error("unsupported Content-Type {0}: send application/x-www-form-urlencoded or application/json")]
    UnsupportedMediaType(String),
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("field {0} is missing")]
    Missing(&'static str),
    #[error("field {0} is given more than once")]
    Duplicate(String),
    #[error("too many channels in one batch: {got} (at most {max})")]
    BatchTooLarge { got: usize, max: usize },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// One channel of a request, parsed independently so that in a batch one bad
/// name fails only its own entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedChannel {
    /// Exactly what the client sent: batch answers are keyed by it.
    pub raw: String,
    pub parsed: Result<ChannelName, ProtocolError>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Channels {
    /// `channel_name=…`: answered with the single-channel body.
    Single(ChannelName),
    /// `channel_name[i]=…` (or a JSON array): answered with an object keyed by channel.
    Batch(Vec<RequestedChannel>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelAuthRequest {
    pub socket_id: SocketId,
    pub channels: Channels,
    pub params: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserAuthRequest {
    pub socket_id: SocketId,
    pub params: Map<String, Value>,
}

enum BodyFormat {
    Form,
    Json,
}

fn body_format(content_type: Option<&str>) -> Result<BodyFormat, RequestError> {
    // A browser XHR joins a repeated header ("application/x-www-form-urlencoded,
    // application/json" when an app sets Content-Type in `headers`); pusher-js
    // always builds a form body, so the first media type is the true one.
    let Some(ct) = content_type else { return Ok(BodyFormat::Form) };
    let first = ct.split(',').next().unwrap_or("");
    let mime = first.split(';').next().unwrap_or("").trim();
    if mime.is_empty() || mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(BodyFormat::Form)
    } else if mime.eq_ignore_ascii_case("application/json") {
        Ok(BodyFormat::Json)
    } else {
        Err(RequestError::UnsupportedMediaType(crate::pusher::quote(ct)))
    }
}

/// A field's value before interpretation: a form's text (borrowed from the
/// body when it needed no decoding) or a JSON value.
enum Field<'a> {
    Text(Cow<'a, str>),
    Json(Value),
}

impl Field<'_> {
    fn into_value(self) -> Value {
        match self {
            Field::Text(s) => Value::String(s.into_owned()),
            Field::Json(v) => v,
        }
    }
}

/// The fields of a body, in order, before interpretation.
fn fields<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<Vec<(Cow<'a, str>, Field<'a>)>, RequestError> {
    match body_format(content_type)? {
        BodyFormat::Form => form_pairs(body)
            .map(|(k, v)| {
                if k.is_empty() {
                    Err(RequestError::Malformed("a form field has an empty name".into()))
                } else {
                    Ok((k, Field::Text(v)))
                }
            })
            .collect(),
        BodyFormat::Json => {
            // serde_json keeps the last of duplicate keys silently; detect them.
            let map: DuplicateCheckedMap = serde_json::from_slice(body)
                .map_err(|e| RequestError::Malformed(format!("invalid JSON object: {e}")))?;
            Ok(map.0?.into_iter().map(|(k, v)| (Cow::Owned(k), Field::Json(v))).collect())
        }
    }
}

/// `form_urlencoded::parse`, with a pair that needs no decoding (no `%`, no
/// `+`, valid UTF-8: every pair pusher-js sends for a channel) borrowed as it
/// is. The crate scans each name and value three times to find that out.
fn form_pairs(body: &[u8]) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    body.split(|b| *b == b'&').filter(|pair| !pair.is_empty()).map(|pair| match std::str::from_utf8(pair) {
        Ok(text) if !pair.iter().any(|b| matches!(b, b'%' | b'+')) => {
            let (name, value) = text.split_once('=').unwrap_or((text, ""));
            (Cow::Borrowed(name), Cow::Borrowed(value))
        }
        _ => form_urlencoded::parse(pair).next().expect("a non-empty pair is one field"),
    })
}

/// A JSON object read pair by pair so that duplicate keys are an error.
struct DuplicateCheckedMap(Result<Vec<(String, Value)>, RequestError>);

impl<'de> serde::Deserialize<'de> for DuplicateCheckedMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DuplicateCheckedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                let mut duplicate = None;
                // Read to the end even after a duplicate, so the JSON stays well-formed to serde.
                while let Some((k, v)) = a.next_entry::<String, Value>()? {
                    if duplicate.is_none() && out.iter().any(|(seen, _)| *seen == k) {
                        duplicate = Some(RequestError::Duplicate(crate::pusher::quote(&k)));
                    }
                    out.push((k, v));
                }
                Ok(DuplicateCheckedMap(duplicate.map_or(Ok(out), Err)))
            }
        }
        d.deserialize_map(V)
    }
}

/// `channel_name[12]` → `Some(Ok(12))`; `channel_name[x]` → `Some(Err)`; others → `None`.
fn batch_index(key: &str) -> Option<Result<usize, RequestError>> {
    let inner = key.strip_prefix("channel_name[")?;
    let idx = inner
        .strip_suffix(']')
        .filter(|i| !i.is_empty() && i.len() <= 6 && i.bytes().all(|b| b.is_ascii_digit()));
    Some(
        idx.and_then(|i| i.parse().ok())
            .ok_or_else(|| RequestError::Malformed(format!("bad batch field {}", crate::pusher::quote(key)))),
    )
}

fn string_field<'a>(name: &'static str, v: Field<'a>) -> Result<Cow<'a, str>, RequestError> {
    match v {
        Field::Text(s) => Ok(s),
        Field::Json(Value::String(s)) => Ok(Cow::Owned(s)),
        Field::Json(_) => Err(RequestError::Malformed(format!("field {name} must be a string"))),
    }
}

struct Interpreted<'a> {
    socket_id: SocketId,
    single: Option<Cow<'a, str>>,
    batch: BTreeMap<usize, String>,
    params: Map<String, Value>,
}

fn interpret<'a>(fields: Vec<(Cow<'a, str>, Field<'a>)>) -> Result<Interpreted<'a>, RequestError> {
    let mut socket_id = None;
    let mut single: Option<Field> = None;
    let mut batch = BTreeMap::new();
    let mut params = Map::new();
    for (key, value) in fields {
        let dup = |k: &str| RequestError::Duplicate(crate::pusher::quote(k));
        if key == "socket_id" {
            if socket_id.replace(value).is_some() {
                return Err(dup(&key));
            }
        } else if key == "channel_name" {
            if single.replace(value).is_some() {
                return Err(dup(&key));
            }
        } else if let Some(idx) = batch_index(&key) {
            if batch.insert(idx?, string_field("channel_name[i]", value)?.into_owned()).is_some() {
                return Err(dup(&key));
            }
        } else {
            if params.contains_key(key.as_ref()) {
                return Err(dup(&key));
            }
            if params.len() == MAX_PARAMS {
                return Err(RequestError::Malformed(format!("more than {MAX_PARAMS} extra params")));
            }
            params.insert(key.into_owned(), value.into_value());
        }
    }
    let socket_id =
        SocketId::parse(&string_field("socket_id", socket_id.ok_or(RequestError::Missing("socket_id"))?)?)?;
    let single = match single {
        None => None,
        Some(Field::Json(Value::Array(items))) if batch.is_empty() => {
            // JSON batch: {"channel_name": ["a", "b"]}
            for (i, v) in items.into_iter().enumerate() {
                batch.insert(i, string_field("channel_name[i]", Field::Json(v))?.into_owned());
            }
            None
        }
        Some(v) => Some(string_field("channel_name", v)?),
    };
    Ok(Interpreted { socket_id, single, batch, params })
}

/// Parses a channel authorization request (single or batch).
pub fn parse_channel_request(
    content_type: Option<&str>,
    body: &[u8],
    max_batch: usize,
) -> Result<ChannelAuthRequest, RequestError> {
    let Interpreted { socket_id, single, batch, params } = interpret(fields(content_type, body)?)?;
    let channels = match (single, batch.is_empty()) {
        (Some(_), false) => {
            return Err(RequestError::Malformed(
                "send either channel_name or channel_name[i], not both".into(),
            ));
        }
        (Some(name), true) => Channels::Single(ChannelName::parse(&name)?),
        (None, true) => return Err(RequestError::Missing("channel_name")),
        (None, false) => {
            if batch.len() > max_batch {
                return Err(RequestError::BatchTooLarge { got: batch.len(), max: max_batch });
            }
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::with_capacity(batch.len());
            for raw in batch.into_values() {
                if !seen.insert(raw.clone()) {
                    return Err(RequestError::Duplicate(format!("channel {}", crate::pusher::quote(&raw))));
                }
                out.push(RequestedChannel { parsed: ChannelName::parse(&raw), raw });
            }
            Channels::Batch(out)
        }
    };
    Ok(ChannelAuthRequest { socket_id, channels, params })
}

/// Parses a user authentication (`pusher.signin()`) request.
pub fn parse_user_request(content_type: Option<&str>, body: &[u8]) -> Result<UserAuthRequest, RequestError> {
    let Interpreted { socket_id, single, batch, params } = interpret(fields(content_type, body)?)?;
    if single.is_some() || !batch.is_empty() {
        return Err(RequestError::Malformed("user authentication takes no channel_name".into()));
    }
    Ok(UserAuthRequest { socket_id, params })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
    const JSON: Option<&str> = Some("application/json");

    fn single(r: &ChannelAuthRequest) -> &str {
        match &r.channels {
            Channels::Single(c) => c.as_ref(),
            Channels::Batch(_) => panic!("expected a single channel"),
        }
    }

    #[test]
    fn form_pairs_read_as_the_form_urlencoded_crate_reads_them() {
        let parts =
            ["", "a", "=", "a=", "=b", "a=b", "a=b=c", "a+b=c+d", "a%20=%2B", "%ZZ=%", "é=ü", "x=%C3%A9"];
        let mut bodies: Vec<Vec<u8>> = vec![b"&&".to_vec(), b"a=\xff".to_vec(), b"\xfe=1&b=2".to_vec()];
        bodies.extend(vec![vec![0xff, b'=', b'1'], vec![b'a', b'=', 0xc3]]);
        for x in parts {
            for y in parts {
                bodies.push(format!("{x}&{y}").into_bytes());
                bodies.push(format!("&{x}&&{y}&").into_bytes());
            }
        }
        for body in bodies {
            let ours: Vec<_> = form_pairs(&body).collect();
            let theirs: Vec<_> = form_urlencoded::parse(&body).collect();
            assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn pusher_js_form_body_with_extra_params() {
        let body = b"socket_id=123.456&channel_name=private-foo&a=1%202&obj=%5Bobject%20Object%5D&dyn=d%26x";
        let r = parse_channel_request(FORM, body, 10).unwrap();
        assert_eq!(r.socket_id.as_ref(), "123.456");
        assert_eq!(single(&r), "private-foo");
        assert_eq!(Value::Object(r.params), json!({"a": "1 2", "obj": "[object Object]", "dyn": "d&x"}));
    }

    #[test]
    fn json_body_keeps_param_types() {
        let body = br#"{"socket_id":"1.2","channel_name":"presence-x","n":3,"o":{"k":true}}"#;
        let r = parse_channel_request(JSON, body, 10).unwrap();
        assert_eq!(single(&r), "presence-x");
        assert_eq!(Value::Object(r.params), json!({"n": 3, "o": {"k": true}}));
    }

    #[test]
    fn combined_content_type_from_a_browser_xhr_is_read_as_form() {
        let ct = Some("application/x-www-form-urlencoded, application/json");
        assert!(parse_channel_request(ct, b"socket_id=1.1&channel_name=private-a", 10).is_ok());
        assert!(
            parse_channel_request(
                Some("application/json; charset=utf-8"),
                br#"{"socket_id":"1.1","channel_name":"private-a"}"#,
                10
            )
            .is_ok()
        );
        assert!(parse_channel_request(None, b"socket_id=1.1&channel_name=private-a", 10).is_ok());
    }

    #[test]
    fn other_content_types_are_refused() {
        let err = parse_channel_request(Some("text/plain"), b"socket_id=1.1&channel_name=private-a", 10)
            .unwrap_err();
        assert!(matches!(err, RequestError::UnsupportedMediaType(_)));
    }

    #[test]
    fn duplicates_are_refused_in_both_formats() {
        for body in [
            &b"socket_id=1.1&socket_id=2.2&channel_name=private-a"[..],
            b"socket_id=1.1&channel_name=private-a&channel_name=private-b",
            b"socket_id=1.1&channel_name=private-a&x=1&x=2",
            b"socket_id=1.1&channel_name[0]=private-a&channel_name[0]=private-b",
            b"socket_id=1.1&channel_name[0]=private-a&channel_name[1]=private-a",
        ] {
            let err = parse_channel_request(FORM, body, 10).unwrap_err();
            assert!(matches!(err, RequestError::Duplicate(_)), "{}: {err}", String::from_utf8_lossy(body));
        }
        let err = parse_channel_request(
            JSON,
            br#"{"socket_id":"1.1","socket_id":"2.2","channel_name":"private-a"}"#,
            10,
        );
        assert!(matches!(err, Err(RequestError::Duplicate(_))));
    }

    #[test]
    fn injection_through_the_socket_id_is_refused() {
        for sid in ["1.1%3Aprivate-b", "1.1%0A", "%3A1.1", "1.1:"] {
            let body = format!("socket_id={sid}&channel_name=private-a");
            let err = parse_channel_request(FORM, body.as_bytes(), 10).unwrap_err();
            assert!(matches!(err, RequestError::Protocol(ProtocolError::InvalidSocketId(_))), "{sid}");
        }
    }

    #[test]
    fn missing_fields_are_named() {
        assert_eq!(
            parse_channel_request(FORM, b"channel_name=private-a", 10).unwrap_err(),
            RequestError::Missing("socket_id")
        );
        assert_eq!(
            parse_channel_request(FORM, b"socket_id=1.1", 10).unwrap_err(),
            RequestError::Missing("channel_name")
        );
        assert!(matches!(parse_channel_request(JSON, b"[1]", 10), Err(RequestError::Malformed(_))));
        assert!(matches!(
            parse_channel_request(JSON, br#"{"socket_id":1.1,"channel_name":"private-a"}"#, 10),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn pusher_js_auth_batch_form_with_leading_ampersand() {
        let body =
            b"&socket_id=9.9&channel_name[0]=private-a&channel_name[1]=presence-b&channel_name[2]=public&x=y";
        let r = parse_channel_request(FORM, body, 10).unwrap();
        let Channels::Batch(items) = r.channels else { panic!() };
        let raws: Vec<_> = items.iter().map(|c| c.raw.as_str()).collect();
        assert_eq!(raws, ["private-a", "presence-b", "public"]);
        assert!(items[0].parsed.is_ok() && items[1].parsed.is_ok());
        assert!(matches!(items[2].parsed, Err(ProtocolError::PublicChannel(_))));
        assert_eq!(Value::Object(r.params), json!({"x": "y"}));
    }

    #[test]
    fn batches_are_ordered_by_index_and_bounded() {
        let body = b"socket_id=1.1&channel_name[1]=private-b&channel_name[0]=private-a";
        let Channels::Batch(items) = parse_channel_request(FORM, body, 10).unwrap().channels else {
            panic!()
        };
        assert_eq!(items[0].raw, "private-a");
        let err = parse_channel_request(FORM, body, 1).unwrap_err();
        assert_eq!(err, RequestError::BatchTooLarge { got: 2, max: 1 });
        for bad in
            [&b"socket_id=1.1&channel_name[]=private-a"[..], b"socket_id=1.1&channel_name[x]=private-a"]
        {
            assert!(matches!(parse_channel_request(FORM, bad, 10), Err(RequestError::Malformed(_))));
        }
        let mixed = b"socket_id=1.1&channel_name=private-a&channel_name[0]=private-b";
        assert!(matches!(parse_channel_request(FORM, mixed, 10), Err(RequestError::Malformed(_))));
    }

    #[test]
    fn json_batch_as_an_array() {
        let r = parse_channel_request(
            JSON,
            br#"{"socket_id":"1.1","channel_name":["private-a","private-b"]}"#,
            10,
        )
        .unwrap();
        assert!(matches!(r.channels, Channels::Batch(ref v) if v.len() == 2));
    }

    #[test]
    fn single_channel_errors_fail_the_request() {
        let err = parse_channel_request(FORM, b"socket_id=1.1&channel_name=public", 10).unwrap_err();
        assert!(matches!(err, RequestError::Protocol(ProtocolError::PublicChannel(_))));
    }

    #[test]
    fn too_many_params_and_empty_names_are_refused() {
        let mut body = String::from("socket_id=1.1&channel_name=private-a");
        for i in 0..=MAX_PARAMS {
            body.push_str(&format!("&p{i}=v"));
        }
        assert!(matches!(parse_channel_request(FORM, body.as_bytes(), 10), Err(RequestError::Malformed(_))));
        assert!(matches!(
            parse_channel_request(FORM, b"socket_id=1.1&channel_name=private-a&=x", 10),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn user_requests_take_a_socket_id_and_params() {
        let r = parse_user_request(FORM, b"socket_id=1.1&lang=en").unwrap();
        assert_eq!(r.socket_id.as_ref(), "1.1");
        assert_eq!(Value::Object(r.params), json!({"lang": "en"}));
        assert!(parse_user_request(FORM, b"socket_id=1.1&channel_name=private-a").is_err());
        assert_eq!(parse_user_request(FORM, b"lang=en").unwrap_err(), RequestError::Missing("socket_id"));
    }
}
