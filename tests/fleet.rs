//! The fleet view, against the real binary: replicas sharing a real
//! redis-server report one truth on `/status` (counts, share, client builds,
//! history, drain clock), keep the day's counts through a rolling restart
//! (SIGTERM flushes; SIGKILL loses at most the last second), name a replica
//! left on another rollout step, keep real builds named through a flood of
//! made-up ones, and while Redis is down keep signing and say the view is stale.
mod common;

use common::{Edit, Service, TempDir, redis_server::RedisServer};
use serde_json::Value;
use std::time::{Duration, Instant};

const ANDROID: &str = "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UQ1A)";
const CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn config(host: &str, redis_port: u16, percent: u32) -> String {
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
key = "old-key"
secret = "old-secret"
rest_url = "{host}"
[apps.new]
app_id = "2222"
key = "new-key"
secret = "new-secret"
rest_url = "{host}"
[webhooks]
forward_url = "{host}/hook"
key = "hook-key"
secret = "hook-secret"
state = "redis"
redis_url = "redis://127.0.0.1:{redis_port}/0"
[status]
old_app = "old"
sample_secs = 1
reconcile_secs = 2
drain_window_secs = 3
[rollout]
from = "old"
to = "new"
percent = {percent}
"#
    )
}

async fn auth(http: &reqwest::Client, service: &Service, app: &str, user_agent: &str) {
    let res = http
        .post(format!("http://127.0.0.1:{}/auth/{app}", service.port))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", user_agent)
        .body("socket_id=1234.5678&channel_name=private-fleet")
        .send()
        .await
        .expect("an auth answer");
    assert_eq!(res.status(), 200, "auth signs");
}

async fn status(http: &reqwest::Client, service: &Service) -> Value {
    http.get(format!("http://127.0.0.1:{}/status", service.admin)).send().await.unwrap().json().await.unwrap()
}

/// What must be the same on every replica: all but this replica's own fields.
fn shared(mut s: Value) -> Value {
    for field in ["generated_ms", "rollout"] {
        s.as_object_mut().unwrap().remove(field);
    }
    let fleet = s["fleet"].as_object_mut().unwrap();
    for field in ["replica", "as_of_ms", "replicas"] {
        fleet.remove(field);
    }
    // The drain clock's reason counts seconds from each replica's now.
    s["drain"].as_object_mut().unwrap().remove("reason");
    s
}

fn signed(s: &Value, app: &str) -> u64 {
    s["apps"][app]["auth_signed_total"].as_u64().unwrap()
}

/// Polls until every service's /status satisfies `ok` and (shared parts) agree; how long it took.
async fn until_agreed(
    http: &reqwest::Client,
    services: &[&Service],
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> (Duration, Vec<Value>) {
    let started = Instant::now();
    loop {
        let mut all = Vec::new();
        for s in services {
            all.push(status(http, s).await);
        }
        let same = all.windows(2).all(|w| shared(w[0].clone()) == shared(w[1].clone()));
        if same && all.iter().all(&ok) {
            return (started.elapsed(), all);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: replicas did not agree within 10 s:\n{}",
            all.iter()
                .map(|s| serde_json::to_string(&shared(s.clone())).unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_report_one_fleet_through_restarts_and_name_a_replica_left_behind() {
    let Some(redis) = RedisServer::start() else { return };
    let host = common::host::start("/check", "/hook").await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let (dir_a, dir_b, dir_c) = (TempDir::new("fleet-a"), TempDir::new("fleet-b"), TempDir::new("fleet-c"));
    let mut a = Service::start(&dir_a, &config(&host.uri(), redis.port, 10));
    let mut b = Service::start(&dir_b, &config(&host.uri(), redis.port, 10));

    // The operator's try: 6 auths on A (old app, Android), 4 on B (new app, Chrome).
    for _ in 0..6 {
        auth(&http, &a, "old", ANDROID).await;
    }
    for _ in 0..4 {
        auth(&http, &b, "new", CHROME).await;
    }
    let (took, views) = until_agreed(&http, &[&a, &b], "first counts", |s| {
        signed(s, "old") == 6 && signed(s, "new") == 4 && s["clients"].as_array().unwrap().len() == 2
    })
    .await;
    eprintln!("two replicas agree on 6 + 4 auths {took:?} after the last one");
    let s = &views[0];
    assert_eq!(s["apps"]["old"]["share"], 0.6);
    assert_eq!(s["clients"][0]["group"], "Android 14 (Dalvik)", "the old app's build first, on both");
    assert_eq!(s["clients"][0]["apps"]["old"]["last_day"], 6);
    assert_eq!(s["fleet"]["shared"], true);
    assert_eq!(s["fleet"]["stale"], false);
    let live =
        |s: &Value| s["fleet"]["replicas"].as_array().unwrap().iter().filter(|r| r["live"] == true).count();
    assert_eq!(live(s), 2, "both replicas listed: {}", s["fleet"]);
    assert_eq!(s["fleet"]["drift"], Value::Null);
    // Both see the same drain clock and history (compared whole by until_agreed).
    assert!(!s["history"].as_array().unwrap().is_empty());

    // A rolling restart of A: 2 more old-app auths, SIGTERM at once (the last
    // flush carries them), started again. The day's counts stay.
    for _ in 0..2 {
        auth(&http, &a, "old", ANDROID).await;
    }
    assert!(a.stop(), "A stops cleanly on SIGTERM");
    a = Service::start(&dir_a, &config(&host.uri(), redis.port, 10));
    let (took, _) = until_agreed(&http, &[&a, &b], "after A's SIGTERM restart", |s| {
        signed(s, "old") == 8 && signed(s, "new") == 4
    })
    .await;
    eprintln!("after a SIGTERM restart: 8 + 4 kept, agreed after {took:?}");

    // SIGKILL of B: what it signed more than a flush interval before is kept.
    for _ in 0..3 {
        auth(&http, &b, "new", CHROME).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let _ = b.child.kill();
    let _ = b.child.wait();
    b = Service::start(&dir_b, &config(&host.uri(), redis.port, 10));
    until_agreed(&http, &[&a, &b], "after B's SIGKILL", |s| signed(s, "new") == 7).await;

    // A rollout step: A and B reload to 50 %, C (started on 10) misses it.
    let c = Service::start(&dir_c, &config(&host.uri(), redis.port, 10));
    for (dir, svc) in [(&dir_a, &a), (&dir_b, &b)] {
        let text = config(&host.uri(), redis.port, 50)
            .edit("{port}", &svc.port.to_string())
            .edit("{admin}", &svc.admin.to_string());
        std::fs::write(dir.0.join("config.toml"), text).unwrap();
    }
    let c_id = status(&http, &c).await["fleet"]["replica"].as_str().unwrap().to_owned();
    let (took, views) = until_agreed(&http, &[&a, &b, &c], "drift", |s| {
        // Once the killed B's last row is 5 s old, only C is left behind.
        s["fleet"]["drift"]
            .as_str()
            .is_some_and(|d| d.starts_with(&format!("replica {c_id} runs rollout percent 10")))
            && live(s) == 3
    })
    .await;
    let drift = views[0]["fleet"]["drift"].as_str().unwrap();
    assert!(drift.contains("while 2 other(s) run rollout percent 50"), "{drift}");
    eprintln!("drift named on every replica {took:?} after the reload: {drift}");
    let rows = views[1]["fleet"]["replicas"].as_array().unwrap().clone();
    assert!(
        rows.iter()
            .any(|r| r["id"] == c_id.as_str() && r["drift"] == true && r["rollout"]["percent"] == 10.0)
    );
    // The stopped A left at once (its last flush says so), the killed B once unseen for 5 s.
    let gone: Vec<&Value> = rows.iter().filter(|r| r["live"] == false).collect();
    assert_eq!(gone.len(), 2, "{rows:?}");
    assert_eq!(gone.iter().filter(|r| r["stopped_ms"].is_u64()).count(), 1, "A stopped, B killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_builds_do_not_push_real_ones_out_of_the_fleet_table() {
    let Some(redis) = RedisServer::start() else { return };
    let host = common::host::start("/check", "/hook").await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let (dir_a, dir_b) = (TempDir::new("fleet-flood-a"), TempDir::new("fleet-flood-b"));
    let a = Service::start(&dir_a, &config(&host.uri(), redis.port, 10));
    let b = Service::start(&dir_b, &config(&host.uri(), redis.port, 10));
    // 40 real builds, 3 auths each, spread over both replicas.
    for i in 0..40 {
        for k in 0..3 {
            let svc = if k % 2 == 0 { &a } else { &b };
            auth(&http, svc, "old", &format!("Shop{i}/2.{i} CFNetwork/1410.0.3 Darwin/22.6.0")).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await; // flushed
    // A signed-in user sends 500 made-up User-Agents, once each, to both.
    for i in 0..500 {
        let svc = if i % 2 == 0 { &a } else { &b };
        auth(&http, svc, "old", &format!("Fake{i}/1.0 CFNetwork/1 Darwin/1")).await;
    }
    let (_, views) = until_agreed(&http, &[&a, &b], "flood", |s| {
        s["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["apps"]["old"]["last_day"].as_u64().unwrap())
            .sum::<u64>()
            == 620
    })
    .await;
    let rows = views[0]["clients"].as_array().unwrap();
    assert!(rows.len() <= 51, "bounded: {} rows", rows.len());
    for i in 0..40 {
        let name = format!("iOS app Shop{i} 2.{i}");
        let row = rows.iter().find(|r| r["group"] == name.as_str()).unwrap_or_else(|| panic!("{name} kept"));
        assert_eq!(row["apps"]["old"]["last_day"], 3, "{name}");
    }
    let other = rows.iter().find(|r| r["group"] == "other").expect("the fakes that lost their place");
    assert!(other["apps"]["old"]["last_day"].as_u64().unwrap() >= 490);
    // Bounded in Redis too: one hash per named group, and "other".
    let keys = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--scan", "--pattern", "pusher-dual-auth:fleet:build:*"])
        .output()
        .unwrap();
    let n = String::from_utf8_lossy(&keys.stdout).lines().count();
    assert!(n <= 51, "{n} build hashes in Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_auth_signs_and_status_says_stale_then_catches_up() {
    let Some(mut redis) = RedisServer::start_persistent() else { return };
    let host = common::host::start("/check", "/hook").await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let dir = TempDir::new("fleet-outage");
    let a = Service::start(&dir, &config(&host.uri(), redis.port, 10));
    for _ in 0..5 {
        auth(&http, &a, "old", ANDROID).await;
    }
    until_agreed(&http, &[&a], "before", |s| signed(s, "old") == 5).await;
    redis.kill();
    for _ in 0..5 {
        auth(&http, &a, "old", ANDROID).await; // asserts 200
    }
    let started = Instant::now();
    let s = loop {
        let s = status(&http, &a).await;
        if s["fleet"]["stale"] == true && s["fleet"]["unflushed_since_ms"].is_u64() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "not marked stale: {}", s["fleet"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(signed(&s, "old"), 5, "the last fleet view read, not a guess");
    assert!(s["fleet"]["as_of_ms"].as_u64().unwrap() <= s["generated_ms"].as_u64().unwrap());
    assert!(s["fleet"]["error"].is_string());
    redis.restart();
    let (took, _) = until_agreed(&http, &[&a], "after the outage", |s| {
        signed(s, "old") == 10 && s["fleet"]["stale"] == false && s["fleet"]["unflushed_since_ms"].is_null()
    })
    .await;
    eprintln!("counts caught up {took:?} after Redis came back");
    assert!(a.log_text().contains("fleet: cannot flush counts to redis"));
}
