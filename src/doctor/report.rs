//! What `doctor` found, per app and across apps; printed for people or as JSON.
//! Pure: no I/O, so the wording and the exit decision are tested directly.

use super::verdict::Failure;
use serde::Serialize;
use std::{collections::BTreeMap, fmt::Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// A fact about the app, not a fault (e.g. client events are off).
    Info,
    /// Not applicable (e.g. no master key configured).
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

impl Check {
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, status: Status::Pass, detail: detail.into() }
    }
    pub fn fail(name: &'static str, failure: &Failure) -> Self {
        Self { name, status: Status::Fail, detail: failure.plain() }
    }
    pub fn info(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, status: Status::Info, detail: detail.into() }
    }
    pub fn skip(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, status: Status::Skip, detail: detail.into() }
    }
}

/// What the server let this app do (None: could not be found out).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Features {
    pub client_events: Option<bool>,
    pub user_authentication: Option<bool>,
    /// SHA-256 of the master key: compared, never shown.
    #[serde(skip)]
    pub master_key_digest: Option<[u8; 32]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppReport {
    pub app: String,
    pub websocket: String,
    pub rest: String,
    pub checks: Vec<Check>,
    pub features: Features,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Agreement {
    Same,
    Differs,
    /// Not known for every app (its own checks say why).
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub setting: &'static str,
    pub agreement: Agreement,
    /// Whether a difference breaks the migration (master key) or is a warning
    /// about a setting the apps' owner should align (client events, sign-in).
    pub breaks_migration: bool,
    pub values: BTreeMap<String, String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub problems: usize,
    pub warnings: usize,
    /// This service's own setup: the session check, secrets swapped between apps.
    pub service: Vec<Check>,
    pub apps: Vec<AppReport>,
    pub compared: Vec<Comparison>,
}

impl Report {
    pub fn new(service: Vec<Check>, apps: Vec<AppReport>) -> Self {
        let compared = if apps.len() > 1 { compare(&apps) } else { Vec::new() };
        let mut report = Self { ok: false, problems: 0, warnings: 0, service, apps, compared };
        report.count();
        report
    }

    fn count(&mut self) {
        let differs = |breaks: bool| {
            self.compared
                .iter()
                .filter(|c| c.agreement == Agreement::Differs && c.breaks_migration == breaks)
                .count()
        };
        self.problems = self
            .service
            .iter()
            .chain(self.apps.iter().flat_map(|a| &a.checks))
            .filter(|c| c.status == Status::Fail)
            .count()
            + differs(true);
        self.warnings = differs(false);
        self.ok = self.problems == 0;
    }

    /// With `[failover]`: ready only if a client sent from either app to the
    /// other behaves the same there. Every check of both apps passed (the
    /// control channel's among them), and every compared setting is the same:
    /// a difference that is a warning for a planned move (client events, user
    /// sign-in) fails here, as nobody chooses when a failover happens.
    pub fn with_failover_readiness(mut self) -> Self {
        let mut not = Vec::new();
        for app in &self.apps {
            let failed: Vec<&str> =
                app.checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.name).collect();
            if !failed.is_empty() {
                not.push(format!("{}: {} failed", app.app, failed.join(", ")));
            }
        }
        for c in self.compared.iter().filter(|c| c.agreement != Agreement::Same) {
            let how =
                if c.agreement == Agreement::Differs { "differs" } else { "is not known for every app" };
            not.push(format!("{} {how}", c.setting));
        }
        self.service.push(if not.is_empty() {
            Check::pass(
                "failover",
                "ready: both apps healthy, the same settings, the control channel on both",
            )
        } else {
            Check::fail("failover", &Failure::Wrong(format!("not ready: {}", not.join("; "))))
        });
        self.count();
        self
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        if !self.service.is_empty() {
            let _ = writeln!(out, "this service:");
            for c in &self.service {
                let _ = writeln!(out, "  {:<5} {:<16} {}", label(c.status), c.name, c.detail);
            }
            out.push('\n');
        }
        for app in &self.apps {
            let _ = writeln!(out, "{}: WebSocket {} · REST {}", app.app, app.websocket, app.rest);
            for c in &app.checks {
                let _ = writeln!(out, "  {:<5} {:<16} {}", label(c.status), c.name, c.detail);
            }
            out.push('\n');
        }
        if !self.compared.is_empty() {
            let names: Vec<&str> = self.apps.iter().map(|a| a.app.as_str()).collect();
            let _ = writeln!(out, "compared: {}", names.join(", "));
            for c in &self.compared {
                let status = match c.agreement {
                    Agreement::Same => "PASS",
                    Agreement::Differs if c.breaks_migration => "FAIL",
                    Agreement::Differs => "WARN",
                    Agreement::Unknown => "?",
                };
                let _ = writeln!(out, "  {status:<5} {:<16} {}", c.setting, c.detail);
            }
            out.push('\n');
        }
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let _ = match (self.problems, self.warnings) {
            (0, 0) => writeln!(out, "all checks passed"),
            (0, w) => writeln!(out, "all checks passed, {}", plural(w, "warning")),
            (p, w) => writeln!(out, "{}, {}", plural(p, "problem"), plural(w, "warning")),
        };
        out
    }
}

fn label(status: Status) -> &'static str {
    match status {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Info => "INFO",
        Status::Skip => "SKIP",
    }
}

/// Settings that must match for a client to behave the same after it moves.
fn compare(apps: &[AppReport]) -> Vec<Comparison> {
    let flag = |get: fn(&Features) -> Option<bool>, yes: &str, no: &str| {
        apps.iter()
            .map(|a| {
                let v = match get(&a.features) {
                    Some(true) => yes,
                    Some(false) => no,
                    None => "unknown",
                };
                (a.app.clone(), v.to_owned())
            })
            .collect::<BTreeMap<_, _>>()
    };
    let mut out = Vec::new();

    let values = flag(|f| f.client_events, "allowed", "refused");
    out.push(Comparison {
        setting: "client events",
        agreement: agreement(apps, &values),
        breaks_migration: false,
        detail: summary(
            apps,
            &values,
            "clients that send client events (client-*) stop reaching each other once moved",
        ),
        values,
    });

    let values = flag(|f| f.user_authentication, "accepted", "refused");
    out.push(Comparison {
        setting: "user sign-in",
        agreement: agreement(apps, &values),
        breaks_migration: false,
        detail: summary(apps, &values, "pusher.signin() fails for clients on the app that refuses it"),
        values,
    });

    // Master keys: numbered in app order by distinct value; never shown.
    let mut seen: Vec<[u8; 32]> = Vec::new();
    let values: BTreeMap<String, String> = apps
        .iter()
        .map(|a| {
            let v = match a.features.master_key_digest {
                None => "none".to_owned(),
                Some(d) => {
                    let n = seen.iter().position(|s| *s == d).unwrap_or_else(|| {
                        seen.push(d);
                        seen.len() - 1
                    });
                    format!("key {}", n + 1)
                }
            };
            (a.app.clone(), v)
        })
        .collect();
    out.push(Comparison {
        setting: "master key",
        agreement: agreement(apps, &values),
        breaks_migration: true,
        detail: summary(
            apps,
            &values,
            "an event your backend encrypts once opens on one app only (the publish fan-out needs the same \
             encryption_master_key on every app)",
        ),
        values,
    });
    out
}

fn agreement(apps: &[AppReport], values: &BTreeMap<String, String>) -> Agreement {
    if values.values().any(|v| v == "unknown") {
        Agreement::Unknown
    } else if apps.iter().all(|a| values[&a.app] == values[&apps[0].app]) {
        Agreement::Same
    } else {
        Agreement::Differs
    }
}

fn summary(apps: &[AppReport], values: &BTreeMap<String, String>, why: &str) -> String {
    let each: Vec<String> = apps.iter().map(|a| format!("{} on {}", values[&a.app], a.app)).collect();
    match agreement(apps, values) {
        Agreement::Differs => format!("differs: {}: {why}", each.join(", ")),
        _ => each.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, client_events: Option<bool>, key: Option<u8>) -> AppReport {
        AppReport {
            app: name.into(),
            websocket: "ws://127.0.0.1:1/app/k".into(),
            rest: "http://127.0.0.1:1/".into(),
            checks: vec![Check::pass("connect", "socket 1.1")],
            features: Features {
                client_events,
                user_authentication: Some(true),
                master_key_digest: key.map(|k| [k; 32]),
            },
        }
    }

    #[test]
    fn failover_is_ready_only_with_every_check_passed_and_every_setting_the_same() {
        let same = || vec![app("old", Some(true), Some(1)), app("new", Some(true), Some(1))];
        let r = Report::new(vec![], same()).with_failover_readiness();
        assert!(r.ok, "{}", r.text());
        assert!(r.text().contains("PASS  failover         ready"), "{}", r.text());
        let mut broken = same();
        broken[1].checks.push(Check::fail("control channel", &Failure::Timeout("an event".into())));
        let r = Report::new(vec![], broken).with_failover_readiness();
        assert_eq!((r.ok, r.problems), (false, 2), "the app's check and readiness: {}", r.text());
        assert!(r.text().contains("not ready: new: control channel failed"), "{}", r.text());
        let differ = vec![app("old", Some(true), Some(1)), app("new", Some(false), Some(1))];
        let r = Report::new(vec![], differ).with_failover_readiness();
        assert!(!r.ok && r.text().contains("not ready: client events differs"), "{}", r.text());
    }

    #[test]
    fn matching_apps_pass_and_say_so() {
        let r = Report::new(vec![], vec![app("old", Some(true), Some(1)), app("new", Some(true), Some(1))]);
        assert!(r.ok, "{}", r.text());
        assert!(r.text().ends_with("all checks passed\n"));
        assert!(r.text().contains("PASS  master key       key 1 on old, key 1 on new"), "{}", r.text());
    }

    #[test]
    fn a_client_events_difference_is_a_warning_named_per_app() {
        let r = Report::new(vec![], vec![app("old", Some(true), None), app("new", Some(false), None)]);
        assert!(r.ok);
        assert_eq!((r.problems, r.warnings), (0, 1));
        let text = r.text();
        assert!(
            text.contains("WARN  client events    differs: allowed on old, refused on new: clients"),
            "{text}"
        );
        assert!(text.ends_with("all checks passed, 1 warning\n"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["compared"][0]["agreement"], "differs");
        assert_eq!(json["compared"][0]["values"]["new"], "refused");
    }

    #[test]
    fn master_keys_are_compared_but_never_shown() {
        let r = Report::new(vec![], vec![app("old", Some(true), Some(1)), app("new", Some(true), Some(2))]);
        assert!(!r.ok);
        assert!(r.text().contains("FAIL  master key"), "{}", r.text());
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""old":"key 1""#) && json.contains(r#""new":"key 2""#), "{json}");
        assert!(!json.contains("master_key_digest"));
        let r = Report::new(vec![], vec![app("old", Some(true), Some(1)), app("new", Some(true), None)]);
        assert!(r.text().contains("differs: key 1 on old, none on new"));
    }

    #[test]
    fn a_failed_check_fails_the_report_and_unknowns_are_not_counted_twice() {
        let mut broken = app("new", None, None);
        broken.checks.push(Check::fail("connect", &Failure::Closed { code: 4001, reason: String::new() }));
        let r = Report::new(vec![], vec![app("old", Some(true), None), broken]);
        assert_eq!(r.problems, 1, "{}", r.text());
        assert!(r.text().contains("?     client events    allowed on old, unknown on new"), "{}", r.text());
    }
}
