//! Which app a client should use during a rollout, pure. A client's bucket
//! (0-9999) is a salted HMAC of its id; the salt depends only on the two apps,
//! so raising `percent` only ever moves clients forward (from → to), and the
//! same user id gets the same answer on every device. Force lists win.

use crate::config::RolloutSettings;
use crate::rollout::config::SaltKey;
use hmac::Mac;

pub const BUCKETS: u32 = 10_000;

/// The sticky bucket of `id` under `salt`, keyed for this one id (the tests' form).
#[cfg(test)]
pub fn bucket(salt: &[u8; 32], id: &str) -> u16 {
    keyed_bucket(&SaltKey::new(salt), id)
}

/// The sticky bucket of `id` under a salt keyed once (`RolloutSettings::salt_key`).
pub fn keyed_bucket(key: &SaltKey, id: &str) -> u16 {
    let mut mac = key.mac();
    mac.update(id.as_bytes());
    let d = mac.finalize().into_bytes();
    (u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % BUCKETS) as u16
}

#[derive(Debug, PartialEq)]
pub struct Assignment<'a> {
    pub app: &'a str,
    pub bucket: u16,
    pub forced: bool,
}

/// The app for the client `id`; `uid` says whether the id is the host's user id
/// (force lists apply to user ids only, not to random per-browser ids).
pub fn assign<'a>(r: &'a RolloutSettings, id: &str, uid: bool) -> Assignment<'a> {
    let bucket = keyed_bucket(&r.salt_key, id);
    let forced_to = uid && r.force_to.iter().any(|u| u.as_ref() == id);
    let forced_from = uid && r.force_from.iter().any(|u| u.as_ref() == id);
    let app = if forced_to {
        &r.to
    } else if forced_from || f64::from(bucket) >= r.percent * 100.0 {
        &r.from
    } else {
        &r.to
    };
    Assignment { app, bucket, forced: forced_to || forced_from }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rollout(percent: f64) -> RolloutSettings {
        RolloutSettings {
            from: "old".into(),
            to: "new".into(),
            percent,
            force_to: vec![crate::pusher::UserId::parse("tester-1").unwrap()],
            force_from: vec![crate::pusher::UserId::parse("vip-9").unwrap()],
            control_channel: crate::pusher::PublicChannelName::parse("c").unwrap(),
            spread: Duration::from_secs(30),
            version: 1,
            salt: [7; 32],
            salt_key: SaltKey::new(&[7; 32]),
        }
    }

    #[test]
    fn buckets_are_stable_and_spread_evenly() {
        assert_eq!(bucket(&[7; 32], "user-42"), bucket(&[7; 32], "user-42"));
        assert_ne!(bucket(&[7; 32], "user-42"), bucket(&[8; 32], "user-42"), "the salt matters");
        let below_half = (0..10_000).filter(|i| bucket(&[7; 32], &format!("u{i}")) < 5_000).count();
        assert!((4_700..=5_300).contains(&below_half), "{below_half} of 10000 below the median");
    }

    #[test]
    fn a_salt_keyed_once_gives_every_client_its_own_bucket() {
        // HMAC-SHA256(salt = 32 × 7, id), first four bytes big-endian, mod 10,000 (Python's hmac).
        let key = SaltKey::new(&[7; 32]);
        assert_eq!(keyed_bucket(&key, "user-42"), 1551);
        assert_eq!(keyed_bucket(&key, "be000000000000000000000000000001"), 5228);
        assert_eq!(keyed_bucket(&key, "user-42"), 1551, "the kept key is not changed by a use");
        assert_eq!(bucket(&[7; 32], "user-42"), 1551);
        let r = rollout(50.0);
        assert_eq!(assign(&r, "user-42", false).bucket, 1551);
    }

    #[test]
    fn raising_the_percent_only_moves_clients_forward() {
        let ids: Vec<String> = (0..2_000).map(|i| format!("u{i}")).collect();
        let mut previous: Vec<bool> = vec![false; ids.len()];
        for percent in [0.0, 0.5, 1.0, 10.0, 50.0, 99.99, 100.0] {
            let r = rollout(percent);
            let now: Vec<bool> = ids.iter().map(|id| assign(&r, id, true).app == "new").collect();
            assert!(
                previous.iter().zip(&now).all(|(was, is)| !was || *is),
                "someone moved back at {percent}"
            );
            previous = now;
        }
        assert!(previous.iter().all(|n| *n), "100 % moves everyone");
        let r = rollout(0.0);
        assert!(ids.iter().all(|id| assign(&r, id, true).app == "old"), "0 % is a full rollback");
    }

    #[test]
    fn force_lists_win_for_user_ids_only() {
        assert_eq!(
            assign(&rollout(0.0), "tester-1", true),
            Assignment { app: "new", bucket: bucket(&[7; 32], "tester-1"), forced: true }
        );
        assert_eq!(assign(&rollout(100.0), "vip-9", true).app, "old");
        assert!(assign(&rollout(100.0), "vip-9", true).forced);
        assert_eq!(assign(&rollout(100.0), "vip-9", false).app, "new", "a random id is never forced");
    }
}
