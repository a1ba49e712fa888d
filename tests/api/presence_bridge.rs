//! The presence bridge over real HTTP: member changes on one app are published
//! to the other's REST API (in order, once), and an authorization answer for a
//! bridged presence channel lists the other apps' members with their info.
use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

async fn spawn_bridge(rest: &MockServer) -> TestApp {
    let rest = rest.uri();
    let app = spawn_app_with(move |c| {
        let c = c
            .edit("app_id = \"1111\"", &format!("app_id = \"1111\"\nrest_url = \"{rest}\""))
            .edit("app_id = \"2222\"", &format!("app_id = \"2222\"\nrest_url = \"{rest}\""));
        assert_eq!(c.matches("rest_url").count(), 2, "both apps point at the fake REST API");
        format!(
            "{c}\n[webhooks]\nforward_url = \"{rest}/hook\"\nkey = \"k\"\nsecret = \"s\"\n[presence]\nbridge = [\"presence-room*\"]\n"
        )
    })
    .await;
    Mock::given(matchers::path("/check"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"user_id": "u7", "user_info": {"name": "Seven"}})),
        )
        .mount(&app.host)
        .await;
    app
}

/// The bridge events the REST API received for app `app_id`, as (channel, data).
async fn published(rest: &MockServer, app_id: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for r in rest.received_requests().await.unwrap() {
        if r.url.path() != format!("/apps/{app_id}/events") {
            continue;
        }
        assert!(r.url.query().unwrap().contains("auth_signature="), "signed");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["name"], "dual-auth:presence");
        let data: Value = serde_json::from_str(body["data"].as_str().unwrap()).unwrap();
        out.push((body["channel"].as_str().unwrap().to_owned(), data));
    }
    out
}

async fn until_published(rest: &MockServer, app_id: &str, n: usize) -> Vec<(String, Value)> {
    for _ in 0..50 {
        let got = published(rest, app_id).await;
        if got.len() >= n {
            tokio::time::sleep(Duration::from_millis(200)).await; // a second copy would show now
            return published(rest, app_id).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} bridge events for app {app_id}");
}

async fn authorize(app: &TestApp, route: &str, channel: &str) -> Value {
    let res = app.post_form(route, &format!("socket_id=1234.5678&channel_name={channel}")).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn member_changes_reach_the_other_app_and_authorizations_list_its_members() {
    let rest = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&rest)
        .await;
    Mock::given(matchers::method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"channels": {}})))
        .mount(&rest)
        .await;
    let app = spawn_bridge(&rest).await;

    // u7 is authorized on the old app (its info is remembered), then joins there.
    let answer = authorize(&app, "/auth/old", "presence-room").await;
    assert_eq!(answer["presence_bridge"], json!({"new": {}}), "nobody on the new app yet");
    let add = json!({"name": "member_added", "channel": "presence-room", "user_id": "u7"});
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, json!([add])).await, 200);
    let got = until_published(&rest, "2222", 1).await;
    assert_eq!(got.len(), 1, "once, to the new app only");
    assert!(published(&rest, "1111").await.is_empty(), "never to the app it came from");
    let (channel, data) = &got[0];
    assert_eq!(channel, "presence-room");
    assert_eq!(
        (&data["app"], &data["user_id"], &data["present"]),
        (&json!("old"), &json!("u7"), &json!(true))
    );
    assert_eq!(data["user_info"], json!({"name": "Seven"}), "the info the host gave at authorization");
    assert!(data["time_ms"].is_u64() && data["seq"] == 0);

    // Someone authorized on the new app learns who is on the old one.
    let answer = authorize(&app, "/auth/new", "presence-room").await;
    assert_eq!(answer["presence_bridge"], json!({"old": {"u7": {"name": "Seven"}}}));
    assert!(answer["auth"].as_str().unwrap().starts_with(&format!("{NEW_KEY}:")), "signed as usual");

    // A channel not bridged: the answer is exactly what it always was.
    let answer = authorize(&app, "/auth/new", "presence-other").await;
    let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["auth", "channel_data"]);

    // u7 leaves the old app: told to the new app; a repeated webhook tells nothing more.
    let body = json!({"time_ms": now_ms(), "events": [{"name": "member_removed", "channel": "presence-room", "user_id": "u7"}]})
        .to_string();
    assert_eq!(post_webhook_body(&app, OLD_KEY, OLD_SECRET, &body).await, 200);
    assert_eq!(post_webhook_body(&app, OLD_KEY, OLD_SECRET, &body).await, 200, "a repeat is acknowledged");
    let got = until_published(&rest, "2222", 2).await;
    assert_eq!(got.len(), 2, "the repeat was not published again: {got:?}");
    assert_eq!((&got[1].1["present"], &got[1].1["user_id"]), (&json!(false), &json!("u7")));
    let answer = authorize(&app, "/auth/new", "presence-room").await;
    assert_eq!(answer["presence_bridge"], json!({"old": {}}), "gone from the list");

    // Changes of channels not bridged are not published.
    let other = json!({"name": "member_added", "channel": "presence-other", "user_id": "u8"});
    assert_eq!(post_webhook(&app, NEW_KEY, NEW_SECRET, json!([other])).await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(published(&rest, "1111").await.is_empty());
}

#[tokio::test]
async fn the_bridge_needs_webhooks() {
    let config = base_config("http://127.0.0.1:9/check") + "\n[presence]\nbridge = [\"presence-*\"]\n";
    let err = pusher_dual_auth::config::Settings::from_toml(&config, None).unwrap_err().to_string();
    assert!(err.contains("presence.bridge") && err.contains("needs [webhooks]"), "{err}");
}
