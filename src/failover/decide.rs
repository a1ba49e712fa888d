//! The fleet's decision, pure: which app (if any) is failed over, from what
//! every live replica sees of each app. The same rule runs with and without
//! Redis (without it, this replica is the only view).

use super::config::{FailoverSettings, Return};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One replica's view of one app: healthy or not, since its last change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    pub since_ms: u64,
}

/// Why an app is failed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The fleet saw it unhealthy for `fail_after_secs`.
    Unhealthy,
    /// An operator said so.
    Operator,
}

/// The decision while an app is failed: its clients go to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub from: String,
    pub to: String,
    pub since_ms: u64,
    pub reason: Reason,
}

impl Failed {
    /// What clients are told (`/client-config`, announcements).
    pub fn told(&self) -> serde_json::Value {
        serde_json::json!({"from": self.from, "to": self.to, "since_ms": self.since_ms, "reason": self.reason})
    }
}

/// The `version` clients compare: the rollout's, changed by a decision in force,
/// the same on every replica that has it (it depends on the decision only).
pub fn client_version(rollout_version: u32, failed: Option<&Failed>) -> u32 {
    use sha2::{Digest, Sha256};
    let Some(f) = failed else { return rollout_version };
    let d = Sha256::digest(format!("{rollout_version}\n{}\n{}\n{}", f.from, f.to, f.since_ms));
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Each live replica's views, by app.
pub type Views<'a> = [&'a BTreeMap<String, Health>];

/// What most of the replicas that have a view of `app` see, by `now_ms`:
/// `healthy` continuously for at least `for_ms`.
fn most(views: &Views, app: &str, healthy: bool, for_ms: u64, now_ms: u64) -> bool {
    let seen: Vec<&Health> = views.iter().filter_map(|v| v.get(app)).collect();
    let agree = seen.iter().filter(|h| h.healthy == healthy && now_ms.saturating_sub(h.since_ms) >= for_ms);
    !seen.is_empty() && agree.count() * 2 > seen.len()
}

/// The decision that follows `current` for the rollout's two apps `pair`.
/// Failed: unhealthy for `fail_after` on most replicas while the other app is
/// healthy on most (clients are never sent from one dead app to another).
/// Back: with `return = "auto"`, once the failed app has been healthy for
/// `return_after` on most; whatever the mode, the other way round if the app
/// clients were sent to fails while the first one is healthy again.
pub fn decide(
    current: Option<&Failed>,
    views: &Views,
    pair: (&str, &str),
    now_ms: u64,
    s: &FailoverSettings,
) -> Option<Failed> {
    let fail_ms = s.fail_after.as_millis() as u64;
    let failed = |app: &str| most(views, app, false, fail_ms, now_ms);
    let healthy = |app: &str| most(views, app, true, 0, now_ms);
    let fail = |from: &str, to: &str| Failed {
        from: from.to_owned(),
        to: to.to_owned(),
        since_ms: now_ms,
        reason: Reason::Unhealthy,
    };
    match current {
        // A reload that changed the rollout's apps ends a decision about others.
        Some(f) if !(f.from == pair.0 && f.to == pair.1 || f.from == pair.1 && f.to == pair.0) => None,
        Some(f) => {
            if failed(&f.to) && healthy(&f.from) {
                return Some(fail(&f.to, &f.from));
            }
            let return_ms = s.return_after.as_millis() as u64;
            let back = s.return_mode == Return::Auto
                && f.reason == Reason::Unhealthy
                && now_ms.saturating_sub(f.since_ms) >= return_ms
                && most(views, &f.from, true, return_ms, now_ms);
            if back { None } else { Some(f.clone()) }
        }
        None if failed(pair.0) && healthy(pair.1) => Some(fail(pair.0, pair.1)),
        None if failed(pair.1) && healthy(pair.0) => Some(fail(pair.1, pair.0)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(mode: Return) -> FailoverSettings {
        FailoverSettings {
            probe_every: Duration::from_secs(2),
            fail_after: Duration::from_secs(6),
            return_mode: mode,
            return_after: Duration::from_secs(60),
        }
    }

    fn view(old: (bool, u64), new: (bool, u64)) -> BTreeMap<String, Health> {
        BTreeMap::from([
            ("old".into(), Health { healthy: old.0, since_ms: old.1 }),
            ("new".into(), Health { healthy: new.0, since_ms: new.1 }),
        ])
    }

    const PAIR: (&str, &str) = ("old", "new");

    #[test]
    fn an_app_fails_over_after_fail_after_on_most_replicas() {
        let s = settings(Return::Manual);
        let down = view((false, 10_000), (true, 0));
        let up = view((true, 0), (true, 0));
        assert_eq!(decide(None, &[&down], PAIR, 15_999, &s), None, "5.999 s is not yet 6");
        let f = decide(None, &[&down], PAIR, 16_000, &s).expect("failed over at 6 s");
        assert_eq!((f.from.as_str(), f.to.as_str(), f.reason), ("old", "new", Reason::Unhealthy));
        assert_eq!(decide(None, &[&down, &up], PAIR, 20_000, &s), None, "one of two is not most");
        assert!(decide(None, &[&down, &down, &up], PAIR, 20_000, &s).is_some(), "two of three is");
        let lately = view((false, 18_000), (true, 0));
        assert_eq!(
            decide(None, &[&down, &lately, &up], PAIR, 20_000, &s),
            None,
            "not long enough on the second"
        );
        assert_eq!(decide(None, &[], PAIR, 20_000, &s), None, "no views, no decision");
    }

    #[test]
    fn never_from_one_dead_app_to_another() {
        let s = settings(Return::Manual);
        let both = view((false, 0), (false, 0));
        assert_eq!(decide(None, &[&both], PAIR, 60_000, &s), None);
        let new_down = view((true, 0), (false, 0));
        let f = decide(None, &[&new_down], PAIR, 60_000, &s).unwrap();
        assert_eq!((f.from.as_str(), f.to.as_str()), ("new", "old"), "either app can fail");
    }

    #[test]
    fn a_flapping_app_never_fails_over() {
        let s = settings(Return::Manual);
        // Down 2 s, up 2 s: each failure starts the count again.
        for t in (0..40_000).step_by(500) {
            let down = (t / 2_000) % 2 == 1;
            let since = t - t % 2_000;
            let v = view((!down, since), (true, 0));
            assert_eq!(decide(None, &[&v], PAIR, t, &s), None, "at {t} ms");
        }
    }

    #[test]
    fn manual_return_keeps_the_decision_auto_returns_after_the_dwell() {
        let f = Failed { from: "old".into(), to: "new".into(), since_ms: 10_000, reason: Reason::Unhealthy };
        let healed = view((true, 20_000), (true, 0));
        let manual = settings(Return::Manual);
        assert_eq!(decide(Some(&f), &[&healed], PAIR, 500_000, &manual), Some(f.clone()));
        let auto = settings(Return::Auto);
        assert_eq!(decide(Some(&f), &[&healed], PAIR, 79_999, &auto), Some(f.clone()), "healthy 59.999 s");
        assert_eq!(decide(Some(&f), &[&healed], PAIR, 80_000, &auto), None, "healthy 60 s: back");
        let operator = Failed { reason: Reason::Operator, ..f.clone() };
        assert_eq!(decide(Some(&operator), &[&healed], PAIR, 500_000, &auto), Some(operator.clone()));
    }

    #[test]
    fn the_other_way_round_when_the_target_fails_and_the_first_is_back() {
        let f = Failed { from: "old".into(), to: "new".into(), since_ms: 10_000, reason: Reason::Operator };
        let swapped = view((true, 30_000), (false, 40_000));
        let next = decide(Some(&f), &[&swapped], PAIR, 46_000, &settings(Return::Manual)).unwrap();
        assert_eq!((next.from.as_str(), next.to.as_str(), next.since_ms), ("new", "old", 46_000));
        let both_down = view((false, 30_000), (false, 40_000));
        assert_eq!(decide(Some(&f), &[&both_down], PAIR, 46_000, &settings(Return::Auto)), Some(f.clone()));
        assert_eq!(decide(Some(&f), &[&swapped], ("old", "other"), 46_000, &settings(Return::Manual)), None);
    }
}
