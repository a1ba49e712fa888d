//! Two replicas sharing merge state and a durable outbox in a real redis-server.
use crate::common::redis_server::RedisServer;
use crate::helpers::*;
use pusher_dual_auth::pusher::hmac_sha256_hex;
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A redis-server for the test (None when not installed outside CI).
async fn redis() -> Option<RedisServer> {
    RedisServer::start()
}

async fn replica(receiver: &MockServer, redis_port: u16) -> TestApp {
    let w = receiver.uri();
    spawn_app_with(move |c| {
        format!(
            "{c}\n[webhooks]\nforward_url = \"{w}/hook\"\nkey = \"k\"\nsecret = \"s\"\nretry_max_secs = 5\n\
             state = \"redis\"\nredis_url = \"redis://127.0.0.1:{redis_port}/0\"\n"
        )
    })
    .await
}

async fn names(receiver: &MockServer) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut out = Vec::new();
    for r in receiver.received_requests().await.unwrap() {
        assert_eq!(
            r.headers.get("x-pusher-signature").unwrap().to_str().unwrap(),
            hmac_sha256_hex(b"s", &r.body)
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        out.extend(v["events"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()));
    }
    out.sort();
    out
}

#[tokio::test]
async fn two_replicas_merge_through_redis_and_forward_each_transition_once() {
    let Some(redis) = redis().await else { return };
    let receiver = MockServer::start().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let (a, b) = (replica(&receiver, redis.port).await, replica(&receiver, redis.port).await);
    let occ = json!([{"name": "channel_occupied", "channel": "presence-x"}, {"name": "member_added", "channel": "presence-x", "user_id": "7"}]);
    let vac = json!([{"name": "member_removed", "channel": "presence-x", "user_id": "7"}, {"name": "channel_vacated", "channel": "presence-x"}]);
    // The old app's webhooks reach replica A, the new app's reach replica B.
    assert_eq!(post_webhook(&a, OLD_KEY, OLD_SECRET, occ.clone()).await, 200);
    assert_eq!(post_webhook(&b, NEW_KEY, NEW_SECRET, occ).await, 200);
    assert_eq!(names(&receiver).await, ["channel_occupied", "member_added"]);
    let status: Value =
        a.client.get(format!("{}/status", a.admin)).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (
            status["apps"]["old"]["occupied_channels"].clone(),
            status["apps"]["new"]["occupied_channels"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(post_webhook(&b, OLD_KEY, OLD_SECRET, vac.clone()).await, 200);
    assert_eq!(post_webhook(&a, NEW_KEY, NEW_SECRET, vac).await, 200);
    assert_eq!(
        names(&receiver).await,
        ["channel_occupied", "channel_vacated", "member_added", "member_removed"]
    );
}

#[tokio::test]
async fn queued_events_survive_a_host_outage_and_redis_refusal_is_not_acknowledged() {
    let Some(redis) = redis().await else { return };
    let receiver = MockServer::start().await;
    mount_recovering(&receiver, 2).await;
    let a = replica(&receiver, redis.port).await;
    let occ = json!([{"name": "channel_occupied", "channel": "private-q"}]);
    assert_eq!(post_webhook(&a, OLD_KEY, OLD_SECRET, occ.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.received_requests().await.unwrap().len(), 3, "retried until delivered");
    // Redis gone: the webhook is refused (503), so Pusher will retry it.
    drop(redis);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(post_webhook(&a, NEW_KEY, NEW_SECRET, occ).await, 503);
}

#[tokio::test]
async fn a_backlog_leaves_in_order_once_each_one_delivery_per_run_of_the_same_time_ms() {
    let Some(redis) = redis().await else { return };
    let receiver = MockServer::start().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    // 250 events queued before the replica starts (a host outage's backlog), their
    // source webhooks' time_ms in runs of 10.
    let items: Vec<String> = (0..250)
        .map(|i| {
            json!({"time_ms": 1_000 + i / 10, "event": {"name": "channel_occupied", "channel": format!("private-{i}")}})
                .to_string()
        })
        .collect();
    let pushed = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "RPUSH", "pusher-dual-auth:outbox"])
        .args(&items)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&pushed.stdout).trim(), "250");
    let _a = replica(&receiver, redis.port).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let deliveries = loop {
        let hooks: Vec<Value> = receiver
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path() == "/hook")
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        let events: usize = hooks.iter().map(|h| h["events"].as_array().unwrap().len()).sum();
        if events >= 250 || std::time::Instant::now() > deadline {
            break hooks;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await; // a repeat would show now
    assert_eq!(
        receiver.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/hook").count(),
        25
    );
    let mut seen = Vec::new();
    for (run, hook) in deliveries.iter().enumerate() {
        // Pusher's format has one time_ms per body: a run of the same time_ms is one delivery.
        assert_eq!(hook["time_ms"], json!(1_000 + run), "delivery {run}");
        let events = hook["events"].as_array().unwrap();
        assert_eq!(events.len(), 10, "delivery {run}");
        seen.extend(events.iter().map(|e| e["channel"].as_str().unwrap().to_owned()));
    }
    let expected: Vec<String> = (0..250).map(|i| format!("private-{i}")).collect();
    assert_eq!(seen, expected, "in the outbox's order, once each");
    let left = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "EVAL"])
        .args(["return redis.call('LLEN', KEYS[1]) + #redis.call('KEYS', KEYS[2])", "2"])
        .args(["pusher-dual-auth:outbox", "pusher-dual-auth:processing:*"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "0", "nothing left queued or in processing");
}
