use crate::helpers::*;
use serde_json::json;
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{method, path},
};

fn allow(body: serde_json::Value) -> Mock {
    Mock::given(method("POST"))
        .and(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
}

#[tokio::test]
async fn each_route_signs_with_its_own_app() {
    let app = spawn_app().await;
    allow(json!({})).expect(2).mount(&app.host).await;

    let new = expect_status(
        app.post_form("/auth/new", "socket_id=1234.1234&channel_name=private-foobar").await,
        200,
    )
    .await;
    assert_eq!(
        new,
        json!({"auth": "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"})
    );
    let old = expect_status(
        app.post_form("/auth/old", "socket_id=1234.1234&channel_name=private-foobar").await,
        200,
    )
    .await;
    let expected = format!("{OLD_KEY}:{}", sign(OLD_SECRET, "1234.1234:private-foobar"));
    assert_eq!(old, json!({ "auth": expected }));
}

#[tokio::test]
async fn the_host_receives_the_documented_check_request() {
    let app = spawn_app().await;
    allow(json!({})).expect(1).mount(&app.host).await;
    let body = "socket_id=123.456&channel_name=private-foo&a=1%202&obj=%5Bobject%20Object%5D";
    expect_status(app.post_form("/auth/new", body).await, 200).await;
    let received = app.host.received_requests().await.unwrap();
    assert_eq!(received[0].headers.get("content-type").unwrap(), "application/json");
    assert_eq!(
        app.host_bodies().await[0],
        json!({"app": "new", "kind": "channel", "socket_id": "123.456", "channel_name": "private-foo",
               "params": {"a": "1 2", "obj": "[object Object]"}})
    );
}

#[tokio::test]
async fn json_bodies_are_accepted() {
    let app = spawn_app().await;
    allow(json!({})).mount(&app.host).await;
    let res = app
        .client
        .post(format!("{}/auth/new", app.address))
        .json(&json!({"socket_id": "1234.1234", "channel_name": "private-foobar", "team": 7}))
        .send()
        .await
        .unwrap();
    let body = expect_status(res, 200).await;
    assert!(
        body["auth"]
            .as_str()
            .unwrap()
            .ends_with(":58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4")
    );
    assert_eq!(app.host_bodies().await[0]["params"], json!({"team": 7}));
}

#[tokio::test]
async fn presence_identity_comes_from_the_host_and_is_signed_byte_for_byte() {
    let app = spawn_app().await;
    allow(json!({"user_id": "10", "user_info": {"name": "Mr. Pusher"}})).mount(&app.host).await;
    // The client's own claims are only params; they never become the identity.
    let body = "socket_id=1234.1234&channel_name=presence-foobar&user_id=999&user_info=%7B%7D";
    let res = expect_status(app.post_form("/auth/new", body).await, 200).await;
    let channel_data = res["channel_data"].as_str().expect("channel_data is a JSON string");
    assert_eq!(channel_data, r#"{"user_id":"10","user_info":{"name":"Mr. Pusher"}}"#);
    assert_eq!(
        res["auth"],
        "278d425bdf160c739803:48dac51d2d7569e1e9c0f48c227d4b26f238fa68e5c0bb04222c966909c4f7c4"
    );
}

#[tokio::test]
async fn presence_without_user_id_from_the_host_is_a_502() {
    let app = spawn_app().await;
    allow(json!({"user_info": {"name": "x"}})).mount(&app.host).await;
    expect_status(app.post_form("/auth/new", "socket_id=1.1&channel_name=presence-x").await, 502).await;
}

#[tokio::test]
async fn encrypted_channels_get_a_shared_secret() {
    let app = spawn_app().await;
    allow(json!({})).mount(&app.host).await;
    let res = expect_status(
        app.post_form("/auth/new", "socket_id=1234.1234&channel_name=private-encrypted-foobar").await,
        200,
    )
    .await;
    assert_eq!(
        res,
        json!({"auth": "278d425bdf160c739803:e6a18892d037c5d5e76a2265df4f086ffc38631605530dfd214aa5bff495f533",
               "shared_secret": "AWykI0LdIogmHc8RemnT6ERNSn3VSQeaf8imb9u8U/I="})
    );
}

#[tokio::test]
async fn encrypted_channels_on_an_app_without_master_key_are_refused_before_the_host() {
    let app = spawn_app().await;
    allow(json!({})).expect(0).mount(&app.host).await;
    let res = expect_status(
        app.post_form("/auth/old", "socket_id=1.1&channel_name=private-encrypted-foobar").await,
        400,
    )
    .await;
    assert_eq!(res["error"]["code"], "encryption_not_configured");
}

#[tokio::test]
async fn bad_requests_never_reach_the_host() {
    let app = spawn_app().await;
    allow(json!({"user_id": "1"})).expect(0).mount(&app.host).await;
    let cases = [
        ("socket_id=1.1%3Aprivate-b&channel_name=private-a", "invalid_socket_id"),
        ("socket_id=1.1%0A&channel_name=private-a", "invalid_socket_id"),
        ("socket_id=%D9%A1.1&channel_name=private-a", "invalid_socket_id"),
        ("socket_id=1.1&socket_id=2.2&channel_name=private-a", "duplicate_field"),
        ("socket_id=1.1&channel_name=private-a&channel_name=private-b", "duplicate_field"),
        ("socket_id=1.1&channel_name=public-room", "public_channel"),
        ("socket_id=1.1&channel_name=%23server-to-user-1", "invalid_channel_name"),
        ("socket_id=1.1&channel_name=private-a%3Ab", "invalid_channel_name"),
        ("socket_id=1.1", "malformed_body"),
        ("channel_name=private-a", "malformed_body"),
        ("", "malformed_body"),
    ];
    for (body, code) in cases {
        let res = expect_status(app.post_form("/auth/new", body).await, 400).await;
        assert_eq!(res["error"]["code"], code, "{body}");
    }
    let long = format!("socket_id=1.1&channel_name=private-{}", "a".repeat(200));
    expect_status(app.post_form("/auth/new", &long).await, 400).await;
}

#[tokio::test]
async fn unknown_apps_are_404_and_oversized_bodies_413() {
    let app = spawn_app().await;
    allow(json!({})).expect(0).mount(&app.host).await;
    let res =
        expect_status(app.post_form("/auth/staging", "socket_id=1.1&channel_name=private-a").await, 404)
            .await;
    assert_eq!(res["error"]["code"], "unknown_app");
    let big = format!("socket_id=1.1&channel_name=private-a&pad={}", "x".repeat(9000));
    let res = expect_status(app.post_form("/auth/new", &big).await, 413).await;
    assert_eq!(res["error"]["code"], "body_too_large");
}

#[tokio::test]
async fn unsupported_content_type_is_415() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(format!("{}/auth/new", app.address))
        .header("content-type", "text/plain")
        .body("socket_id=1.1&channel_name=private-a")
        .send()
        .await
        .unwrap();
    expect_status(res, 415).await;
}

#[tokio::test]
async fn other_methods_and_paths_get_json_errors() {
    let app = spawn_app().await;
    let res = app.client.get(format!("{}/auth/new", app.address)).send().await.unwrap();
    assert_eq!(expect_status(res, 405).await["error"]["code"], "method_not_allowed");
    let res = app.client.get(format!("{}/nope", app.address)).send().await.unwrap();
    assert_eq!(expect_status(res, 404).await["error"]["code"], "not_found");
}

#[tokio::test]
async fn health_endpoints_answer_without_the_host() {
    let app = spawn_app().await;
    drop(app.host); // the host app is gone: liveness must not care
    let res = reqwest::get(format!("{}/healthz", app.address)).await.unwrap();
    assert_eq!(res.status(), 200);
    let res = reqwest::get(format!("{}/readyz", app.address)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["apps"], json!(["new", "old"]));
}

#[tokio::test]
async fn signed_responses_are_not_cacheable() {
    let app = spawn_app().await;
    allow(json!({})).mount(&app.host).await;
    let res = app.post_form("/auth/new", "socket_id=1.1&channel_name=private-a").await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
}
