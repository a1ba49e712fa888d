//! Which request headers reach the host: an allowlist, never a denylist.
//!
//! Cookie (every field, joined with "; " as HTTP/2 clients split it),
//! Authorization (exactly one), configured extras (at most one each),
//! X-Forwarded-For built from the peer, and X-Request-Id. Nothing else: not
//! Host, not hop-by-hop headers, not the client's own X-Forwarded-*.

use hyper::header::{AUTHORIZATION, COOKIE, HeaderName};
use ipnet::IpNet;
use std::net::IpAddr;

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeaderError {
    #[error("header {0} is given more than once")]
    Duplicate(String),
}

/// Headers to send to the host, as (name, value bytes). The names are the
/// request's own type, so building the check's request parses none of them.
#[derive(Debug, Default, PartialEq)]
pub struct ForwardedHeaders(Vec<(HeaderName, Vec<u8>)>);

impl ForwardedHeaders {
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &[u8])> {
        self.0.iter().map(|(n, v)| (n, v.as_slice()))
    }
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| n.as_str() == name).map(|(_, v)| v)
    }
}

/// Whether `ip` is one of `server.trusted_proxies`.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Builds the forwarded set. `inbound(name)` returns every value of a header
/// (lowercase name) as raw bytes.
pub fn forwarded_headers<'a>(
    inbound: impl Fn(&str) -> Vec<&'a [u8]>,
    peer: Option<IpAddr>,
    trusted_proxies: &[IpNet],
    extra: &[HeaderName],
    request_id: &[u8],
) -> Result<ForwardedHeaders, HeaderError> {
    let mut out = Vec::with_capacity(4 + extra.len());
    let cookies = inbound(COOKIE.as_str());
    if !cookies.is_empty() {
        out.push((COOKIE, cookies.join(&b"; "[..])));
    }
    for name in std::iter::once(&AUTHORIZATION).chain(extra) {
        match inbound(name.as_str()).as_slice() {
            [] => {}
            [value] => out.push((name.clone(), value.to_vec())),
            _ => return Err(HeaderError::Duplicate(name.to_string())),
        }
    }
    if let Some(peer) = peer {
        let chain = inbound(X_FORWARDED_FOR.as_str());
        let mut xff = Vec::with_capacity(48);
        if is_trusted(peer, trusted_proxies) && !chain.is_empty() {
            xff = chain.join(&b", "[..]);
            xff.extend_from_slice(b", ");
        }
        write_ip(&mut xff, peer);
        out.push((X_FORWARDED_FOR, xff));
    }
    out.push((X_REQUEST_ID, request_id.to_vec()));
    Ok(ForwardedHeaders(out))
}

/// `ip` as text, as `Display` writes it. An IPv4 address is written digit by
/// digit: std's formatter (padding, width) cost more than the rest of the
/// headers together, on every check.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        out.extend_from_slice(ip.to_string().as_bytes());
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
    }
}

/// The client address for logs and rate limits: the peer, or — when the peer is
/// a trusted proxy — the right-most X-Forwarded-For entry that is not trusted.
pub fn client_ip<'a>(peer: IpAddr, xff: impl Fn() -> Vec<&'a [u8]>, trusted_proxies: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted_proxies) {
        return peer;
    }
    let values = xff();
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else { return peer };
        for part in text.split(',') {
            match part.trim().parse() {
                Ok(ip) => hops.push(ip),
                Err(_) => return peer,
            }
        }
    }
    hops.into_iter().rev().find(|ip| !is_trusted(*ip, trusted_proxies)).unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn map(pairs: &[(&str, &'static str)]) -> HashMap<String, Vec<&'static [u8]>> {
        let mut m: HashMap<String, Vec<&'static [u8]>> = HashMap::new();
        for (k, v) in pairs {
            m.entry(k.to_ascii_lowercase()).or_default().push(v.as_bytes());
        }
        m
    }

    fn build(
        pairs: &[(&str, &'static str)],
        peer: &str,
        trusted: &[&str],
        extra: &[&str],
    ) -> Result<ForwardedHeaders, HeaderError> {
        let m = map(pairs);
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let extra: Vec<HeaderName> =
            extra.iter().map(|s| HeaderName::from_bytes(s.as_bytes()).unwrap()).collect();
        forwarded_headers(
            |n| m.get(n).cloned().unwrap_or_default(),
            Some(peer.parse().unwrap()),
            &trusted,
            &extra,
            b"rid-1",
        )
    }

    #[test]
    fn only_allowlisted_headers_are_forwarded() {
        let h = build(
            &[
                ("Cookie", "a=1"),
                ("Cookie", "b=2"),
                ("Authorization", "Bearer t"),
                ("Host", "evil"),
                ("Connection", "cookie"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Host", "evil"),
                ("X_Cookie", "x"),
                ("X-Csrf-Token", "c"),
                ("Transfer-Encoding", "chunked"),
            ],
            "192.0.2.1",
            &[],
            &[],
        )
        .unwrap();
        let names: Vec<_> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cookie", "authorization", "x-forwarded-for", "x-request-id"]);
        assert_eq!(h.get("cookie"), Some(&b"a=1; b=2"[..]));
        assert_eq!(h.get("x-forwarded-for"), Some(&b"192.0.2.1"[..]), "client XFF must be ignored");
        assert_eq!(h.get("x-request-id"), Some(&b"rid-1"[..]));
    }

    #[test]
    fn configured_extras_are_forwarded_once() {
        let h = build(&[("X-CSRF-Token", "c")], "192.0.2.1", &[], &["x-csrf-token"]).unwrap();
        assert_eq!(h.get("x-csrf-token"), Some(&b"c"[..]));
        let e = build(&[("X-CSRF-Token", "c"), ("X-CSRF-Token", "d")], "192.0.2.1", &[], &["x-csrf-token"]);
        assert_eq!(e.unwrap_err(), HeaderError::Duplicate("x-csrf-token".into()));
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let e = build(&[("Authorization", "Bearer a"), ("Authorization", "Bearer b")], "192.0.2.1", &[], &[]);
        assert_eq!(e.unwrap_err(), HeaderError::Duplicate("authorization".into()));
    }

    #[test]
    fn a_trusted_proxy_extends_the_forwarded_chain() {
        let h = build(&[("X-Forwarded-For", "203.0.113.9")], "10.0.0.5", &["10.0.0.0/8"], &[]).unwrap();
        assert_eq!(h.get("x-forwarded-for"), Some(&b"203.0.113.9, 10.0.0.5"[..]));
        let h = build(&[], "10.0.0.5", &["10.0.0.0/8"], &[]).unwrap();
        assert_eq!(h.get("x-forwarded-for"), Some(&b"10.0.0.5"[..]));
    }

    #[test]
    fn an_address_is_written_as_display_writes_it() {
        for ip in [
            "0.0.0.0",
            "192.0.2.1",
            "10.200.9.255",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = b"x".to_vec();
            write_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}").into_bytes());
        }
    }

    #[test]
    fn client_ip_is_the_rightmost_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let ip = client_ip(peer, || vec![&b"1.1.1.1, 203.0.113.9, 10.0.0.7"[..]], &trusted);
        assert_eq!(ip.to_string(), "203.0.113.9");
        let untrusted: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(untrusted, || vec![&b"1.1.1.1"[..]], &trusted), untrusted);
        assert_eq!(client_ip(peer, || vec![&b"garbage"[..]], &trusted), peer);
    }
}
