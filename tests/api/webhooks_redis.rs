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
