//! Optional per-client token bucket (`[rate_limit]`), charged one token per
//! session check — a batch of 100 channels costs 100, a preflight nothing —
//! so the limit bounds what a client can make the host do. The client is the
//! peer, or the right-most untrusted hop of X-Forwarded-For when the peer is a
//! trusted proxy (never a header a client could set to dodge the limit); an
//! IPv6 client is its /64, since one host usually holds a whole /64.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::{
    net::{IpAddr, Ipv6Addr},
    sync::atomic::{AtomicU64, Ordering},
};

pub struct ClientRateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

/// The bucket a client address belongs to.
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

impl ClientRateLimiter {
    pub fn new(settings: crate::config::RateLimitSettings) -> Self {
        let quota = Quota::per_second(settings.per_second).allow_burst(settings.burst);
        Self { limiter: RateLimiter::keyed(quota), checks: AtomicU64::new(0) }
    }

    /// Takes one token for a session check by `ip`; false when it has none left.
    pub fn allow(&self, ip: IpAddr) -> bool {
        // Forget idle clients now and then, so memory stays bounded by recent ones.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&bucket(ip)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_their_64_and_ipv4_is_per_address() {
        let b = |s: &str| bucket(s.parse().unwrap()).to_string();
        assert_eq!(b("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(b("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
        assert_ne!(b("2001:db8:1:3::1"), b("2001:db8:1:2::1"));
        assert_eq!(b("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(b("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn each_call_takes_one_token() {
        let one = std::num::NonZeroU32::new(1).unwrap();
        let two = std::num::NonZeroU32::new(2).unwrap();
        let limiter =
            ClientRateLimiter::new(crate::config::RateLimitSettings { per_second: one, burst: two });
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(limiter.allow(ip) && limiter.allow("2001:db8::2".parse().unwrap()));
        assert!(!limiter.allow(ip), "the /64 shares one bucket of 2");
        assert!(limiter.allow("192.0.2.1".parse().unwrap()));
    }
}
