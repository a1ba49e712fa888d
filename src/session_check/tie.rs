//! Tying an answer to its check. HTTP/1.1 has no request ids: on a kept-alive
//! connection the next bytes the host writes are taken as the answer to the
//! request in flight, so a host that writes an answer twice would have the
//! copy signed for the next user. Each check therefore carries a fresh
//! `X-Check-Id`, and an answer counts as that check's only by echoing it.

use hyper::header::{HeaderName, HeaderValue};

/// The per-check nonce the host echoes to tie its answer to the check (a
/// name of the header map's own type: a `&str` is parsed on every use).
pub const X_CHECK_ID: HeaderName = HeaderName::from_static("x-check-id");

/// How an answer relates to the check it arrived for.
#[derive(Debug, PartialEq)]
pub enum Tie {
    /// It echoed this check's id: the connection can carry the next check.
    Echoed,
    /// No `X-Check-Id` in the answer.
    Absent,
    /// Another id, or more than one: another check's answer.
    Other,
}

/// Whether `headers` echo `id` exactly once.
pub fn tie(headers: &hyper::HeaderMap, id: &HeaderValue) -> Tie {
    let mut echoed = headers.get_all(&X_CHECK_ID).iter();
    match (echoed.next(), echoed.next()) {
        (None, _) => Tie::Absent,
        (Some(one), None) if one == id => Tie::Echoed,
        _ => Tie::Other,
    }
}

/// A fresh check id: 128 random bits as a UUID, which frameworks echo verbatim.
pub fn check_id() -> HeaderValue {
    let id = uuid::Uuid::new_v4();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()))
        .expect("a UUID is a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for v in values {
            h.append(X_CHECK_ID, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_answer_is_tied_only_by_exactly_one_echo_of_its_own_id() {
        let id = HeaderValue::from_static("3f2b9c1e-0d5a-4c59-8a43-9d8d2c1f0b7e");
        assert_eq!(tie(&headers(&["3f2b9c1e-0d5a-4c59-8a43-9d8d2c1f0b7e"]), &id), Tie::Echoed);
        assert_eq!(tie(&headers(&[]), &id), Tie::Absent);
        assert_eq!(tie(&headers(&["00000000-0d5a-4c59-8a43-9d8d2c1f0b7e"]), &id), Tie::Other);
        assert_eq!(tie(&headers(&["3F2B9C1E-0D5A-4C59-8A43-9D8D2C1F0B7E"]), &id), Tie::Other);
        let twice = "3f2b9c1e-0d5a-4c59-8a43-9d8d2c1f0b7e";
        assert_eq!(tie(&headers(&[twice, twice]), &id), Tie::Other);
        assert_eq!(tie(&headers(&[""]), &id), Tie::Other);
    }

    #[test]
    fn check_ids_are_fresh() {
        assert_ne!(check_id(), check_id());
        assert_eq!(check_id().len(), 36);
    }
}
