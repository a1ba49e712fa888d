//! Abusive clients: none changes what the host sees beyond the allowlist, none
//! crashes or wedges a worker (each test ends by checking the service still answers).
use crate::helpers::*;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use wiremock::{Mock, ResponseTemplate, matchers::path};

const REQ: &str = "socket_id=1.1&channel_name=private-a";

async fn short_timeouts_app() -> TestApp {
    let app = spawn_app_with(|c| {
        c.edit("workers = 1", "workers = 1\nheader_timeout_ms = 1000\nbody_timeout_ms = 300")
    })
    .await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&app.host)
        .await;
    app
}

async fn still_serves(app: &TestApp) {
    expect_status(app.post_form("/auth/new", REQ).await, 200).await;
}

async fn raw(app: &TestApp, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slowloris_headers_are_cut_off() {
    let app = short_timeouts_app().await;
    let mut s = TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    s.write_all(b"POST /auth/new HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // Keep trickling a header byte at a time; the server must close us anyway.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if s.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut one = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(1), s.read(&mut one)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&one[..n]),
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection still open after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "closed only after {:?}", started.elapsed());
    still_serves(&app).await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_without_a_host_call() {
    let app = short_timeouts_app().await;
    let reply = raw(
        &app,
        b"POST /auth/new HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nsocket_id=1.1",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(app.host.received_requests().await.unwrap().is_empty());
    still_serves(&app).await;
}

/// actix reads an Upgrade request's body to the connection's end, past its
/// Content-Length: the declared bytes arriving whole in one chunk must not be
/// taken as the body then. Held, it times out as any body; closed, it is refused.
#[tokio::test]
async fn an_upgrade_body_past_its_content_length_is_read_as_any_body() {
    let app = short_timeouts_app().await;
    let head = format!(
        "POST /auth/new HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n{REQ}",
        REQ.len()
    );
    for close in [false, true] {
        let mut s = TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"&a=1").await.unwrap();
        if close {
            s.shutdown().await.unwrap();
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        let reply = String::from_utf8_lossy(&out);
        let expected = if close { "HTTP/1.1 400" } else { "HTTP/1.1 408" };
        assert!(reply.starts_with(expected), "closed {close}: {reply}");
        assert!(!reply.contains("\"auth\""), "{reply}");
    }
    assert!(app.host.received_requests().await.unwrap().is_empty());
    still_serves(&app).await;
}

#[tokio::test]
async fn huge_and_numerous_headers_are_refused() {
    let app = short_timeouts_app().await;
    let huge = format!(
        "POST /auth/new HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(200_000)
    );
    let reply = raw(&app, huge.as_bytes()).await;
    assert!(!reply.starts_with("HTTP/1.1 200"), "{}", &reply[..reply.len().min(100)]);
    let mut many = String::from("POST /auth/new HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("Content-Length: 0\r\n\r\n");
    let reply = raw(&app, many.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 4"), "{reply}");
    assert!(app.host.received_requests().await.unwrap().is_empty());
    still_serves(&app).await;
}

#[tokio::test]
async fn cr_lf_and_non_utf8_bytes_do_not_smuggle_headers() {
    let app = short_timeouts_app().await;
    // A bare CR inside a value is a parse error, not a second header.
    let reply = raw(
        &app,
        b"POST /auth/new HTTP/1.1\r\nHost: x\r\nCookie: a=1\rX-Injected: yes\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 36\r\n\r\nsocket_id=1.1&channel_name=private-a",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // Non-UTF-8 (obs-text) cookie bytes are forwarded verbatim, nothing more.
    let mut req = b"POST /auth/new HTTP/1.1\r\nHost: x\r\nCookie: s=\xff\xfe\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 36\r\n\r\n".to_vec();
    req.extend_from_slice(b"socket_id=1.1&channel_name=private-a");
    let reply = raw(&app, &req).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let got = app.host.received_requests().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers.get("cookie").unwrap().as_bytes(), b"s=\xff\xfe");
    assert!(got[0].headers.get("x-injected").is_none());
}

#[tokio::test]
async fn hop_by_hop_and_alias_tricks_change_nothing() {
    let app = short_timeouts_app().await;
    let headers = [
        // Asking intermediaries to drop the headers we set must not drop them.
        ("connection", "x-forwarded-for, x-request-id, cookie"),
        ("cookie", "s=1"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x_forwarded_for", "6.6.6.6"),
        ("x.forwarded.for", "6.6.6.6"),
        ("authorization_", "Bearer alias"),
        ("x-request-id", "rid-77"),
    ];
    expect_status(app.post_form_with("/auth/new", REQ, &headers).await, 200).await;
    let got = &app.host.received_requests().await.unwrap()[0];
    assert_eq!(got.headers.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(got.headers.get("x-request-id").unwrap(), "rid-77");
    assert_eq!(got.headers.get("cookie").unwrap(), "s=1");
    for name in ["x_forwarded_for", "x.forwarded.for", "authorization_", "authorization"] {
        assert!(got.headers.get(name).is_none(), "{name} forwarded");
    }
    // Connection lists no header the host gets: the host's connection is our own.
    assert_ne!(
        got.headers.get("connection").map(|v| v.to_str().unwrap()),
        Some("x-forwarded-for, x-request-id, cookie")
    );
}

#[tokio::test]
async fn rate_limiting_answers_429_per_client_ip() {
    let app =
        spawn_app_with(|c| format!("{c}\n[rate_limit]\nenabled = true\nper_second = 1\nburst = 3\n")).await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&app.host)
        .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = app.post_form("/auth/new", REQ).await;
        if res.status() == 429 {
            assert_retry_after_spread(res.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        }
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // A spoofed X-Forwarded-For from an untrusted peer does not buy a new bucket.
    let res = app.post_form_with("/auth/new", REQ, &[("x-forwarded-for", "203.0.113.50")]).await;
    assert_eq!(expect_status(res, 429).await["error"]["code"], "rate_limited");
    assert_eq!(app.host.received_requests().await.unwrap().len(), 3);
}
