//! Webhooks from both apps: verified, merged, forwarded signed in Pusher's format.
use crate::helpers::*;
use pusher_dual_auth::pusher::hmac_sha256_hex;
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::{Mock, MockServer, ResponseTemplate};

const FWD_KEY: &str = "host-webhook-key";
const FWD_SECRET: &str = "host-webhook-secret";

async fn spawn_webhooks(receiver: &MockServer) -> TestApp {
    let url = format!("{}/pusher/webhook", receiver.uri());
    spawn_app_with(move |c| {
        format!("{c}\n[webhooks]\nforward_url = \"{url}\"\nkey = \"{FWD_KEY}\"\nsecret = \"{FWD_SECRET}\"\nretry_max_secs = 5\n")
    })
    .await
}

/// Every event the host received, after checking each delivery's signature.
async fn delivered(receiver: &MockServer) -> Vec<Value> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut out = Vec::new();
    for r in receiver.received_requests().await.unwrap() {
        assert_eq!(r.headers.get("x-pusher-key").unwrap(), FWD_KEY);
        assert_eq!(r.headers.get("content-type").unwrap(), "application/json");
        let sig = r.headers.get("x-pusher-signature").unwrap().to_str().unwrap();
        assert_eq!(sig, hmac_sha256_hex(FWD_SECRET.as_bytes(), &r.body), "signed for the host");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["time_ms"].is_u64());
        out.extend(v["events"].as_array().unwrap().iter().cloned());
    }
    out
}

#[tokio::test]
async fn occupancy_and_presence_are_merged_across_apps() {
    let receiver = MockServer::start().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let app = spawn_webhooks(&receiver).await;
    let occ = json!({"name": "channel_occupied", "channel": "presence-r"});
    let vac = json!({"name": "channel_vacated", "channel": "presence-r"});
    let add = json!({"name": "member_added", "channel": "presence-r", "user_id": "42"});
    let rm = json!({"name": "member_removed", "channel": "presence-r", "user_id": "42"});
    // A batched body from the old app, then the new app joins, then both leave.
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, json!([occ, add])).await, 200);
    assert_eq!(post_webhook(&app, NEW_KEY, NEW_SECRET, json!([occ, add])).await, 200);
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, json!([rm, vac])).await, 200);
    assert_eq!(delivered(&receiver).await.len(), 2, "only the first occupied/added so far");
    assert_eq!(post_webhook(&app, NEW_KEY, NEW_SECRET, json!([rm, vac])).await, 200);
    let events = delivered(&receiver).await;
    let names: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["channel_occupied", "member_added", "member_removed", "channel_vacated"]);
    let _ = &app;
}

#[tokio::test]
async fn stateless_events_pass_through_with_their_source() {
    let receiver = MockServer::start().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let app = spawn_webhooks(&receiver).await;
    let ce = json!({"name": "client_event", "channel": "private-a", "event": "client-x", "data": "{}", "socket_id": "1.1"});
    assert_eq!(post_webhook(&app, NEW_KEY, NEW_SECRET, json!([ce])).await, 200);
    let events = delivered(&receiver).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["source_app"], "new");
}

#[tokio::test]
async fn unknown_keys_and_bad_signatures_are_401_with_no_side_effects() {
    let receiver = MockServer::start().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let app = spawn_webhooks(&receiver).await;
    let occ = json!([{"name": "channel_occupied", "channel": "private-z"}]);
    assert_eq!(post_webhook(&app, "who", OLD_SECRET, occ.clone()).await, 401);
    assert_eq!(
        post_webhook(&app, OLD_KEY, NEW_SECRET, occ.clone()).await,
        401,
        "signed with the other app's secret"
    );
    assert!(delivered(&receiver).await.is_empty());
    // The refused ones changed no state: the first verified occupied still goes out.
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, occ).await, 200);
    assert_eq!(delivered(&receiver).await.len(), 1);
}

#[tokio::test]
async fn a_failing_host_gets_retries_in_order() {
    let receiver = MockServer::start().await;
    mount_recovering(&receiver, 2).await;
    let app = spawn_webhooks(&receiver).await;
    let occ = json!([{"name": "channel_occupied", "channel": "private-r"}]);
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, occ).await, 200, "acknowledged once queued");
    tokio::time::sleep(Duration::from_millis(2000)).await; // 0.5 s + 1 s backoff
    let got = receiver.received_requests().await.unwrap();
    assert_eq!(got.len(), 3, "two failures, then delivered");
    assert_eq!(got[0].body, got[2].body, "the same payload is retried");
}
