//! Storm protection for the host: identical concurrent session checks share one
//! call (coalescing), and an optional short-TTL cache remembers decisions.
//!
//! "Identical" means same app, kind, channel, params, forwarded credentials
//! (Cookie, Authorization, configured extras) and client address chain
//! (`X-Forwarded-For`, so a host that decides by address is asked for each
//! address; `coalesce_across_addresses = true` drops it, for hosts that never
//! look at the address) — not the socket id: after a network blip a client
//! reconnects with a new socket id and re-authorizes the same channels with the
//! same cookie. The signature is still computed per request, for that
//! request's own socket id. A call in flight is keyed by the exact fields
//! (compared byte for byte: two users' checks can never share one answer,
//! whatever their cookies), which its own request holds anyway; a remembered
//! decision by their SHA-256 digest, so no raw cookie or token outlives its
//! request. Both maps are bounded by `max_entries`.

use super::headers::{X_FORWARDED_FOR, X_REQUEST_ID};
use super::{CheckRequest, ForwardedHeaders, HostAnswer, HostError};
pub use crate::config::CachePolicy;
use hyper::header::HeaderName;
use sha2::{Digest, Sha256};
use std::{
    sync::{Arc, Mutex},
    time::Instant,
};
use tokio::sync::OnceCell;

/// A check's fields, length-prefixed and joined: equal keys, identical checks.
/// Shared, as the in-flight map and the caller both hold it.
pub type Key = Arc<[u8]>;
/// A remembered decision's key: the SHA-256 digest of a `Key`.
type CacheKey = [u8; 32];
type Shared = Arc<OnceCell<Result<HostAnswer, HostError>>>;

/// How a caller got its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This caller made the host call.
    Called,
    /// Waited for an identical call already in flight.
    Coalesced,
    /// A remembered decision.
    Cached,
}

/// A client's cookie is part of a key (`crate::seeded_map`).
type Map<K, V> = crate::seeded_map::SeededMap<K, V>;

pub struct SharedChecks {
    policy: CachePolicy,
    in_flight: Mutex<Map<Key, Shared>>,
    cache: Mutex<Map<CacheKey, (Instant, HostAnswer)>>,
}

/// The key of a check. `X-Request-Id` is per request and never part of it;
/// the address chain is, unless `across_addresses`.
pub fn key(request: &CheckRequest<'_>, headers: &ForwardedHeaders, across_addresses: bool) -> Key {
    let mut k = Vec::with_capacity(256);
    // Length-prefixed: no ambiguity between fields.
    let field = |k: &mut Vec<u8>, bytes: &[u8]| {
        k.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        k.extend_from_slice(bytes);
    };
    field(&mut k, request.app.as_bytes());
    field(&mut k, request.kind.as_str().as_bytes());
    field(&mut k, request.channel_name.unwrap_or("").as_bytes());
    // The params last but one, prefixed by their own length once written.
    let at = k.len();
    k.extend_from_slice(&[0; 8]);
    serde_json::to_writer(&mut k, request.params).expect("a JSON map always serializes");
    let len = (k.len() - at - 8) as u64;
    k[at..at + 8].copy_from_slice(&len.to_le_bytes());
    let counts = |n: &HeaderName| *n != X_REQUEST_ID && !(across_addresses && *n == X_FORWARDED_FOR);
    for (name, value) in headers.iter().filter(|(n, _)| counts(n)) {
        field(&mut k, name.as_str().as_bytes());
        field(&mut k, value);
    }
    k.into()
}

fn digest(key: &[u8]) -> CacheKey {
    Sha256::digest(key).into()
}

impl SharedChecks {
    pub fn new(policy: CachePolicy) -> Self {
        Self { policy, in_flight: Mutex::default(), cache: Mutex::default() }
    }

    fn cached(&self, key: &[u8]) -> Option<HostAnswer> {
        if self.policy.grant_ttl.is_zero() {
            return None;
        }
        let key = digest(key);
        let mut cache = self.cache.lock().unwrap();
        match cache.get(&key) {
            Some((expires, answer)) if *expires > Instant::now() => Some(answer.clone()),
            Some(_) => {
                cache.remove(&key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: &[u8], answer: &HostAnswer) {
        let ttl = match answer {
            HostAnswer::Allowed(_) => self.policy.grant_ttl,
            HostAnswer::Denied => self.policy.deny_ttl,
        };
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= self.policy.max_entries {
            cache.retain(|_, (expires, _)| *expires > now);
            if cache.len() >= self.policy.max_entries {
                return; // full of live entries: skip rather than grow
            }
        }
        cache.insert(digest(key), (now + ttl, answer.clone()));
    }

    /// Answers from the cache, or joins an identical in-flight call, or runs `call`.
    /// Errors are shared with concurrent waiters but never cached.
    pub async fn run<F, Fut>(&self, key: Key, call: F) -> (Result<HostAnswer, HostError>, Source)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<HostAnswer, HostError>>,
    {
        if let Some(answer) = self.cached(&key) {
            return (Ok(answer), Source::Cached);
        }
        if !self.policy.coalesce {
            let result = call().await;
            if let Ok(answer) = &result {
                self.remember(&key, answer);
            }
            return (result, Source::Called);
        }
        let cell = {
            let mut in_flight = self.in_flight.lock().unwrap();
            if in_flight.len() >= self.policy.max_entries && !in_flight.contains_key(&key) {
                None // full: this check runs on its own rather than grow the map
            } else {
                Some(in_flight.entry(key.clone()).or_default().clone())
            }
        };
        let Some(cell) = cell else {
            return (call().await, Source::Called);
        };
        // The participant holds this caller's only clone (the count in its Drop relies on it).
        let participant = Participant { map: &self.in_flight, key: &key, cell: Some(cell) };
        let mut ran = false;
        // If the leader's request is cancelled, a waiter takes over the call.
        let result = participant
            .cell
            .as_ref()
            .expect("set until drop")
            .get_or_init(|| {
                ran = true;
                call()
            })
            .await
            .clone();
        if ran && let Ok(answer) = &result {
            self.remember(&key, answer);
        }
        drop(participant);
        (result, if ran { Source::Called } else { Source::Coalesced })
    }

    /// Distinct checks in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().unwrap().len()
    }
}

/// One caller's hold on an in-flight entry. Dropped on every way out —
/// answered, failed, or the request cancelled mid-await by a client reset — and
/// the last holder out (or the first after the answer) removes the entry, so a
/// cancelled request cannot leave it behind.
struct Participant<'a> {
    map: &'a Mutex<Map<Key, Shared>>,
    key: &'a [u8],
    cell: Option<Shared>,
}

impl Drop for Participant<'_> {
    fn drop(&mut self) {
        let Some(cell) = self.cell.take() else { return };
        let mut map = self.map.lock().unwrap();
        // Clones are only made under this lock, so the count cannot rise meanwhile;
        // 2 = the map's and ours.
        let ours = map.get(self.key).is_some_and(|c| Arc::ptr_eq(c, &cell));
        if ours && (cell.initialized() || Arc::strong_count(&cell) == 2) {
            map.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_check::{CheckKind, forwarded_headers, interpret};
    use serde_json::Map;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn headers(cookie: &'static str, xff_peer: &str) -> ForwardedHeaders {
        forwarded_headers(
            |n| if n == "cookie" { vec![cookie.as_bytes()] } else { vec![] },
            xff_peer.parse().ok(),
            &[],
            &[],
            b"rid",
        )
        .unwrap()
    }

    fn req<'a>(
        socket: &'a str,
        channel: &'a str,
        params: &'a Map<String, serde_json::Value>,
    ) -> CheckRequest<'a> {
        CheckRequest {
            app: "new",
            kind: CheckKind::Channel,
            socket_id: socket,
            channel_name: Some(channel),
            params,
        }
    }

    #[test]
    fn the_key_ignores_socket_id_but_not_credentials_channel_or_address() {
        let p = Map::new();
        let a = key(&req("1.1", "private-a", &p), &headers("s=1", "10.0.0.1"), false);
        assert_eq!(a, key(&req("2.2", "private-a", &p), &headers("s=1", "10.0.0.1"), false));
        assert_ne!(a, key(&req("1.1", "private-a", &p), &headers("s=1", "10.0.0.2"), false));
        assert_ne!(a, key(&req("1.1", "private-b", &p), &headers("s=1", "10.0.0.1"), false));
        assert_ne!(a, key(&req("1.1", "private-a", &p), &headers("s=2", "10.0.0.1"), false));
        let mut q = Map::new();
        q.insert("x".into(), "1".into());
        assert_ne!(a, key(&req("1.1", "private-a", &q), &headers("s=1", "10.0.0.1"), false));
        // Opted out: the address no longer separates checks.
        let across = key(&req("1.1", "private-a", &p), &headers("s=1", "10.0.0.1"), true);
        assert_eq!(across, key(&req("1.1", "private-a", &p), &headers("s=1", "10.0.0.2"), true));
    }

    #[tokio::test]
    async fn a_cancelled_check_leaves_no_entry_behind_and_the_map_is_bounded() {
        let shared = SharedChecks::new(policy(0, 0));
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            interpret(200, b"{}")
        };
        for i in 0..3u8 {
            // Cancelled mid-call, as when the client resets the connection.
            let _ =
                tokio::time::timeout(Duration::from_millis(10), shared.run(Arc::new([i; 32]), slow)).await;
        }
        assert_eq!(shared.in_flight(), 0);
        // max_entries = 2: a third distinct check in flight runs uncoalesced.
        let fast = || async { interpret(200, b"{}") };
        let a = shared.run(Arc::new([1; 32]), slow);
        let b = shared.run(Arc::new([2; 32]), slow);
        let c = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(shared.in_flight(), 2);
            shared.run(Arc::new([3; 32]), fast).await
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), futures_util::future::join3(a, b, c)).await;
        assert_eq!(shared.in_flight(), 0);
    }

    fn policy(ttl_ms: u64, deny_ms: u64) -> CachePolicy {
        CachePolicy {
            coalesce: true,
            across_addresses: false,
            grant_ttl: Duration::from_millis(ttl_ms),
            deny_ttl: Duration::from_millis(deny_ms),
            max_entries: 2,
        }
    }

    #[tokio::test]
    async fn concurrent_identical_checks_make_one_call() {
        let shared = SharedChecks::new(policy(0, 0));
        let calls = AtomicUsize::new(0);
        let call = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            interpret(200, b"{}")
        };
        let results =
            futures_util::future::join_all((0..10).map(|_| shared.run(Arc::new([7; 32]), call))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(results.iter().filter(|r| r.1 == Source::Coalesced).count(), 9);
        assert!(results.iter().all(|r| r.0.is_ok()));
        // Nothing cached with TTL 0: the next call goes to the host again.
        let _ = shared.run(Arc::new([7; 32]), call).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn grants_and_denials_are_cached_for_their_ttls_and_errors_never() {
        let shared = SharedChecks::new(policy(200, 50));
        let calls = AtomicUsize::new(0);
        let answer = |status: u16| {
            let calls = &calls;
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                interpret(status, b"{}")
            }
        };
        let _ = shared.run(Arc::new([1; 32]), answer(200)).await;
        assert_eq!(shared.run(Arc::new([1; 32]), answer(200)).await.1, Source::Cached);
        let _ = shared.run(Arc::new([2; 32]), answer(403)).await;
        assert_eq!(shared.run(Arc::new([2; 32]), answer(403)).await.1, Source::Cached);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(
            shared.run(Arc::new([2; 32]), answer(403)).await.1,
            Source::Called,
            "denial expired first"
        );
        assert_eq!(shared.run(Arc::new([1; 32]), answer(200)).await.1, Source::Cached, "grant still cached");
        let _ = shared.run(Arc::new([3; 32]), answer(500)).await;
        assert_eq!(
            shared.run(Arc::new([3; 32]), answer(500)).await.1,
            Source::Called,
            "errors are not cached"
        );
        // Bounded: max_entries = 2 live entries; a third grant is not stored.
        let _ = shared.run(Arc::new([4; 32]), answer(200)).await;
        assert_eq!(shared.run(Arc::new([4; 32]), answer(200)).await.1, Source::Called);
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }
}
