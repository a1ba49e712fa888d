//! Failover against a real Pusher-protocol server: sockudo's two apps, each
//! behind its own proxy, which the tests cut hard, black-hole, flap and
//! restore; the service binary probes them and `/client-config` follows.
//!
//! Needs sockudo: `scripts/test` runs
//! `SOCKUDO_BIN=… cargo test --test failover -- --ignored`.

mod common;
use common::{Service, TempDir, proxy::Proxy, sockudo::SECRETS};
use serde_json::Value;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

fn config(old: u16, new: u16, failover: &str, redis: Option<u16>) -> String {
    let app = |name: &str, id: &str, key: &str, secret: &str, port: u16| {
        format!(
            "[apps.{name}]\napp_id = \"{id}\"\nkey = \"{key}\"\nsecret = \"{secret}\"\n\
             rest_url = \"http://127.0.0.1:{port}\"\n\
             client_options = {{ wsHost = \"127.0.0.1\", wsPort = {port}, forceTLS = false }}\n"
        )
    };
    let webhooks = redis.map_or(String::new(), |port| {
        format!(
            "[webhooks]\nforward_url = \"http://127.0.0.1:9/hook\"\nkey = \"k\"\nsecret = \"s\"\n\
             state = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}\"\n"
        )
    });
    format!(
        "[server]\nlisten = \"127.0.0.1:{{port}}\"\nadmin_listen = \"127.0.0.1:{{admin}}\"\n\
         [session_check]\nurl = \"http://127.0.0.1:9/check\"\n{webhooks}\
         [publish]\napp_id = \"dual\"\nkey = \"pub-key\"\nsecret = \"pub-secret\"\ntargets = [\"old\", \"new\"]\n\
         success = \"any\"\n\
         [rollout]\nfrom = \"old\"\nto = \"new\"\npercent = 0\n[failover]\nenabled = true\n{failover}\n{}{}",
        app("old", "1001", "old-key", SECRETS[0], old),
        app("new", "1002", "new-key", SECRETS[1], new),
    )
}

async fn get(port: u16, path: &str) -> Value {
    let url = format!("http://127.0.0.1:{port}{path}");
    match reqwest::get(&url).await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// The app `/client-config` names, and its `failover` object.
async fn assigned(s: &Service) -> (String, Value) {
    let c = get(s.port, "/client-config?uid=user-1").await;
    (c["app"].as_str().unwrap_or_default().to_owned(), c["failover"].clone())
}

/// Waits until `/client-config` names `app`; how long it took.
async fn until_assigned(s: &Service, app: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if assigned(s).await.0 == app {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not on {app} within {within:?}: {:#}",
            get(s.admin, "/status").await["failover"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until both apps were probed healthy (the first probes take a moment).
async fn until_healthy(s: &Service) {
    let started = Instant::now();
    loop {
        let f = get(s.admin, "/admin/failover").await;
        if f["probes"]["old"]["healthy"] == true && f["probes"]["new"]["healthy"] == true {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "apps not healthy: {f:#}\n{}", s.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes one event through the fan-out; the status and how long it took.
async fn publish(s: &Service) -> (u16, Duration) {
    let body = br#"{"name":"tick","channels":["ticks"],"data":"{}"}"#;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let path = "/apps/dual/events";
    let q = pusher_dual_auth::pusher::rest::signed_query(
        "pub-key",
        "pub-secret",
        "POST",
        path,
        Some(body),
        now,
        &[],
    );
    let started = Instant::now();
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}{path}?{q}", s.port))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), started.elapsed())
}

async fn admin_post(s: &Service, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/admin/failover", s.admin))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

struct World {
    _sockudo: common::sockudo::Sockudo,
    old: Arc<Proxy>,
    new: Arc<Proxy>,
}

async fn world() -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sockudo = common::sockudo::start();
    let (old, new) = (Proxy::start(sockudo.port).await, Proxy::start(sockudo.port).await);
    World { _sockudo: sockudo, old, new }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs sockudo: scripts/test sets SOCKUDO_BIN and runs it"]
async fn a_hard_cut_fails_clients_over_and_an_operator_sends_them_back() {
    let w = world().await;
    let dir = TempDir::new("failover-cut");
    let s =
        Service::start(&dir, &config(w.old.port, w.new.port, "probe_secs = 1\nfail_after_secs = 2", None));
    until_healthy(&s).await;
    let (app, failover) = assigned(&s).await;
    assert_eq!((app.as_str(), &failover), ("old", &Value::Null));
    let before = get(s.port, "/client-config?uid=user-1").await;
    assert!(
        before.as_object().unwrap().contains_key("failover"),
        "with [failover] the field is there (null)"
    );
    let version_before = before["version"].clone();

    w.old.cut();
    let took = until_assigned(&s, "new", Duration::from_secs(10)).await;
    println!("hard cut: /client-config on new after {took:?}");
    let c = get(s.port, "/client-config?uid=user-1").await;
    assert_eq!((c["failover"]["from"].as_str(), c["failover"]["to"].as_str()), (Some("old"), Some("new")));
    assert_eq!(c["failover"]["reason"], "unhealthy");
    assert_ne!(c["version"], version_before, "a failover is a new version: announcements move clients");
    assert_eq!(c["key"], "new-key");
    let status = get(s.admin, "/status").await;
    assert_eq!(status["failover"]["decision"]["from"], "old", "{status:#}");
    assert_eq!(status["failover"]["probes"]["old"]["healthy"], false);
    assert!(status["failover"]["redirected"].as_u64().unwrap() >= 1);
    assert_eq!(s.metric("pusher_failover_active{from=\"old\",to=\"new\"}"), 1.0);
    assert_eq!(s.metric("pusher_failover_app_healthy{app=\"old\"}"), 0.0);

    // Healthy again: return = "manual" keeps everyone on new.
    w.old.restore().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(get(s.admin, "/admin/failover").await["probes"]["old"]["healthy"], true);
    assert_eq!(assigned(&s).await.0, "new", "manual return: clients stay");

    // Only a non-browser JSON request is taken; nothing changes on a refusal.
    let json = ("content-type", "application/json");
    let back = r#"{"action": "return"}"#;
    assert_eq!(admin_post(&s, back, &[json, ("origin", "http://evil.example")]).await.0, 403);
    assert_eq!(admin_post(&s, back, &[("content-type", "text/plain")]).await.0, 415);
    let (code, body) = admin_post(&s, r#"{"action": "fail", "app": "other"}"#, &[json]).await;
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("unknown_app")));
    assert_eq!(admin_post(&s, r#"{"action": "fail"}"#, &[json]).await.0, 400);
    assert_eq!(assigned(&s).await.0, "new");
    let (code, body) = admin_post(&s, back, &[json]).await;
    assert_eq!((code, &body["decision"]), (200, &Value::Null), "{body:#}");
    assert_eq!(assigned(&s).await, ("old".to_owned(), Value::Null));
    assert_eq!(s.metric("pusher_failover_active{from=\"old\",to=\"new\"}"), 0.0);

    // An operator fails an app over by hand, healthy or not; "auto" would not undo it.
    let (code, body) = admin_post(&s, r#"{"action": "fail", "app": "old"}"#, &[json]).await;
    assert_eq!((code, body["decision"]["reason"].as_str()), (200, Some("operator")));
    assert_eq!(assigned(&s).await.0, "new");
    assert!(s.log_text().contains("failover: clients of the failed app are sent to the healthy one"));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs sockudo: scripts/test sets SOCKUDO_BIN and runs it"]
async fn a_black_hole_fails_over_and_auto_returns_once_healthy() {
    let w = world().await;
    let dir = TempDir::new("failover-hole");
    let settings = "probe_secs = 1\nfail_after_secs = 2\nreturn = \"auto\"\nreturn_after_secs = 3";
    let s = Service::start(&dir, &config(w.old.port, w.new.port, settings, None));
    until_healthy(&s).await;
    w.old.black_hole();
    let took = until_assigned(&s, "new", Duration::from_secs(12)).await;
    println!("black hole: /client-config on new after {took:?}");
    // The fan-out goes on publishing to the healthy app, and does not wait long on the failed one.
    let (code, took) = publish(&s).await;
    println!("publish while the old app is failed over (black hole): {code} in {took:?}");
    assert_eq!(code, 200);
    assert!(took < Duration::from_millis(1_900), "the failed app held the publish for {took:?}");
    // Answered once the new app took it; the old app's one try (at most 1 s) is counted after.
    let counted = Instant::now();
    while s.metric("pusher_publish_forwards_total{result=\"error\",target=\"old\"}") < 1.0 {
        assert!(counted.elapsed() < Duration::from_secs(3), "the failed app's try was never counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = get(s.admin, "/admin/failover").await["probes"]["old"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("timed out") || error.contains("did not") || error.contains("in time"), "{error}");
    w.old.restore().await;
    let restored = Instant::now();
    until_assigned(&s, "old", Duration::from_secs(15)).await;
    let back = restored.elapsed();
    println!("auto return: back on old {back:?} after the app came back");
    assert!(back >= Duration::from_secs(3), "return_after_secs is a dwell: back after {back:?}");
    // The other app is never failed over to a dead one.
    w.new.cut();
    w.old.cut();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(assigned(&s).await.0, "old", "both dead: nobody is moved");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs sockudo: scripts/test sets SOCKUDO_BIN and runs it"]
async fn a_flapping_app_is_not_failed_over() {
    let w = world().await;
    let dir = TempDir::new("failover-flap");
    let s =
        Service::start(&dir, &config(w.old.port, w.new.port, "probe_secs = 1\nfail_after_secs = 4", None));
    until_healthy(&s).await;
    let mut seen_unhealthy = false;
    // Down 1.5 s, up 2 s: every up phase holds a whole probe (one a second, each at
    // most 2 s) however loaded the machine, and a good probe starts the count again.
    for _ in 0..5 {
        w.old.cut();
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(assigned(&s).await.0, "old", "moved while flapping");
            seen_unhealthy |= get(s.admin, "/admin/failover").await["probes"]["old"]["healthy"] == false;
        }
        w.old.restore().await;
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(assigned(&s).await.0, "old", "moved while flapping");
    }
    assert!(seen_unhealthy, "the probes never saw the cuts: the test proved nothing");
    assert_eq!(s.metric("pusher_failover_transitions_total{app=\"old\",state=\"failed\"}"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs sockudo: scripts/test sets SOCKUDO_BIN and runs it"]
async fn two_replicas_on_redis_agree() {
    let Some(redis) = common::redis_server::RedisServer::start() else { return };
    let w = world().await;
    let (d1, d2) = (TempDir::new("failover-r1"), TempDir::new("failover-r2"));
    let cfg = config(w.old.port, w.new.port, "probe_secs = 1\nfail_after_secs = 2", Some(redis.port));
    let (a, b) = (Service::start(&d1, &cfg), Service::start(&d2, &cfg));
    until_healthy(&a).await;
    until_healthy(&b).await;
    w.old.cut();
    until_assigned(&a, "new", Duration::from_secs(10)).await;
    // The other replica follows within its next read of the decision (500 ms).
    let took = until_assigned(&b, "new", Duration::from_secs(2)).await;
    println!("two replicas: the second agreed {took:?} after the first");
    let (fa, fb) = (
        get(a.admin, "/status").await["failover"].clone(),
        get(b.admin, "/status").await["failover"].clone(),
    );
    assert_eq!(fa["decision"], fb["decision"], "one decision for the fleet");
    assert_eq!(fa["fleet"]["views"].as_array().map(Vec::len), Some(2), "{fa:#}");
    // An operator's return on one replica is the fleet's.
    w.old.restore().await;
    let (code, _) = admin_post(&a, r#"{"action": "return"}"#, &[("content-type", "application/json")]).await;
    assert_eq!(code, 200);
    until_assigned(&b, "old", Duration::from_secs(2)).await;
}
