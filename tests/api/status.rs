//! The migration status: numbers per app, webhook occupancy, the drain verdict,
//! and reconciliation of occupancy from the apps' REST channel lists at start.
use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::path};

async fn status(app: &TestApp) -> Value {
    app.client.get(format!("{}/status", app.admin)).send().await.unwrap().json().await.unwrap()
}

/// `/status` once `ok` holds for it, or the last one after `secs` seconds.
async fn poll(app: &TestApp, secs: u64, mut ok: impl FnMut(&Value) -> bool) -> Value {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(app).await;
        if ok(&s) || std::time::Instant::now() > until {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A webhook that never arrived (in either direction) is corrected from the
/// app's REST channel list, once two lists in a row show it, and the host gets
/// the transition it missed; meanwhile the verdict names the REST list as what
/// blocks, never "drained" on webhook counts alone.
#[tokio::test]
async fn lost_webhooks_are_corrected_from_the_rest_list_and_the_host_told() {
    let receiver = MockServer::start().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let rest = MockServer::start().await;
    let lists = |old: Value| {
        let rest = &rest;
        async move {
            rest.reset().await;
            rest_json(rest, "/apps/1111/channels", json!({"channels": old})).await;
            rest_json(rest, "/apps/2222/channels", json!({"channels": {}})).await;
        }
    };
    lists(json!({})).await;
    let (r, w) = (rest.uri(), receiver.uri());
    let app = spawn_app_with(move |c| {
        with_rest_and_webhooks(
            c,
            &r,
            &w,
            "[status]\nold_app = \"old\"\ndrain_window_secs = 1\nsample_secs = 1\nreconcile_secs = 2\n",
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // private-lost becomes occupied on the old app; its webhook never comes.
    lists(json!({"private-lost": {}})).await;
    let mut blocked_by_rest = false;
    let s = poll(&app, 15, |s| {
        let reason = s["drain"]["reason"].as_str().unwrap_or_default();
        blocked_by_rest |= reason.contains("REST API still lists 1");
        if s["apps"]["old"]["rest"]["listed"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(
                s["drain"]["drained"], false,
                "never drained while REST lists a channel: {}",
                s["drain"]
            );
        }
        s["apps"]["old"]["rest"]["corrected_occupied"] == 1
    })
    .await;
    assert_eq!(s["apps"]["old"]["rest"]["corrected_occupied"], 1, "{s}");
    assert_eq!(s["apps"]["old"]["occupied_channels"], 1);
    let forwarded = |name: &'static str| {
        let receiver = &receiver;
        async move {
            receiver.received_requests().await.unwrap().iter().any(|r| {
                let body = String::from_utf8_lossy(&r.body);
                body.contains(name) && body.contains("private-lost")
            })
        }
    };
    assert!(forwarded("channel_occupied").await, "the host got the occupancy it missed");
    // Between the list that first showed it and the correction, the REST list is named as what blocks.
    assert!(blocked_by_rest, "the verdict named the REST list");
    // Then it empties, and that webhook is lost too.
    lists(json!({})).await;
    let s = poll(&app, 15, |s| s["apps"]["old"]["rest"]["corrected_vacated"] == 1).await;
    assert_eq!(s["apps"]["old"]["rest"]["corrected_vacated"], 1, "{s}");
    assert_eq!(s["apps"]["old"]["occupied_channels"], 0);
    assert!(forwarded("channel_vacated").await, "the host got the vacate it missed");
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
            "[status]\nold_app = \"old\"\ndrain_window_secs = 2\nsample_secs = 1\nreconcile_secs = 2\n",
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
    // The REST API agrees (without that, webhook counts alone never drain it).
    rest.reset().await;
    rest_json(&rest, "/apps/1111/channels", json!({"channels": {}})).await;
    rest_json(&rest, "/apps/2222/channels", json!({"channels": {}})).await;
    let s = status(&app).await;
    assert_eq!(s["apps"]["old"]["occupied_channels"], 0);
    assert!(s["apps"]["old"]["last_webhook_ms"].is_u64());
    assert_eq!(s["drain"]["drained"], false, "the window has not passed yet: {}", s["drain"]);
    let s = poll(&app, 10, |s| s["drain"]["drained"] == true).await;
    assert_eq!(s["drain"]["drained"], true, "{}", s["drain"]);
    assert_eq!(s["apps"]["old"]["rest"]["listed"], 0);
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
