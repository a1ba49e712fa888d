//! Replay protection for incoming webhooks, pure: a webhook must be recent
//! (`time_ms` within the window), and an exact repeat of one already applied
//! within the window is acknowledged but not applied again (Pusher retries a
//! webhook whose acknowledgement was lost; an attacker replays a captured one).

use sha2::{Digest as _, Sha256};
use std::collections::{HashSet, VecDeque};

/// Identifies one webhook: the app it came through and its exact body.
pub type Digest = [u8; 32];

pub fn digest(app: &str, body: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update((app.len() as u64).to_le_bytes());
    h.update(app.as_bytes());
    h.update(body);
    h.finalize().into()
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AgeError {
    #[error("time_ms is missing or not a number")]
    Missing,
    #[error("webhook is {age_secs} s from this server's clock, outside the {window_secs} s window")]
    OutsideWindow { age_secs: i64, window_secs: u64 },
}

/// Checks `time_ms` against now; returns it when it is within the window either way.
pub fn check_age(time_ms: Option<u64>, now_ms: u64, window_ms: u64) -> Result<u64, AgeError> {
    let t = time_ms.ok_or(AgeError::Missing)?;
    if t.abs_diff(now_ms) > window_ms {
        let age_secs = (now_ms as i128 - t as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64 / 1000;
        return Err(AgeError::OutsideWindow { age_secs, window_secs: window_ms / 1000 });
    }
    Ok(t)
}

/// Digests of the webhooks applied within the window (memory mode), bounded.
#[derive(Debug)]
pub struct SeenWebhooks {
    order: VecDeque<(u64, Digest)>,
    set: HashSet<Digest>,
    max: usize,
}

impl Default for SeenWebhooks {
    fn default() -> Self {
        // Pusher sends at most a few webhooks a second per app; 100k is hours of them.
        Self::with_capacity(100_000)
    }
}

impl SeenWebhooks {
    pub fn with_capacity(max: usize) -> Self {
        Self { order: VecDeque::new(), set: HashSet::new(), max }
    }

    fn expire(&mut self, now_ms: u64) {
        while self.order.front().is_some_and(|(expires, _)| *expires <= now_ms) {
            let (_, d) = self.order.pop_front().expect("front exists");
            self.set.remove(&d);
        }
    }

    pub fn contains(&mut self, d: &Digest, now_ms: u64) -> bool {
        self.expire(now_ms);
        self.set.contains(d)
    }

    /// Remembers `d` until `expires_ms`; the oldest entry goes when full.
    pub fn insert(&mut self, d: Digest, expires_ms: u64, now_ms: u64) {
        self.expire(now_ms);
        if self.set.len() >= self.max
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        if self.set.insert(d) {
            self.order.push_back((expires_ms, d));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recent_webhooks_pass_in_either_direction() {
        assert_eq!(check_age(Some(1_000_000), 1_000_500, 600_000), Ok(1_000_000));
        assert_eq!(check_age(Some(1_500_000), 1_000_000, 600_000), Ok(1_500_000), "ahead, within skew");
        assert!(matches!(check_age(Some(1), 1_000_000, 600_000), Err(AgeError::OutsideWindow { .. })));
        assert!(matches!(check_age(Some(u64::MAX), 1_000_000, 600_000), Err(AgeError::OutsideWindow { .. })));
        assert_eq!(check_age(None, 1, 1), Err(AgeError::Missing));
    }

    #[test]
    fn repeats_are_seen_until_they_expire_and_the_set_is_bounded() {
        let mut seen = SeenWebhooks::with_capacity(2);
        let (a, b, c) = (digest("old", b"1"), digest("old", b"2"), digest("new", b"1"));
        assert_ne!(a, c, "the app is part of the identity");
        seen.insert(a, 100, 0);
        assert!(seen.contains(&a, 50));
        assert!(!seen.contains(&a, 100), "expired");
        seen.insert(a, 200, 100);
        seen.insert(b, 200, 100);
        seen.insert(c, 200, 100);
        assert_eq!(seen.len(), 2);
        assert!(!seen.contains(&a, 101), "the oldest went when full");
        assert!(seen.contains(&b, 101) && seen.contains(&c, 101));
    }
}
