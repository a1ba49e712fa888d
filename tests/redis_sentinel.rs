//! Redis that fails over (#36 item 2), against real processes: a primary, two
//! replicas and three sentinels (`tests/common/sentinel.rs`), the binary with
//! `state = "redis"` found through the sentinels and `replica_acks = 1`, a host
//! receiving the forwarded webhooks, and a steady stream of signed webhooks
//! (each retried on 503 as Pusher does) and authorizations. The primary is
//! SIGKILLed mid-stream: no auth fails; webhooks get 503 only for a bounded
//! window (printed: the time to recover); every acknowledged webhook reaches
//! the host exactly once; `/status`'s fleet view is fresh again afterwards.
//! It also prints the median webhook latency with and without `replica_acks`,
//! measured in the same run against the same Redis.
mod common;

use common::{Service, TempDir, sentinel::SentinelCluster};
use pusher_dual_auth::pusher::hmac_sha256_hex;
use serde_json::{Value, json};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

const OLD_KEY: &str = "old-key";
const OLD_SECRET: &str = "old-secret";
/// The longest a failover may refuse webhooks: detection (1 s), election and
/// promotion, the other replica following the new primary, and our reconnect.
const RECOVER_WITHIN: Duration = Duration::from_secs(15);

fn config(host: &str, sentinels: &[String], acks: u32, prefix: &str, hook: &str) -> String {
    let sentinels = sentinels.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
admin_listen = "127.0.0.1:{{admin}}"
workers = 2
[session_check]
url = "{host}/check"
[apps.old]
app_id = "1111"
key = "{OLD_KEY}"
secret = "{OLD_SECRET}"
rest_url = "{host}"
[apps.new]
app_id = "2222"
key = "new-key"
secret = "new-secret"
rest_url = "{host}"
[webhooks]
forward_url = "{host}/{hook}"
key = "hook-key"
secret = "hook-secret"
state = "redis"
sentinels = [{sentinels}]
sentinel_master = "{master}"
redis_prefix = "{prefix}"
replica_acks = {acks}
replica_ack_timeout_ms = 500
"#,
        master = common::sentinel::MASTER,
    )
}

fn occupied(channel: &str) -> String {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    json!({"time_ms": now_ms, "events": [{"name": "channel_occupied", "channel": channel}]}).to_string()
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A signed webhook from the old app: its status (0: no answer) and how long it took.
    async fn webhook(&self, body: &str) -> (u16, Duration) {
        let started = Instant::now();
        let res = self
            .http
            .post(format!("{}/webhooks", self.base))
            .header("content-type", "application/json")
            .header("x-pusher-key", OLD_KEY)
            .header("x-pusher-signature", hmac_sha256_hex(OLD_SECRET.as_bytes(), body.as_bytes()))
            .body(body.to_owned())
            .send()
            .await;
        (res.map(|r| r.status().as_u16()).unwrap_or(0), started.elapsed())
    }

    async fn auth(&self) -> u16 {
        let res = self
            .http
            .post(format!("{}/auth/old", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("socket_id=1234.5678&channel_name=private-failover")
            .send()
            .await;
        res.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// As Pusher does: the same body again until it is acknowledged. Every answer, with when it came.
    async fn deliver(&self, body: &str, log: &Mutex<Vec<(Instant, u16)>>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, _) = self.webhook(body).await;
            log.lock().unwrap().push((Instant::now(), status));
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "a webhook not acknowledged within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Each `channel_occupied` the host received at `path`.
async fn forwarded(host: &MockServer, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for r in host.received_requests().await.unwrap().iter().filter(|r| r.url.path() == path) {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        for e in v["events"].as_array().unwrap() {
            out.push(e["channel"].as_str().unwrap().to_owned());
        }
    }
    out.sort();
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_load_refuses_webhooks_briefly_and_loses_or_repeats_none() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Two replicas: after the failover one is left to acknowledge (replica_acks = 1).
    let Some(mut cluster) = SentinelCluster::start(2) else { return };
    let host = MockServer::start().await;
    Mock::given(matchers::path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"user_id": "u1"})))
        .mount(&host)
        .await;
    Mock::given(matchers::path_regex("^/apps/[0-9]+/channels$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"channels": {}})))
        .mount(&host)
        .await;
    Mock::given(matchers::method("POST")).respond_with(ResponseTemplate::new(200)).mount(&host).await;
    let sentinels = cluster.sentinel_addrs();
    let (dir, plain_dir) = (TempDir::new("sentinel-acked"), TempDir::new("sentinel-plain"));
    let service = Service::start(&dir, &config(&host.uri(), &sentinels, 1, "acked", "hook"));
    let plain = Service::start(&plain_dir, &config(&host.uri(), &sentinels, 0, "plain", "plain"));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let client = Client { http: http.clone(), base: format!("http://127.0.0.1:{}", service.port) };
    let plain_client = Client { http: http.clone(), base: format!("http://127.0.0.1:{}", plain.port) };
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut acknowledged: Vec<String> = Vec::new();

    // The cost of replica_acks: one after the other, alternating, the same Redis.
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..150 {
        let (status, took) = client.webhook(&occupied(&format!("private-lat-{i}"))).await;
        assert_eq!(status, 200, "acked webhook {i}: {}", service.log_text());
        with.push(took);
        acknowledged.push(format!("private-lat-{i}"));
        let (status, took) = plain_client.webhook(&occupied(&format!("private-lat-{i}"))).await;
        assert_eq!(status, 200, "plain webhook {i}");
        without.push(took);
    }
    let (p50_with, p50_without) = (median(with), median(without));
    drop(plain);

    // The steady stream: two Pushers sending webhooks for new channels, one client authorizing.
    let stop = Arc::new(AtomicBool::new(false));
    let auths = Arc::new(Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for w in 0..2 {
        let (client, log, stop) = (client.clone(), log.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let channel = format!("private-fo-{w}-{i}");
                client.deliver(&occupied(&channel), &log).await;
                sent.push(channel);
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        }));
    }
    let authorizer = {
        let (client, auths, stop) = (client.clone(), auths.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let status = client.auth().await;
                auths.lock().unwrap().push((Instant::now(), status));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let old_primary = cluster.master_port().expect("a master");
    // Taken before the kill: answers refused while it is under way count after it.
    let killed = Instant::now();
    cluster.node(old_primary).kill();
    // Until the sentinels named another master and webhooks flowed for 2 s after the last refusal.
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let last_refusal = log.lock().unwrap().iter().filter(|(_, s)| *s != 200).map(|(t, _)| *t).max();
        let moved = cluster.master_port().is_some_and(|p| p != old_primary);
        if moved && last_refusal.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
        assert!(killed.elapsed() < RECOVER_WITHIN + Duration::from_secs(5), "no recovery");
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        acknowledged.extend(s.await.unwrap());
    }
    authorizer.await.unwrap();

    // Auth never failed.
    let auths = auths.lock().unwrap().clone();
    let failed: Vec<u16> = auths.iter().map(|(_, s)| *s).filter(|s| *s != 200).collect();
    assert!(failed.is_empty(), "auths failed during the failover: {failed:?}");
    // Webhooks: 200, or 503 within the window after the kill.
    let log = log.lock().unwrap().clone();
    let refused: Vec<(Duration, u16)> = log
        .iter()
        .filter(|(_, s)| *s != 200)
        .map(|(t, s)| (t.saturating_duration_since(killed), *s))
        .collect();
    assert!(refused.iter().all(|(_, s)| *s == 503), "only 503 while Redis fails over: {refused:?}");
    let last_refused = refused.iter().map(|(t, _)| *t).max().unwrap_or_default();
    let recovered = log
        .iter()
        .filter(|(t, s)| *s == 200 && t.saturating_duration_since(killed) > last_refused)
        .map(|(t, _)| t.saturating_duration_since(killed))
        .min()
        .unwrap_or_default();
    assert!(recovered < RECOVER_WITHIN, "webhooks refused until {recovered:?} after the kill");
    let early: Vec<(Duration, u16)> =
        log.iter().filter(|(t, s)| *s != 200 && *t < killed).map(|(t, s)| (killed - *t, *s)).collect();
    let errors =
        service.log_text().lines().filter(|l| l.contains("ERROR")).take(5).collect::<Vec<_>>().join("\n");
    assert!(early.is_empty(), "refused before the kill (how long before, status): {early:?}\n{errors}");

    // Each acknowledged webhook reached the host exactly once.
    acknowledged.sort();
    let deadline = Instant::now() + Duration::from_secs(20);
    while forwarded(&host, "/hook").await.len() < acknowledged.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // a late duplicate would show now
    let got = forwarded(&host, "/hook").await;
    let missing: Vec<&String> = acknowledged.iter().filter(|c| !got.contains(c)).collect();
    let mut repeated = got.clone();
    repeated.dedup();
    assert!(missing.is_empty(), "acknowledged, never forwarded: {missing:?}");
    assert_eq!(got.len(), repeated.len(), "forwarded more than once: {}", got.len() - repeated.len());
    assert_eq!(got, acknowledged);

    // The fleet view is fresh again.
    let fresh = Instant::now();
    loop {
        let s: Value = http
            .get(format!("http://127.0.0.1:{}/status", service.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["fleet"]["stale"] == false && s["fleet"]["unflushed_since_ms"].is_null() {
            break;
        }
        assert!(fresh.elapsed() < Duration::from_secs(10), "fleet view still stale: {}", s["fleet"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_refused = refused.iter().map(|(t, _)| *t).min().unwrap_or_default();
    eprintln!(
        "failover: primary SIGKILLed; {} webhooks answered 503 between {first_refused:?} and {last_refused:?} \
         after the kill, flowing again {recovered:?} after it (time to recover); {} auths, none failed; \
         {} webhooks acknowledged, each forwarded once; fleet view fresh {:?} after the check began. \
         Webhook p50: {p50_with:?} with replica_acks = 1, {p50_without:?} without.",
        refused.len(),
        auths.len(),
        acknowledged.len(),
        fresh.elapsed()
    );
    assert!(service.stop(), "stops cleanly on SIGTERM");
}
