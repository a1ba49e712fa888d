//! The attacks of the black-box review (issue #14), each performed from
//! outside against the running server: what a stranger with a raw socket or
//! an HTTP client could do to the newer surfaces.
use crate::helpers::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::{Mock, MockServer, Request, ResponseTemplate, matchers::path};

/// Sends `head` (and no body) on a raw socket; returns the status line's code and how long it took.
async fn raw_head(address: &str, head: &str) -> (u16, Duration) {
    let addr = address.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, started.elapsed())
}

#[tokio::test]
async fn unconfigured_features_are_not_mounted_and_admin_surfaces_are_not_public() {
    let app = spawn_app().await;
    // A body announced but never sent: answered at once, never waited for.
    for route in ["/webhooks", "/apps/2222/events"] {
        let head = format!("POST {route} HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n");
        let (code, took) = raw_head(&app.address, &head).await;
        assert_eq!(code, 404, "{route}");
        assert!(took < Duration::from_secs(1), "{route} waited for the body: {took:?}");
    }
    for route in ["/metrics", "/status", "/status.html"] {
        let public = app.client.get(format!("{}{route}", app.address)).send().await.unwrap();
        assert_eq!(public.status(), 404, "{route} is public");
        let admin = app.client.get(format!("{}{route}", app.admin)).send().await.unwrap();
        assert_eq!(admin.status(), 200, "{route} on the admin listener");
    }
}

#[tokio::test]
async fn an_outsider_does_not_share_an_insiders_check() {
    // The host decides by address: only 203.0.113.5 is allowed, and it answers slowly.
    let app =
        spawn_app_with(|c| c.edit("workers = 1", "workers = 1\ntrusted_proxies = [\"127.0.0.1\"]")).await;
    let insider = |r: &Request| {
        r.headers.get("x-forwarded-for").is_some_and(|v| v.to_str().unwrap_or("").starts_with("203.0.113.5,"))
    };
    Mock::given(path("/check"))
        .and(insider)
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({})).set_delay(Duration::from_millis(400)),
        )
        .mount(&app.host)
        .await;
    Mock::given(path("/check")).respond_with(ResponseTemplate::new(403)).mount(&app.host).await;
    // The same cookie and channel from `ip`, after `delay_ms` (the insider's check is then in flight).
    let post = |socket: &'static str, ip: &'static str, delay_ms: u64| {
        let app = &app;
        async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let body = format!("socket_id={socket}&channel_name=private-a");
            let headers = [("cookie", "session=shared-looking"), ("x-forwarded-for", ip)];
            app.post_form_with("/auth/new", &body, &headers).await
        }
    };
    let (inside, outside, tab2) = tokio::join!(
        post("1.1", "203.0.113.5", 0),
        post("2.2", "198.51.100.9", 100),
        // A second tab of the insider (same address, same cookie): shares the call.
        post("3.3", "203.0.113.5", 100),
    );
    expect_status(inside, 200).await;
    expect_status(outside, 403).await;
    expect_status(tab2, 200).await;
    assert_eq!(app.host.received_requests().await.unwrap().len(), 2, "insider tabs share one call");
}

#[tokio::test]
async fn the_rate_limit_charges_each_session_check() {
    const ORIGIN: &str = "https://app.example.com";
    let app = spawn_app_with(|c| {
        let c = c.edit(
            "workers = 1",
            &format!("workers = 1\nallowed_origins = [\"{ORIGIN}\"]\ntrusted_proxies = [\"127.0.0.1\"]"),
        );
        format!("{c}\n[rate_limit]\nenabled = true\nper_second = 1\nburst = 2\n")
    })
    .await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&app.host)
        .await;
    let xff = |ip: &'static str| [("x-forwarded-for", ip)];
    // Three batches of 100 channels from one client: only the bucket's tokens reach the host.
    let batch: String = std::iter::once("socket_id=1.1".to_string())
        .chain((0..100).map(|i| format!("channel_name[{i}]=private-c{i}")))
        .collect::<Vec<_>>()
        .join("&");
    let mut granted = 0;
    for _ in 0..3 {
        let body = expect_status(app.post_form_with("/auth/new", &batch, &xff("192.0.2.1")).await, 200).await;
        let entries = body.as_object().unwrap();
        assert_eq!(entries.len(), 100);
        granted += entries.values().filter(|e| e["status"] == 200).count();
        assert!(entries.values().all(|e| e["status"] == 200 || e["status"] == 429));
    }
    let calls = app.host.received_requests().await.unwrap().len();
    assert_eq!(calls, granted, "every host call was charged");
    assert!((2..=4).contains(&calls), "300 channels made {calls} host calls under burst 2, 1/s");

    // Preflights cost nothing; a 429 carries CORS headers so the browser can read it.
    for _ in 0..10 {
        let pre = app
            .client
            .request(reqwest::Method::OPTIONS, format!("{}/auth/new", app.address))
            .header("origin", ORIGIN)
            .header("access-control-request-method", "POST")
            .header("x-forwarded-for", "192.0.2.2")
            .send()
            .await
            .unwrap();
        assert_eq!(pre.status(), 204);
    }
    let origin = ("origin", ORIGIN);
    let one = "socket_id=1.1&channel_name=private-a";
    for _ in 0..2 {
        expect_status(
            app.post_form_with("/auth/new", one, &[origin, ("x-forwarded-for", "192.0.2.2")]).await,
            200,
        )
        .await;
    }
    let limited = app.post_form_with("/auth/new", one, &[origin, ("x-forwarded-for", "192.0.2.2")]).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["access-control-allow-origin"], ORIGIN);
    assert_retry_after_spread(limited.headers().get("retry-after").and_then(|v| v.to_str().ok()));
    assert_no_signature(&limited.text().await.unwrap());

    // IPv6: one /64 is one client; the next /64 is another.
    for (ip, status) in [
        ("2001:db8:1:2::1", 200),
        ("2001:db8:1:2::2", 200),
        ("2001:db8:1:2:ffff::9", 429),
        ("2001:db8:1:3::1", 200),
    ] {
        let res = app.post_form_with("/auth/new", one, &xff(ip)).await;
        assert_eq!(res.status(), status, "{ip}");
    }
}

async fn webhook_app(receiver: &MockServer, extra: &str) -> TestApp {
    let w = receiver.uri();
    let extra = extra.to_owned();
    spawn_app_with(move |c| {
        format!("{c}\n[webhooks]\nforward_url = \"{w}/hook\"\nkey = \"k\"\nsecret = \"s\"\n{extra}")
    })
    .await
}

async fn deliveries(receiver: &MockServer) -> Vec<Value> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn replayed_and_stale_webhooks_are_not_applied() {
    let receiver = MockServer::start().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let app = webhook_app(&receiver, "").await;
    let now = crate::helpers::now_ms();
    let add = json!({"name": "member_added", "channel": "presence-r", "user_id": "42"});
    let body = json!({"time_ms": now - 1000, "events": [add]}).to_string();
    assert_eq!(post_webhook_body(&app, OLD_KEY, OLD_SECRET, &body).await, 200);
    let got = deliveries(&receiver).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["time_ms"], now - 1000, "the source's time_ms is forwarded");

    // The same signed body again: acknowledged, not applied or forwarded again.
    assert_eq!(post_webhook_body(&app, OLD_KEY, OLD_SECRET, &body).await, 200);
    // A captured old webhook, validly signed: refused.
    let rm = json!({"name": "member_removed", "channel": "presence-r", "user_id": "42"});
    let old = json!({"time_ms": now - 3_600_000, "events": [rm]}).to_string();
    assert_eq!(post_webhook_body(&app, OLD_KEY, OLD_SECRET, &old).await, 400);
    let undated = json!({"events": [rm]}).to_string();
    assert_eq!(post_webhook_body(&app, OLD_KEY, OLD_SECRET, &undated).await, 400);
    assert_eq!(deliveries(&receiver).await.len(), 1, "nothing more was forwarded");

    // An announced body that never comes, with a known (public) key: 408 at the body deadline.
    let head = format!(
        "POST /webhooks HTTP/1.1\r\nHost: x\r\nX-Pusher-Key: {OLD_KEY}\r\nX-Pusher-Signature: 00\r\nContent-Length: 1000\r\n\r\n"
    );
    let (code, took) = raw_head(&app.address, &head).await;
    assert_eq!(code, 408);
    assert!(took < Duration::from_secs(7), "{took:?}");
    // An unknown key is refused before the body: no wait at all.
    let (code, took) = raw_head(&app.address, &head.edit(OLD_KEY, "stranger")).await;
    assert_eq!(code, 401);
    assert!(took < Duration::from_secs(1));
}

#[tokio::test]
async fn presence_members_are_reconciled_at_start_with_retries() {
    let receiver = MockServer::start().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    // The old app's REST API fails twice, then lists a presence channel with a member.
    let rest = MockServer::start().await;
    Mock::given(path("/apps/1111/channels"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&rest)
        .await;
    rest_json(&rest, "/apps/1111/channels", json!({"channels": {"presence-r": {}}})).await;
    rest_json(&rest, "/apps/1111/channels/presence-r/users", json!({"users": [{"id": "7"}]})).await;
    rest_json(&rest, "/apps/2222/channels", json!({"channels": {}})).await;
    let (r, w) = (rest.uri(), receiver.uri());
    let app = spawn_app_with(move |c| with_rest_and_webhooks(c, &r, &w, "")).await;
    // Retries after 1 s and 2 s.
    tokio::time::sleep(Duration::from_millis(3800)).await;
    let rm = json!({"name": "member_removed", "channel": "presence-r", "user_id": "7"});
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, json!([rm])).await, 200);
    let got = deliveries(&receiver).await;
    assert_eq!(got.len(), 1, "the member present before the start is removed: {got:?}");
    assert_eq!(got[0]["events"][0]["name"], "member_removed");
}
