//! Signed authorizations per client group and app over the last hour and day:
//! which client builds still keep the old app alive. Bounded: the first
//! MAX_GROUPS groups are tracked by name, later ones count as "other"; counts
//! are per minute and kept for a day.

use serde_json::{Value, json};
use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

const MAX_GROUPS: usize = 50;
const OTHER: &str = "other";
const MINUTE_MS: u64 = 60_000;
const DAY_MINUTES: u64 = 24 * 60;

#[derive(Default)]
struct Group {
    /// app → (minute, count), oldest first
    per_app: HashMap<String, VecDeque<(u64, u64)>>,
    last_seen_ms: u64,
}

#[derive(Default)]
pub struct ClientStats {
    groups: Mutex<HashMap<String, Group>>,
}

impl ClientStats {
    /// Counts one signed authorization for `app` from `group`.
    pub fn record(&self, group: &str, app: &str, now_ms: u64) {
        let minute = now_ms / MINUTE_MS;
        let mut groups = self.groups.lock().unwrap();
        let name = if groups.contains_key(group) || groups.len() < MAX_GROUPS { group } else { OTHER };
        // On every signed auth: allocate a key only the first time it is seen.
        if !groups.contains_key(name) {
            groups.insert(name.to_owned(), Group::default());
        }
        let g = groups.get_mut(name).expect("inserted above");
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

    /// Per group: auths per app in the last hour and day, last seen, and the
    /// share of the day's auths still on `old_app`; the groups that keep the old
    /// app alive most come first.
    pub fn snapshot(&self, now_ms: u64, old_app: Option<&str>) -> Vec<Value> {
        let minute = now_ms / MINUTE_MS;
        let groups = self.groups.lock().unwrap();
        let mut rows: Vec<(f64, u64, Value)> = groups
            .iter()
            .map(|(name, g)| {
                let mut apps = serde_json::Map::new();
                let (mut day_total, mut day_old) = (0u64, 0u64);
                for (app, counts) in &g.per_app {
                    let sum = |minutes: u64| -> u64 {
                        counts.iter().filter(|(m, _)| m + minutes > minute).map(|(_, n)| n).sum()
                    };
                    let (hour, day) = (sum(60), sum(DAY_MINUTES));
                    day_total += day;
                    if Some(app.as_str()) == old_app {
                        day_old += day;
                    }
                    apps.insert(app.clone(), json!({"last_hour": hour, "last_day": day}));
                }
                let share = if day_total == 0 { 0.0 } else { day_old as f64 / day_total as f64 };
                let row = json!({
                    "group": name, "apps": apps, "last_seen_ms": g.last_seen_ms,
                    "old_share_day": (share * 1000.0).round() / 1000.0,
                });
                (share, day_old, row)
            })
            .collect();
        rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        rows.into_iter().map(|(_, _, row)| row).collect()
    }
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
    fn the_number_of_groups_is_bounded() {
        let stats = ClientStats::default();
        for i in 0..200 {
            stats.record(&format!("build {i}"), "old", MINUTE_MS);
        }
        let rows = stats.snapshot(MINUTE_MS, Some("old"));
        assert_eq!(rows.len(), MAX_GROUPS + 1);
        let other = rows.iter().find(|r| r["group"] == OTHER).unwrap();
        assert_eq!(other["apps"]["old"]["last_day"], 150);
    }
}
