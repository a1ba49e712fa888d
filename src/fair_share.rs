//! A capacity shared fairly among clients: at most `total` slots held at once,
//! and at most `per_client` by any one client, so one source holding slots open
//! (slow bodies, a silent host behind its checks) cannot starve the others. A
//! client is an address, an IPv6 client its /64 (see `rate_limit::bucket`).
//! Memory is bounded by `total`: only clients holding a slot are remembered.

use std::{collections::HashMap, net::IpAddr, sync::Mutex};

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is held.
    Full,
    /// This client holds its whole share.
    ClientShare,
}

pub struct FairShare {
    total: usize,
    per_client: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// A held slot, given back when dropped (answered, failed or cancelled).
pub struct Slot<'a> {
    share: &'a FairShare,
    client: IpAddr,
}

impl FairShare {
    pub fn new(total: usize, per_client: usize) -> Self {
        Self { total, per_client: per_client.clamp(1, total.max(1)), held: Mutex::default() }
    }

    pub fn per_client(&self) -> usize {
        self.per_client
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// A slot for `client`, if one is free and the client is within its share.
    pub fn try_acquire(&self, client: IpAddr) -> Result<Slot<'_>, Refused> {
        let client = crate::rate_limit::bucket(client);
        let mut held = self.held.lock().unwrap();
        if held.total >= self.total {
            return Err(Refused::Full);
        }
        let mine = held.by_client.entry(client).or_default();
        if *mine >= self.per_client {
            return Err(Refused::ClientShare);
        }
        *mine += 1;
        held.total += 1;
        Ok(Slot { share: self, client })
    }

    /// Slots held right now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.lock().unwrap().total
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut held = self.share.held.lock().unwrap();
        held.total -= 1;
        if let Some(n) = held.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_client_takes_its_share_and_others_still_get_slots() {
        let share = FairShare::new(4, 2);
        let a1 = share.try_acquire(ip("192.0.2.1")).unwrap();
        let _a2 = share.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(share.try_acquire(ip("192.0.2.1")).err(), Some(Refused::ClientShare));
        // The same /64 is one client.
        let _b1 = share.try_acquire(ip("2001:db8::1")).unwrap();
        let b2 = share.try_acquire(ip("2001:db8::2")).unwrap();
        drop(a1);
        assert_eq!(share.try_acquire(ip("2001:db8::3")).err(), Some(Refused::ClientShare));
        let _c1 = share.try_acquire(ip("198.51.100.7")).unwrap();
        assert_eq!(share.try_acquire(ip("203.0.113.9")).err(), Some(Refused::Full));
        drop(b2);
        assert!(share.try_acquire(ip("203.0.113.9")).is_ok(), "a released slot is free again");
    }

    #[test]
    fn released_slots_forget_their_client() {
        let share = FairShare::new(100, 3);
        for i in 0..50u8 {
            drop(share.try_acquire(IpAddr::from([10, 0, 0, i])).unwrap());
        }
        assert_eq!(share.held(), 0);
        assert!(share.held.lock().unwrap().by_client.is_empty());
        assert_eq!(FairShare::new(8, 0).per_client(), 1, "a share is at least one slot");
        assert_eq!(FairShare::new(8, 100).per_client(), 8, "and at most the whole");
    }
}
