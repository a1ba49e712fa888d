//! `POST /auth/{app}/user` for `pusher.signin()`.
use crate::helpers::*;
use serde_json::json;
use wiremock::{Mock, ResponseTemplate, matchers::path};

#[tokio::test]
async fn signin_signs_the_hosts_identity() {
    let app = spawn_app().await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"user_id": "12345"})))
        .expect(1)
        .mount(&app.host)
        .await;
    let res = expect_status(app.post_form("/auth/new/user", "socket_id=1234.1234&lang=en").await, 200).await;
    assert_eq!(
        res,
        json!({"auth": "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba",
               "user_data": "{\"id\":\"12345\"}"})
    );
    assert_eq!(
        app.host_bodies().await[0],
        json!({"app": "new", "kind": "user", "socket_id": "1234.1234", "params": {"lang": "en"}})
    );
}

#[tokio::test]
async fn signin_carries_user_info_and_watchlist() {
    let app = spawn_app().await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"user_id": "12345", "user_info": {"name": "Ada"}, "watchlist": ["1", "2"]}),
        ))
        .mount(&app.host)
        .await;
    let res = expect_status(app.post_form("/auth/new/user", "socket_id=1234.1234").await, 200).await;
    assert_eq!(res["user_data"], r#"{"id":"12345","user_info":{"name":"Ada"},"watchlist":["1","2"]}"#);
    assert!(
        res["auth"]
            .as_str()
            .unwrap()
            .ends_with(":bf18e7ad38d6ffa5c90f8675c217cae59f5aa13959d32c085b78a4c40fd2c60e")
    );
}

#[tokio::test]
async fn signin_failures_follow_the_table() {
    let cases = [
        (ResponseTemplate::new(401), 403),
        (ResponseTemplate::new(200).set_body_json(json!({})), 502),
        (ResponseTemplate::new(200).set_body_json(json!({"user_id": "has space"})), 502),
        (ResponseTemplate::new(200).set_body_json(json!({"user_id": "1", "watchlist": "2"})), 502),
        (ResponseTemplate::new(500), 502),
    ];
    for (template, status) in cases {
        let app = spawn_app().await;
        Mock::given(path("/check")).respond_with(template).mount(&app.host).await;
        expect_status(app.post_form("/auth/old/user", "socket_id=1.1").await, status).await;
    }
    let app = spawn_app().await;
    expect_status(app.post_form("/auth/old/user", "socket_id=1.1:x").await, 400).await;
    expect_status(app.post_form("/auth/nope/user", "socket_id=1.1").await, 404).await;
}
