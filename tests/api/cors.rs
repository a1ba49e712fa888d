//! Cross-origin callers: an exact allowlist, checked before the host is asked.
use crate::helpers::*;
use serde_json::json;
use wiremock::{Mock, ResponseTemplate, matchers::path};

const REQ: &str = "socket_id=1.1&channel_name=private-a";
const ORIGIN: &str = "https://app.example.com";

async fn spawn_cors_app(host_calls: u64) -> TestApp {
    let app =
        spawn_app_with(|c| c.edit("workers = 1", &format!("workers = 1\nallowed_origins = [\"{ORIGIN}\"]")))
            .await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(host_calls)
        .mount(&app.host)
        .await;
    app
}

#[tokio::test]
async fn a_listed_origin_gets_credentialed_cors_headers() {
    let app = spawn_cors_app(1).await;
    let res = app.post_form_with("/auth/new", REQ, &[("origin", ORIGIN)]).await;
    assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    assert!(res.headers().get_all("vary").iter().any(|v| v.to_str().unwrap().contains("Origin")));
    expect_status(res, 200).await;
}

#[tokio::test]
async fn a_listed_origin_sees_error_statuses_too() {
    let app =
        spawn_app_with(|c| c.edit("workers = 1", &format!("workers = 1\nallowed_origins = [\"{ORIGIN}\"]")))
            .await;
    Mock::given(path("/check")).respond_with(ResponseTemplate::new(403)).mount(&app.host).await;
    let res = app.post_form_with("/auth/new", REQ, &[("origin", ORIGIN)]).await;
    assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
    expect_status(res, 403).await;
}

#[tokio::test]
async fn an_unlisted_origin_is_refused_before_the_host() {
    let app = spawn_cors_app(0).await;
    for origin in
        ["https://evil.example.com", "https://app.example.com.evil.com", "null", "http://app.example.com"]
    {
        let res = app.post_form_with("/auth/new", REQ, &[("origin", origin)]).await;
        assert!(res.headers().get("access-control-allow-origin").is_none());
        assert_eq!(expect_status(res, 403).await["error"]["code"], "origin_not_allowed", "{origin}");
    }
}

#[tokio::test]
async fn preflights_are_answered_without_the_host() {
    let app = spawn_cors_app(0).await;
    let res = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/auth/new", app.address))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, x-csrf-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "POST");
    assert_eq!(h["access-control-allow-headers"], "authorization, x-csrf-token");

    let res = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/auth/new/user", app.address))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn same_origin_requests_work_without_any_cors_config() {
    let app = spawn_app().await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&app.host)
        .await;
    let own = app.address.clone();
    let res = app.post_form_with("/auth/new", REQ, &[("origin", &own)]).await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
    expect_status(res, 200).await;
    let res = app
        .post_form_with(
            "/auth/new",
            REQ,
            &[("origin", "https://other.example"), ("sec-fetch-site", "same-origin")],
        )
        .await;
    expect_status(res, 200).await;
    // Cross-origin with no allowlist configured: refused.
    let res = app.post_form_with("/auth/new", REQ, &[("origin", "https://other.example")]).await;
    expect_status(res, 403).await;
}

/// An unlisted origin is refused on the request's head: a body that never comes
/// is not waited for (it would be a 408 after `body_timeout_ms`), the host is not
/// asked, and the refusal is counted once. A raw socket, as a stranger sends it.
#[tokio::test]
async fn an_unlisted_origin_is_refused_without_waiting_for_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| {
        c.edit(
            "workers = 1",
            &format!("workers = 1\nbody_timeout_ms = 300\nallowed_origins = [\"{ORIGIN}\"]"),
        )
    })
    .await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(0)
        .mount(&app.host)
        .await;
    let mut s = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    s.write_all(
        b"POST /auth/new HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example.com\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nsocket_id=1.1",
    )
    .await
    .unwrap();
    let mut head = [0u8; 1024];
    let n =
        tokio::time::timeout(std::time::Duration::from_secs(3), s.read(&mut head)).await.unwrap().unwrap();
    let reply = String::from_utf8_lossy(&head[..n]);
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains("origin_not_allowed"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("\r\nvary: origin\r\n"), "{reply}");
    assert!(!reply.to_ascii_lowercase().contains("access-control-allow-origin"), "{reply}");
    let metrics =
        app.client.get(format!("{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
    let refused =
        r#"pusher_auth_requests_total{app="unknown",kind="request",outcome="origin_not_allowed"} 1"#;
    assert!(metrics.lines().any(|l| l == refused), "{metrics}");
}
