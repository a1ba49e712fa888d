//! The migration status: numbers per app, webhook occupancy, the drain verdict,
//! and reconciliation of occupancy from the apps' REST channel lists at start.
use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::path};

async fn status(app: &TestApp) -> Value {
    app.client.get(format!("{}/status", app.admin)).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn the_old_app_is_drained_after_a_quiet_window_and_not_before() {
    let receiver = MockServer::start().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    // The apps' REST APIs: the old app already has an occupied channel when we start.
    let rest = MockServer::start().await;
    rest_json(&rest, "/apps/1111/channels", json!({"channels": {"presence-lobby": {}}})).await;
    rest_json(&rest, "/apps/1111/channels/presence-lobby/users", json!({"users": []})).await;
    rest_json(&rest, "/apps/2222/channels", json!({"channels": {}})).await;
    let (r, w) = (rest.uri(), receiver.uri());
    let app = spawn_app_with(move |c| {
        with_rest_and_webhooks(
            c,
            &r,
            &w,
            "[status]\nold_app = \"old\"\ndrain_window_secs = 2\nsample_secs = 1\n",
        )
    })
    .await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&app.host)
        .await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = status(&app).await;
    assert_eq!(s["apps"]["old"]["occupied_channels"], 1, "reconciled from the REST API: {s}");
    assert_eq!(s["drain"]["drained"], false);

    // Traffic: 3 signed on new, 1 on old.
    for (route, n) in [("/auth/new", 3), ("/auth/old", 1)] {
        for _ in 0..n {
            expect_status(app.post_form(route, "socket_id=1.1&channel_name=private-a").await, 200).await;
        }
    }
    let s = status(&app).await;
    assert_eq!(s["apps"]["new"]["auth_signed_total"], 3);
    assert_eq!(s["apps"]["old"]["share"], 0.25);

    // The old app's last channel empties (its webhook), then the window passes quietly.
    let vacated = json!([{"name": "channel_vacated", "channel": "presence-lobby"}]);
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, vacated).await, 200);
    let s = status(&app).await;
    assert_eq!(s["apps"]["old"]["occupied_channels"], 0);
    assert!(s["apps"]["old"]["last_webhook_ms"].is_u64());
    assert_eq!(s["drain"]["drained"], false, "the window has not passed yet: {}", s["drain"]);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let s = status(&app).await;
    assert_eq!(s["drain"]["drained"], true, "{}", s["drain"]);
    assert!(s["history"].as_array().unwrap().len() >= 3);
    // The reconciled channel's vacate reached the host: it was occupied only through old.
    let got = receiver.received_requests().await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0].body).contains("channel_vacated"));

    // New old-app activity resets the verdict.
    expect_status(app.post_form("/auth/old", "socket_id=1.1&channel_name=private-a").await, 200).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status(&app).await["drain"]["drained"], false);
    let page = app.client.get(format!("{}/status.html", app.admin)).send().await.unwrap();
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
}
