//! The replicas a fleet has heard from, and drift: a replica running another
//! configuration than the rest (a missed reload, an old ConfigMap) is what an
//! operator must see during a rollout. Pure: rows in, rows and a verdict out.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What a replica reports of itself with every flush.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReplicaRow {
    pub id: String,
    pub host: String,
    pub version: String,
    pub started_ms: u64,
    /// A digest of the effective configuration (listen addresses left out:
    /// replicas on one host differ there), and when it was loaded.
    pub config: String,
    pub config_loaded_ms: u64,
    pub rollout: Option<RolloutRow>,
    pub last_seen_ms: u64,
    /// Set by the last flush of a replica stopping (SIGTERM): gone at once, not after `LIVE_MS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RolloutRow {
    pub from: String,
    pub to: String,
    pub percent: f64,
    pub version: u32,
}

/// Seen within this long: live. Flushes come every second, so this is five missed ones.
pub const LIVE_MS: u64 = 5_000;

/// The rows as shown (live ones first, newest first), and the drift verdict:
/// None when every live replica runs the configuration most of them run.
pub fn analyse(mut rows: Vec<ReplicaRow>, now_ms: u64) -> (Vec<Value>, Option<String>) {
    rows.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then(a.id.cmp(&b.id)));
    let live = |r: &ReplicaRow| r.stopped_ms.is_none() && r.last_seen_ms + LIVE_MS >= now_ms;
    // The expected configuration: the one most live replicas run; of equals,
    // the one loaded last (a reload reaches every replica within seconds).
    let mut groups: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| live(r)) {
        let g = groups.entry(r.config.as_str()).or_default();
        g.0 += 1;
        g.1 = g.1.max(r.config_loaded_ms);
    }
    let expected = groups.iter().max_by_key(|(_, (n, loaded))| (*n, *loaded)).map(|(c, _)| (*c).to_owned());
    let reference = rows.iter().find(|r| live(r) && Some(&r.config) == expected.as_ref()).cloned();
    let mut drifted = Vec::new();
    let shown = rows
        .iter()
        .map(|r| {
            let drift = live(r) && Some(&r.config) != expected.as_ref();
            if drift {
                drifted.push(describe(r, reference.as_ref(), &groups, expected.as_deref()));
            }
            let mut v = serde_json::to_value(r).expect("serializes");
            v["live"] = json!(live(r));
            v["drift"] = json!(drift);
            v
        })
        .collect();
    (shown, (!drifted.is_empty()).then(|| drifted.join("; ")))
}

fn describe(
    r: &ReplicaRow,
    reference: Option<&ReplicaRow>,
    groups: &BTreeMap<&str, (usize, u64)>,
    expected: Option<&str>,
) -> String {
    let others = expected.and_then(|c| groups.get(c)).map(|g| g.0).unwrap_or(0);
    let rollout = |r: &ReplicaRow| match &r.rollout {
        Some(x) if x.from == x.to => format!("the finished rollout to {}", x.to),
        Some(x) => format!("rollout percent {} (version {})", x.percent, x.version),
        None => "no rollout".to_owned(),
    };
    match reference {
        Some(reference) if reference.rollout != r.rollout => {
            format!("replica {} runs {} while {others} other(s) run {}", r.id, rollout(r), rollout(reference))
        }
        _ => format!(
            "replica {} runs configuration {} while {others} other(s) run {}",
            r.id,
            r.config,
            expected.unwrap_or("?")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, config: &str, percent: f64, loaded: u64, seen: u64) -> ReplicaRow {
        ReplicaRow {
            id: id.into(),
            host: "h".into(),
            version: "1".into(),
            started_ms: 0,
            config: config.into(),
            config_loaded_ms: loaded,
            rollout: Some(RolloutRow {
                from: "old".into(),
                to: "new".into(),
                percent,
                version: percent as u32,
            }),
            last_seen_ms: seen,
            stopped_ms: None,
        }
    }

    #[test]
    fn a_replica_left_behind_by_a_reload_is_named() {
        let now = 1_000_000;
        let rows = vec![
            row("a", "c50", 50.0, 900, now),
            row("b", "c10", 10.0, 100, now),
            row("c", "c50", 50.0, 950, now),
        ];
        let (shown, drift) = analyse(rows, now);
        assert_eq!(
            drift.as_deref(),
            Some(
                "replica b runs rollout percent 10 (version 10) while 2 other(s) run rollout percent 50 (version 50)"
            )
        );
        let b = shown.iter().find(|r| r["id"] == "b").unwrap();
        assert_eq!((b["drift"].as_bool(), b["live"].as_bool()), (Some(true), Some(true)));
    }

    #[test]
    fn of_two_the_one_loaded_last_is_expected_and_gone_replicas_do_not_count() {
        let now = 1_000_000;
        let (_, drift) = analyse(vec![row("a", "c10", 10.0, 100, now), row("b", "c50", 50.0, 900, now)], now);
        assert!(drift.unwrap().starts_with("replica a runs rollout percent 10"));
        // A replica unseen for a minute is listed, not live, and not drift.
        let (shown, drift) =
            analyse(vec![row("a", "c50", 50.0, 900, now), row("old", "c10", 10.0, 100, now - 60_000)], now);
        assert_eq!(drift, None);
        assert_eq!(shown[1]["live"], false);
        assert_eq!(shown.len(), 2);
    }

    #[test]
    fn the_same_rollout_under_another_config_is_still_drift() {
        let now = 1_000_000;
        let (_, drift) = analyse(
            vec![row("a", "x", 50.0, 1, now), row("b", "x", 50.0, 1, now), row("c", "y", 50.0, 2, now)],
            now,
        );
        assert_eq!(drift.as_deref(), Some("replica c runs configuration y while 2 other(s) run x"));
    }
}
