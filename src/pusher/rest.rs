//! Pusher REST API request signing (auth_version 1.0), pure: used to verify the
//! publisher's requests exactly as Pusher does, and to re-sign them per app.
//!
//! String to sign: `METHOD\npath\nsorted_query`, where sorted_query is every
//! param but auth_signature, keys lowercased, sorted, joined `k=v&…` unescaped.

use super::hmac_sha256_hex;
use md5::{Digest, Md5};

/// Pusher rejects timestamps more than this far from its clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 600;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestAuthError {
    #[error("missing auth parameter {0}")]
    Missing(&'static str),
    #[error("unknown auth_key")]
    UnknownKey,
    #[error("auth_version must be 1.0")]
    Version,
    #[error(
        "Timestamp expired: Given timestamp ({given}) not within {MAX_CLOCK_SKEW_SECS}s of server time ({now})"
    )]
    Timestamp { given: String, now: i64 },
    #[error("body_md5 does not match the body")]
    BodyMd5,
    #[error("Invalid signature")]
    Signature,
}

pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

fn string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(String, &str)> = params
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    sorted.sort();
    let query: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}\n{path}\n{}", method.to_ascii_uppercase(), query.join("&"))
}

/// The signature for a request with these params (auth_* included, signature excluded).
pub fn rest_signature(secret: &str, method: &str, path: &str, params: &[(String, String)]) -> String {
    hmac_sha256_hex(secret.as_bytes(), string_to_sign(method, path, params).as_bytes())
}

/// Builds the signed query string for an outgoing request (`extra` are the
/// request's own params, e.g. `info` or `filter_by_prefix`).
pub fn signed_query(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    now: i64,
    extra: &[(String, String)],
) -> String {
    let mut params: Vec<(String, String)> = extra.to_vec();
    params.push(("auth_key".into(), key.into()));
    params.push(("auth_timestamp".into(), now.to_string()));
    params.push(("auth_version".into(), "1.0".into()));
    if let Some(body) = body.filter(|b| !b.is_empty()) {
        params.push(("body_md5".into(), body_md5(body)));
    }
    let signature = rest_signature(secret, method, path, &params);
    params.push(("auth_signature".into(), signature));
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Verifies an incoming request's query the way Pusher does: key, version,
/// timestamp window and signature. The signed string covers `body_md5`, so
/// this runs before the body is read; [`check_body_md5`] then binds the body.
/// `secret_for` maps an auth_key to its secret. Compares in constant time.
pub fn verify_rest_query<'a>(
    method: &str,
    path: &str,
    params: &[(String, String)],
    now: i64,
    secret_for: impl Fn(&str) -> Option<&'a str>,
) -> Result<(), RestAuthError> {
    let secret = secret_for(param(params, "auth_key")?).ok_or(RestAuthError::UnknownKey)?;
    if param(params, "auth_version")? != "1.0" {
        return Err(RestAuthError::Version);
    }
    let ts = param(params, "auth_timestamp")?;
    // Checked: `now - i64::MIN` must not wrap around into the window.
    let skew = ts.parse::<i64>().ok().and_then(|t| now.checked_sub(t)).map(i64::unsigned_abs);
    if skew.is_none_or(|s| s > MAX_CLOCK_SKEW_SECS as u64) {
        return Err(RestAuthError::Timestamp { given: ts.to_owned(), now });
    }
    let given = param(params, "auth_signature")?;
    let to_sign = string_to_sign(method, path, params);
    if super::hmac_sha256_matches(secret.as_bytes(), to_sign.as_bytes(), given) {
        Ok(())
    } else {
        Err(RestAuthError::Signature)
    }
}

/// A non-empty body must carry the `body_md5` the (already verified) query signed.
pub fn check_body_md5(params: &[(String, String)], body: &[u8]) -> Result<(), RestAuthError> {
    if !body.is_empty() && param(params, "body_md5")? != body_md5(body) {
        return Err(RestAuthError::BodyMd5);
    }
    Ok(())
}

/// Both checks at once, for a request whose body is already at hand.
pub fn verify_rest<'a>(
    method: &str,
    path: &str,
    params: &[(String, String)],
    body: &[u8],
    now: i64,
    secret_for: impl Fn(&str) -> Option<&'a str>,
) -> Result<(), RestAuthError> {
    verify_rest_query(method, path, params, now, secret_for)?;
    check_body_md5(params, body)
}

fn param<'p>(params: &'p [(String, String)], name: &'static str) -> Result<&'p str, RestAuthError> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).ok_or(RestAuthError::Missing(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn docs_rest_vector() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5(body), "ec365a775a4cd0599faeb73354201b6f");
        let params = p(&[
            ("auth_key", "278d425bdf160c739803"),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
        ]);
        assert_eq!(
            rest_signature("7ad3773142a6692b25b8", "POST", "/apps/3/events", &params),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn node_rest_vector() {
        assert_eq!(body_md5(b"example body"), "165d5e6d7ca8f73b3853ce45addf42fc");
        let params = p(&[
            ("auth_key", "f00d"),
            ("auth_timestamp", "1234567890"),
            ("auth_version", "1.0"),
            ("body_md5", "165d5e6d7ca8f73b3853ce45addf42fc"),
        ]);
        assert_eq!(
            rest_signature("tofu", "get", "/event", &params),
            "a650196dc427ebe837226f8565ca9232198c6d1b9455eaa72374a9dc0b620e7b"
        );
    }

    #[test]
    fn verification_accepts_what_signed_query_produces_and_nothing_else() {
        let body = br#"{"name":"e","channel":"private-a","data":"{}"}"#;
        let q = signed_query("k", "s", "POST", "/apps/1/events", Some(body), 1_000_000, &[]);
        let params: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        let secret = |k: &str| (k == "k").then_some("s");
        assert_eq!(verify_rest("POST", "/apps/1/events", &params, body, 1_000_100, secret), Ok(()));
        assert_eq!(
            verify_rest("POST", "/apps/2/events", &params, body, 1_000_100, secret),
            Err(RestAuthError::Signature)
        );
        assert_eq!(
            verify_rest("POST", "/apps/1/events", &params, b"{}", 1_000_100, secret),
            Err(RestAuthError::BodyMd5)
        );
        assert!(matches!(
            verify_rest("POST", "/apps/1/events", &params, body, 1_000_601, secret),
            Err(RestAuthError::Timestamp { .. })
        ));
        assert_eq!(
            verify_rest("POST", "/apps/1/events", &params, body, 1_000_100, |_| None),
            Err(RestAuthError::UnknownKey)
        );
        for extreme in ["-9223372036854775808", "9223372036854775807"] {
            let mut p = params.clone();
            p.iter_mut().find(|(k, _)| k == "auth_timestamp").unwrap().1 = extreme.into();
            assert!(matches!(
                verify_rest("POST", "/apps/1/events", &p, body, 1_000_100, secret),
                Err(RestAuthError::Timestamp { .. })
            ));
        }
        let unsigned: Vec<_> = params.iter().filter(|(k, _)| k != "auth_signature").cloned().collect();
        assert_eq!(
            verify_rest("POST", "/apps/1/events", &unsigned, body, 1_000_100, secret),
            Err(RestAuthError::Missing("auth_signature"))
        );
    }
}
