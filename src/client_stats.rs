//! Signed authorizations per client group and app over the last hour and day:
//! which client builds still keep the old app alive. Bounded, and ranked by
//! volume rather than first come: when MAX_GROUPS groups are tracked by name, a
//! new group takes the place of the one with the least recent volume (its counts
//! move to "other", so totals stay right). A newcomer starts from nothing (it
//! does not inherit the evicted volume, as Space-Saving would: a flood of
//! one-off names would then raise the floor until real builds fell below it),
//! so a flood of made-up User-Agents from signed-in users only displaces its
//! own oldest entries, and any build used more often keeps its name. Volume
//! decays with a half-life of an hour; counts are per minute and kept for a day.

use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
};

/// Looked up on every signed authorization (`crate::seeded_map`).
type Map<K, V> = crate::seeded_map::SeededMap<K, V>;

pub const MAX_GROUPS: usize = 50;
const OTHER: &str = "other";
const MINUTE_MS: u64 = 60_000;
const DAY_MINUTES: u64 = 24 * 60;
pub const HALF_LIFE_MS: f64 = 3_600_000.0;

#[derive(Default)]
struct Group {
    /// app → (minute, count), oldest first
    per_app: Map<String, VecDeque<(u64, u64)>>,
    last_seen_ms: u64,
    /// Recent volume (decayed auths) as of `last_seen_ms`.
    volume: f64,
}

impl Group {
    fn volume_at(&self, now_ms: u64) -> f64 {
        let age = now_ms.saturating_sub(self.last_seen_ms) as f64;
        self.volume * (-age / HALF_LIFE_MS).exp2()
    }

    /// Adds another group's per-minute counts to this one's.
    fn absorb(&mut self, other: Group) {
        for (app, counts) in other.per_app {
            let mine = self.per_app.entry(app).or_default();
            let mut merged: BTreeMap<u64, u64> = mine.drain(..).collect();
            for (minute, n) in counts {
                *merged.entry(minute).or_default() += n;
            }
            mine.extend(merged);
        }
        self.last_seen_ms = self.last_seen_ms.max(other.last_seen_ms);
    }
}

#[derive(Default)]
pub struct ClientStats {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    groups: Map<String, Group>,
    /// group → app → auths not yet flushed to the fleet (with Redis only);
    /// bounded: past MAX_PENDING groups, counted under "other".
    pending: Map<String, Map<String, u64>>,
    keep_pending: bool,
}

/// Groups pending at most between two fleet flushes (the fleet ranks them).
const MAX_PENDING: usize = 2 * MAX_GROUPS;

impl ClientStats {
    /// Counts one signed authorization for `app` from `group`.
    pub fn record(&self, group: &str, app: &str, now_ms: u64) {
        let minute = now_ms / MINUTE_MS;
        let mut inner = self.inner.lock().unwrap();
        if inner.keep_pending {
            let full = inner.pending.len() >= MAX_PENDING && !inner.pending.contains_key(group);
            let key = if full { OTHER } else { group };
            // Allocates only for a (group, app) new since the last flush.
            match inner.pending.get_mut(key).and_then(|apps| apps.get_mut(app)) {
                Some(n) => *n += 1,
                None => {
                    *inner.pending.entry(key.to_owned()).or_default().entry(app.to_owned()).or_default() += 1
                }
            }
        }
        let groups = &mut inner.groups;
        // On every signed auth: allocate a key only the first time it is seen.
        if !groups.contains_key(group) {
            if group != OTHER && groups.keys().filter(|k| *k != OTHER).count() >= MAX_GROUPS {
                Self::evict_quietest(groups, now_ms);
            }
            groups.insert(group.to_owned(), Group { last_seen_ms: now_ms, ..Group::default() });
        }
        let g = groups.get_mut(group).expect("inserted above");
        g.volume = g.volume_at(now_ms) + 1.0;
        g.last_seen_ms = now_ms;
        if !g.per_app.contains_key(app) {
            g.per_app.insert(app.to_owned(), VecDeque::new());
        }
        let counts = g.per_app.get_mut(app).expect("inserted above");
        match counts.back_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => counts.push_back((minute, 1)),
        }
        while counts.front().is_some_and(|(m, _)| *m + DAY_MINUTES <= minute) {
            counts.pop_front();
        }
    }

    /// Moves the named group with the least recent volume into "other" (of equals, the longest unseen).
    fn evict_quietest(groups: &mut Map<String, Group>, now_ms: u64) {
        let Some((name, _)) = groups
            .iter()
            .filter(|(name, _)| *name != OTHER)
            .map(|(name, g)| (name.clone(), g.volume_at(now_ms)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            return;
        };
        let evicted = groups.remove(&name).expect("found above");
        groups.entry(OTHER.to_owned()).or_default().absorb(evicted);
    }

    /// Per group: auths per app in the last hour and day, last seen, and the
    /// share of the day's auths still on `old_app`; the groups that keep the old
    /// app alive most come first.
    pub fn snapshot(&self, now_ms: u64, old_app: Option<&str>) -> Vec<Value> {
        let minute = now_ms / MINUTE_MS;
        let inner = self.inner.lock().unwrap();
        let groups = inner.groups.iter().map(|(name, g)| {
            let per_app = g
                .per_app
                .iter()
                .map(|(app, counts)| {
                    let sum = |minutes: u64| -> u64 {
                        counts.iter().filter(|(m, _)| m + minutes > minute).map(|(_, n)| n).sum()
                    };
                    (app.clone(), sum(60), sum(DAY_MINUTES))
                })
                .collect();
            GroupCounts { name: name.clone(), per_app, last_seen_ms: g.last_seen_ms }
        });
        ranked(groups, old_app)
    }

    /// Counts kept for the fleet (`fleet`) from now on; until then none are.
    pub fn keep_pending(&self) {
        self.inner.lock().unwrap().keep_pending = true;
    }

    /// The (group, app, count) signed since the last call, for the fleet.
    pub fn take_pending(&self) -> Vec<(String, String, u64)> {
        let pending = std::mem::take(&mut self.inner.lock().unwrap().pending);
        pending
            .into_iter()
            .flat_map(|(g, apps)| apps.into_iter().map(move |(a, n)| (g.clone(), a, n)))
            .collect()
    }
}

/// One group's counts as shown: per app, (app, last hour, last day).
pub struct GroupCounts {
    pub name: String,
    pub per_app: Vec<(String, u64, u64)>,
    pub last_seen_ms: u64,
}

/// The rows of the client-build table: most of the day's auths on `old_app` first.
pub fn ranked(groups: impl Iterator<Item = GroupCounts>, old_app: Option<&str>) -> Vec<Value> {
    let mut rows: Vec<(f64, u64, Value)> = groups
        .map(|g| {
            let mut apps = serde_json::Map::new();
            let (mut day_total, mut day_old) = (0u64, 0u64);
            for (app, hour, day) in g.per_app {
                day_total += day;
                if Some(app.as_str()) == old_app {
                    day_old += day;
                }
                apps.insert(app, json!({"last_hour": hour, "last_day": day}));
            }
            let share = if day_total == 0 { 0.0 } else { day_old as f64 / day_total as f64 };
            let row = json!({
                "group": g.name, "apps": apps, "last_seen_ms": g.last_seen_ms,
                "old_share_day": (share * 1000.0).round() / 1000.0,
            });
            (share, day_old, row)
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    rows.into_iter().map(|(_, _, row)| row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_still_on_the_old_app_come_first_and_old_counts_expire() {
        let stats = ClientStats::default();
        let t = 10_000 * MINUTE_MS;
        for _ in 0..3 {
            stats.record("iOS app Shop 1.0", "old", t);
        }
        stats.record("Chrome 131", "new", t);
        stats.record("Chrome 131", "old", t);
        stats.record("Chrome 131", "new", t - 2 * DAY_MINUTES * MINUTE_MS); // too old to count
        let rows = stats.snapshot(t, Some("old"));
        assert_eq!(rows[0]["group"], "iOS app Shop 1.0");
        assert_eq!(rows[0]["old_share_day"], 1.0);
        assert_eq!(rows[1]["old_share_day"], 0.5);
        assert_eq!(rows[1]["apps"]["new"]["last_day"], 1);
        let later = stats.snapshot(t + 61 * MINUTE_MS, Some("old"));
        assert_eq!(later[0]["apps"]["old"]["last_hour"], 0, "an hour later");
        assert_eq!(later[0]["apps"]["old"]["last_day"], 3);
    }

    #[test]
    fn the_number_of_groups_is_bounded_and_no_count_is_lost() {
        let stats = ClientStats::default();
        for i in 0..200 {
            stats.record(&format!("build {i}"), "old", MINUTE_MS + i);
        }
        let rows = stats.snapshot(MINUTE_MS + 200, Some("old"));
        assert_eq!(rows.len(), MAX_GROUPS + 1);
        let total: u64 = rows.iter().map(|r| r["apps"]["old"]["last_day"].as_u64().unwrap()).sum();
        assert_eq!(total, 200, "evicted groups' counts are in other");
    }

    #[test]
    fn made_up_builds_cannot_push_busy_real_ones_into_other() {
        let stats = ClientStats::default();
        let t = 10_000 * MINUTE_MS;
        // 40 real builds, each used a few times.
        for i in 0..40 {
            for k in 0..3 {
                stats.record(&format!("real {i}"), "old", t + k);
            }
        }
        // A signed-in user sends 500 made-up User-Agents, once each.
        for i in 0..500 {
            stats.record(&format!("fake {i}"), "old", t + 10 + i);
        }
        let rows = stats.snapshot(t + 1_000, Some("old"));
        assert!(rows.len() <= MAX_GROUPS + 1);
        for i in 0..40 {
            let name = format!("real {i}");
            let row =
                rows.iter().find(|r| r["group"] == name.as_str()).unwrap_or_else(|| panic!("{name} kept"));
            assert_eq!(row["apps"]["old"]["last_day"], 3);
        }
        let other = rows.iter().find(|r| r["group"] == OTHER).unwrap();
        assert_eq!(other["apps"]["old"]["last_day"], 490, "the fakes that lost their place");
        // A new real build that becomes busy earns a name even during the flood.
        for k in 0..20 {
            stats.record("new real", "new", t + 2_000 + k);
            stats.record(&format!("fake again {k}"), "old", t + 2_000 + k);
        }
        let rows = stats.snapshot(t + 3_000, Some("old"));
        let row = rows.iter().find(|r| r["group"] == "new real").expect("named");
        assert!(row["apps"]["new"]["last_day"].as_u64().unwrap() >= 1);
    }
}
