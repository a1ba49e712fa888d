//! Every row of the status table, against a real HTTP host stub.
use crate::helpers::*;
use serde_json::json;
use std::time::{Duration, Instant};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

const REQ: &str = "socket_id=1234.1234&channel_name=private-foobar";

async fn host_answers(template: ResponseTemplate, expected: u16) -> serde_json::Value {
    let app = spawn_app().await;
    Mock::given(method("POST")).and(path("/check")).respond_with(template).expect(1).mount(&app.host).await;
    expect_status(app.post_form("/auth/new", REQ).await, expected).await
}

#[tokio::test]
async fn host_denials_become_403() {
    for status in [401, 403] {
        let body = host_answers(ResponseTemplate::new(status), 403).await;
        assert_eq!(body["error"]["code"], "forbidden");
    }
}

#[tokio::test]
async fn other_host_statuses_fail_closed_with_502() {
    for status in [204, 400, 404, 405, 409, 429, 500, 502, 503] {
        let body =
            host_answers(ResponseTemplate::new(status).set_body_json(json!({"user_id": "1"})), 502).await;
        assert!(body["error"]["code"].as_str().unwrap().starts_with("session_check"), "{status}: {body}");
    }
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let app = spawn_app().await;
    // A session check that redirects to a login page which answers 200 {}:
    // following it would sign for an anonymous user.
    Mock::given(path("/check"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", format!("{}/login", app.host.uri())),
        )
        .expect(1)
        .mount(&app.host)
        .await;
    Mock::given(path("/login"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"user_id": "anon"})))
        .expect(0)
        .mount(&app.host)
        .await;
    let body = expect_status(app.post_form("/auth/new", REQ).await, 502).await;
    assert_eq!(body["error"]["code"], "session_check_failed");
}

#[tokio::test]
async fn unparseable_or_invalid_answers_are_502() {
    let bodies: Vec<ResponseTemplate> = vec![
        ResponseTemplate::new(200),
        ResponseTemplate::new(200).set_body_string("<html>login</html>"),
        ResponseTemplate::new(200).set_body_string("[]"),
        // An array is not an object, even one a struct could be read from.
        ResponseTemplate::new(200).set_body_string("[\"42\"]"),
        // A field given twice: which one the host meant is not guessed.
        ResponseTemplate::new(200).set_body_string("{\"user_id\":\"1\",\"user_id\":\"2\"}"),
        ResponseTemplate::new(200).set_body_string("{\"user_id\":"),
        ResponseTemplate::new(200).set_body_json(json!({"user_id": 42})),
        ResponseTemplate::new(200).set_body_json(json!({"user_id": "1", "user_info": "x"})),
    ];
    for template in bodies {
        host_answers(template, 502).await;
    }
}

#[tokio::test]
async fn oversized_answers_are_502() {
    let huge = json!({"user_id": "1", "pad": "x".repeat(10_000)});
    let body = host_answers(ResponseTemplate::new(200).set_body_json(huge), 502).await;
    assert_eq!(body["error"]["code"], "session_check_invalid");
}

#[tokio::test]
async fn a_slow_host_is_a_504_within_the_timeout() {
    let app = spawn_app().await; // timeout_ms = 500
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})).set_delay(Duration::from_secs(5)))
        .mount(&app.host)
        .await;
    let started = Instant::now();
    let body = expect_status(app.post_form("/auth/new", REQ).await, 504).await;
    assert_eq!(body["error"]["code"], "session_check_timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn an_unreachable_host_is_a_502() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let host = MockServer::start().await;
    let config = base_config(&format!("http://127.0.0.1:{port}/check"));
    let app = spawn_with_config(host, &config).await;
    let body = expect_status(app.post_form("/auth/new", REQ).await, 502).await;
    assert_eq!(body["error"]["code"], "session_check_unreachable");
}
