//! Remembered `user_info` of bridged presence members, in memory (the Redis
//! mode does the same inside its scripts, `redis_infos`): what the host
//! answered at a member's authorization, shown to the other apps' members.
//!
//! Signed-in users name channels, so everything is bounded (`[presence]`): per
//! channel, per user and in total, each bound making room by forgetting the
//! oldest (per channel, one of the oldest few present through no app if there
//! is one). An info is forgotten a day after its authorization, or once its
//! member, having joined, left through every app. Nothing is ever scanned:
//! each operation costs O(log n).

use crate::config::PresenceSettings;

/// Who is present in a bridged channel through each app: (app, [(user id, info JSON)]).
pub type BridgeSnapshot = Vec<(String, Vec<(String, Option<String>)>)>;
use std::collections::{BTreeSet, HashMap};

/// How long an info is kept after its authorization.
pub const TTL_MS: u64 = 86_400_000;
/// An authorization through an app counts as that app's subscriber this long:
/// the channel's `channel_occupied` webhook is still on its way.
pub const RECENT_AUTH_MS: u64 = 60_000;
/// Per channel, the oldest this many are looked at for one present through no app.
pub const VICTIM_CANDIDATES: usize = 8;
/// Infos past their day forgotten per call (so a call's cost stays bounded).
pub const EXPIRED_PER_CALL: usize = 16;

/// When an info was remembered, and its place among those of that millisecond.
type Stamp = (u64, u64);

/// What made room for a new info, by bound (for the metric and the log).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub channel: u64,
    pub user: u64,
    pub total: u64,
}

impl Evicted {
    pub fn any(&self) -> bool {
        self.channel + self.user + self.total > 0
    }
}

struct Entry {
    info: String,
    stamp: Stamp,
    /// Its member's join was seen since it was remembered.
    joined: bool,
}

#[derive(Default)]
struct Channel {
    entries: HashMap<String, Entry>,
    order: BTreeSet<(Stamp, String)>,
    /// The last authorization through each app (unix ms).
    authorized: Vec<(String, u64)>,
}

#[derive(Default)]
pub struct Infos {
    channels: HashMap<String, Channel>,
    /// user → (stamp, channel), the user's oldest first
    users: HashMap<String, BTreeSet<(Stamp, String)>>,
    /// (stamp, channel, user), everyone's oldest first
    all: BTreeSet<(Stamp, String, String)>,
    seq: u64,
}

impl Infos {
    /// Remembers `user`'s info in `channel`, authorized through `app` at
    /// `now_ms`, making room within the bounds; `present` says whether a user
    /// is present in `channel` through any app.
    pub fn remember(
        &mut self,
        (channel, user, info): (&str, &str, &str),
        app: &str,
        now_ms: u64,
        limits: &PresenceSettings,
        present: impl Fn(&str) -> bool,
    ) -> Evicted {
        self.expire(now_ms);
        let mut evicted = Evicted::default();
        let known = self.channels.get(channel).and_then(|c| c.entries.get(user)).map(|e| e.stamp);
        if let Some(stamp) = known {
            self.unlink(channel, user, stamp);
        } else {
            while self.users.get(user).is_some_and(|u| u.len() >= limits.max_channels_per_user) {
                let oldest = self.users[user].first().map(|(_, c)| c.clone()).expect("not empty");
                self.forget(&oldest, user);
                evicted.user += 1;
            }
            while let Some(c) =
                self.channels.get(channel).filter(|c| c.entries.len() >= limits.max_infos_per_channel)
            {
                let oldest: Vec<&String> = c.order.iter().take(VICTIM_CANDIDATES).map(|(_, u)| u).collect();
                let victim = oldest.iter().find(|u| !present(u)).unwrap_or(&oldest[0]).to_string();
                self.forget(channel, &victim);
                evicted.channel += 1;
            }
            while self.all.len() >= limits.max_infos {
                let (_, c, u) = self.all.first().cloned().expect("not empty");
                self.forget(&c, &u);
                evicted.total += 1;
            }
        }
        self.seq += 1;
        let stamp = (now_ms, self.seq);
        let c = self.channels.entry(channel.to_owned()).or_default();
        // Remembered anew: a join seen before is not this authorization's.
        c.entries.insert(user.to_owned(), Entry { info: info.to_owned(), stamp, joined: false });
        c.order.insert((stamp, user.to_owned()));
        match c.authorized.iter_mut().find(|(a, _)| a == app) {
            Some(seen) => seen.1 = now_ms,
            None => c.authorized.push((app.to_owned(), now_ms)),
        }
        self.users.entry(user.to_owned()).or_default().insert((stamp, channel.to_owned()));
        self.all.insert((stamp, channel.to_owned(), user.to_owned()));
        evicted
    }

    /// The info remembered for `user` in `channel`.
    pub fn info(&self, channel: &str, user: &str) -> Option<&str> {
        Some(self.channels.get(channel)?.entries.get(user)?.info.as_str())
    }

    /// `user` joined `channel` (through some app) since its info was remembered.
    pub fn joined(&mut self, channel: &str, user: &str) {
        if let Some(e) = self.channels.get_mut(channel).and_then(|c| c.entries.get_mut(user)) {
            e.joined = true;
        }
    }

    /// `user` left `channel` through every app: its info goes, unless it was
    /// remembered anew since it joined (a member moving to another app
    /// authorizes there first, and its join there may come after this).
    pub fn left(&mut self, channel: &str, user: &str) {
        if self.channels.get(channel).and_then(|c| c.entries.get(user)).is_some_and(|e| e.joined) {
            self.forget(channel, user);
        }
    }

    /// The apps through which `channel` was authorized since `since_ms`.
    pub fn authorized_since(&self, channel: &str, since_ms: u64) -> impl Iterator<Item = &str> {
        let apps = self.channels.get(channel).map(|c| c.authorized.as_slice()).unwrap_or_default();
        apps.iter().filter(move |(_, at)| *at >= since_ms).map(|(a, _)| a.as_str())
    }

    /// How many infos are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Forgets a few infos past their day, oldest first.
    fn expire(&mut self, now_ms: u64) {
        for _ in 0..EXPIRED_PER_CALL {
            match self.all.first() {
                Some(((at, _), c, u)) if *at + TTL_MS <= now_ms => {
                    let (c, u) = (c.clone(), u.clone());
                    self.forget(&c, &u);
                }
                _ => return,
            }
        }
    }

    fn forget(&mut self, channel: &str, user: &str) {
        let Some(c) = self.channels.get_mut(channel) else { return };
        let Some(entry) = c.entries.remove(user) else { return };
        if c.entries.is_empty() {
            self.channels.remove(channel);
        }
        self.unlink(channel, user, entry.stamp);
    }

    /// Takes an info out of the three orders (its entry stays, or is gone already).
    fn unlink(&mut self, channel: &str, user: &str, stamp: Stamp) {
        if let Some(c) = self.channels.get_mut(channel) {
            c.order.remove(&(stamp, user.to_owned()));
        }
        if let Some(u) = self.users.get_mut(user) {
            u.remove(&(stamp, channel.to_owned()));
            if u.is_empty() {
                self.users.remove(user);
            }
        }
        self.all.remove(&(stamp, channel.to_owned(), user.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_channel: usize, per_user: usize, total: usize) -> PresenceSettings {
        PresenceSettings {
            max_infos_per_channel: per_channel,
            max_channels_per_user: per_user,
            max_infos: total,
            ..PresenceSettings::default()
        }
    }

    #[test]
    fn a_full_channel_forgets_one_of_its_oldest_not_present_first() {
        let mut i = Infos::default();
        let l = limits(3, 10, 100);
        for (t, u) in ["a", "b", "c"].into_iter().enumerate() {
            i.remember(("presence-r", u, "{}"), "old", t as u64, &l, |_| true);
        }
        // a and c are present, b never came: b makes room, though a is older.
        let e = i.remember(("presence-r", "d", "{}"), "old", 9, &l, |u| u != "b");
        assert_eq!(e, Evicted { channel: 1, ..Evicted::default() });
        assert_eq!((i.info("presence-r", "a"), i.info("presence-r", "b")), (Some("{}"), None));
        // All present: the oldest goes.
        i.remember(("presence-r", "e", "{}"), "old", 10, &l, |_| true);
        assert_eq!(i.info("presence-r", "a"), None);
        assert_eq!(i.len(), 3);
    }

    #[test]
    fn the_total_bound_forgets_the_oldest_anywhere_and_a_day_old_info_goes() {
        let mut i = Infos::default();
        let l = limits(100, 10, 2);
        i.remember(("presence-a", "u1", "{}"), "old", 1, &l, |_| false);
        i.remember(("presence-b", "u2", "{}"), "old", 2, &l, |_| false);
        // Remembered anew: the newest again, not evicted next.
        i.remember(("presence-a", "u1", "{\"v\":2}"), "new", 3, &l, |_| false);
        let e = i.remember(("presence-c", "u3", "{}"), "old", 4, &l, |_| false);
        assert_eq!(e.total, 1);
        assert_eq!((i.info("presence-a", "u1"), i.info("presence-b", "u2")), (Some("{\"v\":2}"), None));
        assert_eq!(i.authorized_since("presence-a", 3).collect::<Vec<_>>(), ["new"]);
        i.remember(("presence-d", "u4", "{}"), "old", 3 + TTL_MS, &l, |_| false);
        assert_eq!(i.info("presence-a", "u1"), None, "a day after its authorization");
        assert_eq!(i.len(), 2);
        assert!(i.users.keys().all(|u| u == "u3" || u == "u4"), "nothing left behind");
        assert_eq!(i.channels.len(), 2);
    }
}
