//! What the host sees of the browser's request: an allowlist, nothing more.
use crate::helpers::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::{Mock, ResponseTemplate, matchers::path};

const REQ: &str = "socket_id=1.1&channel_name=private-a";

async fn allow_all(app: &TestApp) {
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&app.host)
        .await;
}

#[tokio::test]
async fn credentials_are_forwarded_and_everything_else_dropped() {
    let app = spawn_app().await;
    allow_all(&app).await;
    let headers = [
        ("cookie", "session=abc"),
        ("cookie", "theme=dark"),
        ("authorization", "Bearer t0k"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=6.6.6.6"),
        ("x-csrf-token", "not-configured"),
        ("x_cookie", "alias"),
        ("user-agent", "browser/1.0"),
        ("x-request-id", "req-123"),
    ];
    let res = app.post_form_with("/auth/new", REQ, &headers).await;
    assert_eq!(res.headers()["x-request-id"], "req-123");
    expect_status(res, 200).await;

    let got = &app.host.received_requests().await.unwrap()[0];
    let h = |n: &str| got.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(h("cookie").as_deref(), Some("session=abc; theme=dark"));
    assert_eq!(h("authorization").as_deref(), Some("Bearer t0k"));
    assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(h("x-request-id").as_deref(), Some("req-123"));
    for absent in ["x-forwarded-host", "x-forwarded-proto", "forwarded", "x-csrf-token", "x_cookie"] {
        assert_eq!(h(absent), None, "{absent} must not be forwarded");
    }
    assert!(h("user-agent").unwrap().starts_with("pusher-dual-auth/"));
    let host_header = h("host").unwrap();
    assert!(app.host.uri().ends_with(&host_header), "Host must be the session check's own: {host_header}");
}

#[tokio::test]
async fn configured_extra_headers_are_forwarded() {
    let app = spawn_app_with(|c| {
        c.edit("timeout_ms = 500", "timeout_ms = 500\nforward_headers = [\"X-CSRF-Token\"]")
    })
    .await;
    allow_all(&app).await;
    expect_status(app.post_form_with("/auth/new", REQ, &[("x-csrf-token", "c5rf")]).await, 200).await;
    let got = &app.host.received_requests().await.unwrap()[0];
    assert_eq!(got.headers.get("x-csrf-token").unwrap(), "c5rf");
}

#[tokio::test]
async fn two_authorization_headers_are_refused_before_the_host() {
    let app = spawn_app().await;
    Mock::given(path("/check")).respond_with(ResponseTemplate::new(200)).expect(0).mount(&app.host).await;
    let res = app
        .post_form_with("/auth/new", REQ, &[("authorization", "Bearer a"), ("authorization", "Bearer b")])
        .await;
    assert_eq!(expect_status(res, 400).await["error"]["code"], "duplicate_header");
}

#[tokio::test]
async fn a_trusted_proxy_x_forwarded_for_is_honoured() {
    let app =
        spawn_app_with(|c| c.edit("workers = 1", "workers = 1\ntrusted_proxies = [\"127.0.0.0/8\"]")).await;
    allow_all(&app).await;
    expect_status(app.post_form_with("/auth/new", REQ, &[("x-forwarded-for", "203.0.113.9")]).await, 200)
        .await;
    let got = &app.host.received_requests().await.unwrap()[0];
    assert_eq!(got.headers.get("x-forwarded-for").unwrap(), "203.0.113.9, 127.0.0.1");
}

#[tokio::test]
async fn malformed_request_ids_are_replaced() {
    let app = spawn_app().await;
    allow_all(&app).await;
    let res = app.post_form_with("/auth/new", REQ, &[("x-request-id", "bad id with spaces")]).await;
    let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(echoed, "bad id with spaces");
    assert_eq!(echoed.len(), 36, "a fresh UUID");
    expect_status(res, 200).await;
    let got = &app.host.received_requests().await.unwrap()[0];
    assert_eq!(got.headers.get("x-request-id").unwrap().to_str().unwrap(), echoed);
}

/// `/auth` gives a request its id itself, every other route through a middleware:
/// each kind of answer on either side echoes the caller's id, or a fresh one.
#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let app = spawn_app().await;
    allow_all(&app).await;
    let id =
        |res: &reqwest::Response| res.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned());
    let ours = [("x-request-id", "rid-echo-1")];
    let requests = [
        ("POST", "/auth/new", 200),
        ("POST", "/auth/nope", 404),
        ("GET", "/auth/new", 405),
        ("POST", "/auth", 404),
        ("GET", "/healthz", 200),
        ("POST", "/healthz", 404), // the method is part of the route
        ("GET", "/no-such-route", 404),
        ("POST", "/webhooks", 404), // a feature not configured
        ("GET", "/authx", 404),
    ];
    for (method, path, status) in requests {
        for given in [&ours[..], &[]] {
            let res = app
                .client
                .request(method.parse().unwrap(), format!("{}{path}", app.address))
                .header("content-type", "application/x-www-form-urlencoded")
                .headers(given.iter().map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap())).collect())
                .body(REQ)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), status, "{method} {path}");
            let echoed = id(&res).unwrap_or_else(|| panic!("{method} {path}: no X-Request-Id"));
            match given {
                [] => assert_eq!(echoed.len(), 36, "{method} {path}: a fresh UUID"),
                _ => assert_eq!(echoed, "rid-echo-1", "{method} {path}"),
            }
        }
    }
    // A refusal by the CORS gate, before anything else of /auth runs.
    let res = app.post_form_with("/auth/new", REQ, &[("origin", "https://evil.example")]).await;
    assert_eq!(res.status().as_u16(), 403);
    assert_eq!(id(&res).map(|v| v.len()), Some(36));

    // The asterisk form matches no route scope (its path has no leading `/`).
    let mut s = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    s.write_all(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    let head = answer.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 404"), "{answer}");
    assert_eq!(head.matches("\r\nx-request-id: ").count(), 1, "{answer}");
    assert!(answer.contains(r#""code":"not_found""#), "{answer}");
}

#[tokio::test]
async fn userinfo_in_the_session_check_url_is_sent_as_basic_auth() {
    let host = wiremock::MockServer::start().await;
    let port = host.address().port();
    // "s@cret" percent-encoded in the URL, decoded before encoding: base64("svc:s@cret").
    let url = format!("http://svc:s%40cret@127.0.0.1:{port}/check");
    let app = spawn_with_config(host, &base_config(&url)).await;
    allow_all(&app).await;
    expect_status(app.post_form("/auth/new", REQ).await, 200).await;
    let got = &app.host.received_requests().await.unwrap()[0];
    let sent: Vec<_> = got.headers.get_all("authorization").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(sent, ["Basic c3ZjOnNAY3JldA=="]);
    assert_eq!(got.url.path(), "/check");
}
