//! Prometheus metrics. Labels are low-cardinality by construction: app names
//! come from the config (anything else is "unknown"), kinds and outcomes from
//! fixed lists. Never a user, channel, socket id or cookie.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The `app` label when no configured app applies (unknown name, or refused before the app mattered).
pub const NO_APP: &str = "unknown";

/// Declares every metric once: its field, type and family (name, help,
/// labels). The struct, its construction and the registration follow.
macro_rules! metrics {
    ($($field:ident: $ty:ty = $make:expr),+ $(,)?) => {
        pub struct Metrics {
            registry: Registry,
            $($field: $ty,)+
        }

        impl Metrics {
            pub fn new() -> Self {
                let registry = Registry::new();
                $(
                    let $field: $ty = $make;
                    registry.register(Box::new($field.clone())).expect("metric names are unique");
                )+
                register_build_info(&registry);
                Self { registry, $($field,)+ }
            }
        }
    };
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter family")
}

fn int_gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("a valid gauge")
}

/// The session check's latency buckets: 1 ms to 5 s.
const CHECK_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

fn register_build_info(registry: &Registry) {
    let build_info =
        IntGaugeVec::new(Opts::new("pusher_auth_build_info", "Build information; always 1"), &["version"])
            .expect("a valid gauge family");
    build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(build_info)).expect("metric names are unique");
}

metrics! {
    requests: IntCounterVec = counter(
        "pusher_auth_requests_total",
        "Auth decisions by app, channel kind and outcome",
        &["app", "kind", "outcome"],
    ),
    check_duration: HistogramVec = HistogramVec::new(
        HistogramOpts::new("pusher_auth_session_check_duration_seconds", "Session-check latency by app and result")
            .buckets(CHECK_BUCKETS.to_vec()),
        &["app", "result"],
    )
    .expect("a valid histogram family"),
    reload_success: IntGauge = int_gauge(
        "pusher_auth_config_last_reload_successful",
        "1 if the last config (re)load succeeded, 0 if it was rejected and the previous config kept",
    ),
    reload_timestamp: Gauge = Gauge::new(
        "pusher_auth_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful config (re)load",
    )
    .expect("a valid gauge"),
    reloads: IntCounterVec = counter("pusher_auth_config_reloads_total", "Config reload attempts by result", &["result"]),
    shared: IntCounterVec = counter(
        "pusher_auth_session_checks_saved_total",
        "Session checks answered without a host call, by app and how (coalesced, cache)",
        &["app", "how"],
    ),
    publish: IntCounterVec = counter(
        "pusher_publish_forwards_total",
        "Publish requests forwarded, by target app and result",
        &["target", "result"],
    ),
    webhooks_in: IntCounterVec = counter(
        "pusher_webhook_events_total",
        "Webhook events received per app, and forwarded after merging",
        &["app", "stage"],
    ),
    webhook_deliveries: IntCounterVec = counter(
        "pusher_webhook_deliveries_total",
        "Merged webhook deliveries to the host by result",
        &["result"],
    ),
    webhook_requests: IntCounterVec = counter(
        "pusher_webhook_requests_total",
        "Incoming webhook requests by result (accepted, duplicate, stale, unknown_key, bad_signature, …)",
        &["result"],
    ),
    checks_in_flight: IntGauge = int_gauge(
        "pusher_auth_session_checks_in_flight",
        "Distinct session checks in flight (what identical concurrent checks coalesce onto)",
    ),
    rollout_announcements: IntCounterVec = counter(
        "pusher_rollout_announcements_total",
        "rollout-changed events sent to an app's REST API, by app and result (sent, failed)",
        &["app", "result"],
    ),
    presence_bridge: IntCounterVec = counter(
        "pusher_presence_bridge_events_total",
        "presence changes told to another app's members, by target app and result (sent, failed, dropped)",
        &["app", "result"],
    ),
    recoveries: IntCounterVec = counter(
        "pusher_recovery_channels_total",
        "Channels asked for in recovery requests, by result (recovered, evicted, unknown_position, buffer_outage: \
         a gap told to the client; refused, unavailable)",
        &["result"],
    ),
    recovered: IntCounterVec = counter(
        "pusher_recovery_events_total",
        "Events kept for recovery (kept, not_kept: the buffer could not take them; withdrawn: kept, then taken back as no app \
         accepted them) and handed back (recovered)",
        &["stage"],
    ),
    // No labels, and no series until the first flush: absent without Redis, not a false 0.
    redis_reachable: IntGaugeVec = IntGaugeVec::new(
        Opts::new(
            "pusher_redis_reachable",
            "With [webhooks] state = \"redis\": 1 while this replica's fleet flush (every second) reaches Redis, 0 while not",
        ),
        &[],
    )
    .expect("a valid gauge family"),
    failover_healthy: IntGaugeVec = IntGaugeVec::new(
        Opts::new("pusher_failover_app_healthy", "1 while this replica's probes find the app healthy, 0 while not"),
        &["app"],
    )
    .expect("a valid gauge family"),
    failover_active: IntGaugeVec = IntGaugeVec::new(
        Opts::new("pusher_failover_active", "1 while the fleet has failed clients over from one app to the other"),
        &["from", "to"],
    )
    .expect("a valid gauge family"),
    failover_transitions: IntCounterVec = counter(
        "pusher_failover_transitions_total",
        "Failover decisions this replica saw take effect, by app and state (failed, returned)",
        &["app", "state"],
    ),
    failover_redirected: IntCounterVec = counter(
        "pusher_failover_redirected_total",
        "/client-config answers sent to the healthy app instead of the one the rollout assigns",
        &["from", "to"],
    ),
    failover_probes: HistogramVec = HistogramVec::new(
        HistogramOpts::new("pusher_failover_probe_seconds", "Failover probes (WebSocket ping and REST call) by app and result")
            .buckets(CHECK_BUCKETS.to_vec()),
        &["app", "result"],
    )
    .expect("a valid histogram family"),
    presence_dropped: IntCounterVec = counter(
        "pusher_presence_bridge_dropped_total",
        "What the presence bridge left out to stay within [presence]'s bounds: changes not queued \
         (queue_full), infos forgotten (channel_cap, user_cap, total_cap), member lists not in an \
         answer (answer_size, rate_limited)",
        &["what", "reason"],
    ),
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn presence_bridge(&self, app: &str, result: &str) {
        self.presence_bridge_n(app, result, 1);
    }

    pub fn presence_bridge_n(&self, app: &str, result: &str, n: u64) {
        self.presence_bridge.with_label_values(&[app, result]).inc_by(n);
    }

    /// `what` (change, info, list) left out for `reason`; labels from fixed lists only.
    pub fn presence_dropped(&self, what: &str, reason: &str, n: u64) {
        if n > 0 {
            self.presence_dropped.with_label_values(&[what, reason]).inc_by(n);
        }
    }

    /// One channel of a recovery request, and the events it handed back.
    pub fn recovery(&self, result: &str, events: u64) {
        self.recoveries.with_label_values(&[result]).inc();
        if events > 0 {
            self.recovered.with_label_values(&["recovered"]).inc_by(events);
        }
    }

    /// Events the fan-out kept for recovery (`kept`), or could not (`not_kept`).
    pub fn recovery_kept(&self, kept: bool, n: u64) {
        self.recovered.with_label_values(&[if kept { "kept" } else { "not_kept" }]).inc_by(n);
    }

    /// Events kept for recovery and taken back: no app accepted them.
    pub fn recovery_withdrawn(&self, n: u64) {
        self.recovered.with_label_values(&["withdrawn"]).inc_by(n);
    }

    pub fn redis_reachable(&self, ok: bool) {
        self.redis_reachable.with_label_values::<&str>(&[]).set(i64::from(ok));
    }

    /// A probe of `app` and how long it took.
    pub fn failover_probe(&self, app: &str, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "failed" };
        self.failover_probes.with_label_values(&[app, result]).observe(seconds);
        self.failover_healthy.with_label_values(&[app]).set(i64::from(ok));
    }

    /// A decision taking effect here: `failed` (from → to) or `returned`.
    pub fn failover_transition(&self, from: &str, to: &str, failed: bool) {
        let state = if failed { "failed" } else { "returned" };
        self.failover_transitions.with_label_values(&[from, state]).inc();
        self.failover_active.with_label_values(&[from, to]).set(i64::from(failed));
    }

    pub fn failover_redirected(&self, from: &str, to: &str) {
        self.failover_redirected.with_label_values(&[from, to]).inc();
    }

    /// This replica's redirected answers, per (from, to).
    pub fn failover_redirected_counts(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for family in prometheus::core::Collector::collect(&self.failover_redirected) {
            for m in family.get_metric() {
                let label = |n: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                out.push((label("from"), label("to"), m.get_counter().get_value() as u64));
            }
        }
        out
    }

    pub fn rollout_announcement(&self, app: &str, result: &str) {
        self.rollout_announcements.with_label_values(&[app, result]).inc();
    }

    pub fn webhook_request(&self, result: &str) {
        self.webhook_requests.with_label_values(&[result]).inc();
    }

    /// Set just before rendering, from the live session-check client.
    pub fn set_checks_in_flight(&self, n: usize) {
        self.checks_in_flight.set(n as i64);
    }

    pub fn auth(&self, app: &str, kind: &str, outcome: &str) {
        self.requests.with_label_values(&[app, kind, outcome]).inc();
    }

    pub fn session_check(&self, app: &str, result: &str, seconds: f64) {
        self.check_duration.with_label_values(&[app, result]).observe(seconds);
    }

    pub fn webhooks(&self, app: &str, received: u64, forwarded: u64) {
        self.webhooks_in.with_label_values(&[app, "received"]).inc_by(received);
        self.webhooks_in.with_label_values(&[app, "forwarded"]).inc_by(forwarded);
    }

    pub fn webhook_delivery(&self, result: &str) {
        self.webhook_deliveries.with_label_values(&[result]).inc();
    }

    /// Current value of an auth counter family summed per app (for /status).
    pub fn signed_per_app(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        // Only this family: gathering the whole registry per status call is waste.
        for family in prometheus::core::Collector::collect(&self.requests) {
            for m in family.get_metric() {
                let label =
                    |n: &str| m.get_label().iter().find(|l| l.name() == n).map(|l| l.value().to_owned());
                if label("outcome").as_deref() == Some("signed") {
                    *out.entry(label("app").unwrap_or_default()).or_default() +=
                        m.get_counter().get_value() as u64;
                }
            }
        }
        out
    }

    pub fn publish(&self, target: &str, result: &str) {
        self.publish.with_label_values(&[target, result]).inc();
    }

    pub fn shared_check(&self, app: &str, how: &str) {
        self.shared.with_label_values(&[app, how]).inc();
    }

    pub fn reload(&self, ok: bool) {
        self.reloads.with_label_values(&[if ok { "success" } else { "failure" }]).inc();
        self.reload_success.set(ok as i64);
        if ok {
            self.reload_timestamp.set(crate::outbound::now_ms() as f64 / 1000.0);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding");
        String::from_utf8(out).expect("metrics are UTF-8")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_the_documented_families() {
        let m = super::Metrics::new();
        m.auth("new", "private", "signed");
        m.session_check("new", "2xx", 0.003);
        m.reload(true);
        let text = m.render();
        for family in [
            "pusher_auth_requests_total{app=\"new\",kind=\"private\",outcome=\"signed\"} 1",
            "pusher_auth_session_check_duration_seconds_bucket{app=\"new\",result=\"2xx\",le=\"0.005\"} 1",
            "pusher_auth_config_last_reload_successful 1",
            "pusher_auth_build_info{version=",
        ] {
            assert!(text.contains(family), "{family} missing in:\n{text}");
        }
    }
}
