//! Storm protection through the HTTP API: coalescing of identical concurrent
//! checks, and the optional decision cache.
use crate::helpers::*;
use serde_json::json;
use std::time::Duration;
use wiremock::{Mock, ResponseTemplate, matchers::path};

#[tokio::test]
async fn identical_concurrent_checks_reach_the_host_once_and_each_gets_its_own_signature() {
    let app = spawn_app().await;
    Mock::given(path("/check"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({})).set_delay(Duration::from_millis(200)),
        )
        .mount(&app.host)
        .await;
    // The same session re-authorizing one channel from 10 new sockets at once (a reconnect storm).
    let requests = (0..10).map(|i| {
        let app = &app;
        async move {
            let body = format!("socket_id={i}.1&channel_name=private-storm");
            let res = app.post_form_with("/auth/new", &body, &[("cookie", "session=same")]).await;
            (i, expect_status(res, 200).await)
        }
    });
    let results = futures_util::future::join_all(requests).await;
    for (i, body) in results {
        let expected = format!("{NEW_KEY}:{}", sign(NEW_SECRET, &format!("{i}.1:private-storm")));
        assert_eq!(body["auth"], expected, "socket {i} is signed for itself");
    }
    assert_eq!(app.host.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn different_credentials_are_never_coalesced() {
    let app = spawn_app().await;
    Mock::given(path("/check"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({})).set_delay(Duration::from_millis(100)),
        )
        .mount(&app.host)
        .await;
    let requests = (0..5).map(|i| {
        let app = &app;
        async move {
            let cookie = format!("session=user{i}");
            let res = app
                .post_form_with("/auth/new", "socket_id=1.1&channel_name=private-x", &[("cookie", &cookie)])
                .await;
            expect_status(res, 200).await
        }
    });
    futures_util::future::join_all(requests).await;
    assert_eq!(app.host.received_requests().await.unwrap().len(), 5);
}

#[tokio::test]
async fn the_cache_remembers_grants_longer_than_denials_and_never_errors() {
    let app = spawn_app_with(|c| {
        c.edit("timeout_ms = 500", "timeout_ms = 500\ncache_ttl_ms = 1000\ncache_deny_ttl_ms = 100")
    })
    .await;
    Mock::given(path("/check"))
        .and(wiremock::matchers::header("cookie", "session=ok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&app.host)
        .await;
    Mock::given(path("/check"))
        .and(wiremock::matchers::header("cookie", "session=no"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&app.host)
        .await;
    Mock::given(path("/check")).respond_with(ResponseTemplate::new(500)).mount(&app.host).await;
    let post = |socket: &'static str, cookie: &'static str| {
        let app = &app;
        async move {
            let body = format!("socket_id={socket}&channel_name=private-c");
            app.post_form_with("/auth/new", &body, &[("cookie", cookie)]).await.status().as_u16()
        }
    };
    let calls = || async { app.host.received_requests().await.unwrap().len() };

    assert_eq!(post("1.1", "session=ok").await, 200);
    assert_eq!(post("2.2", "session=ok").await, 200, "a new socket, same session: from the cache");
    assert_eq!(calls().await, 1);
    assert_eq!(post("1.1", "session=no").await, 403);
    assert_eq!(post("1.1", "session=no").await, 403);
    assert_eq!(calls().await, 2, "the denial was cached");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(post("1.1", "session=no").await, 403);
    assert_eq!(calls().await, 3, "the denial expired after 100 ms");
    assert_eq!(post("3.3", "session=ok").await, 200);
    assert_eq!(calls().await, 3, "the grant is still cached");
    assert_eq!(post("1.1", "session=err").await, 502);
    assert_eq!(post("1.1", "session=err").await, 502);
    assert_eq!(calls().await, 5, "errors are never cached");
}

/// Past `max_in_flight` host calls, a request is refused at once with 503 and
/// Retry-After (nothing signed, the host not called), like a proxy's circuit
/// breaker; the slots free up as answers come back.
#[tokio::test]
async fn past_max_in_flight_checks_are_refused_at_once_and_the_host_is_spared() {
    let app = spawn_app_with(|c| c.edit("timeout_ms = 500", "timeout_ms = 3000\nmax_in_flight = 3")).await;
    // The host takes 1.5 s: a refusal well before that was not queued behind it.
    Mock::given(path("/check"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({})).set_delay(Duration::from_millis(1500)),
        )
        .mount(&app.host)
        .await;
    // Eight different users at once: no coalescing, eight distinct checks.
    let requests = (0..8).map(|i| {
        let app = &app;
        async move {
            let cookie = format!("session=user{i}");
            let started = std::time::Instant::now();
            let res = app
                .post_form_with("/auth/new", "socket_id=1.1&channel_name=private-x", &[("cookie", &cookie)])
                .await;
            let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            (res.status().as_u16(), retry_after, started.elapsed(), res.text().await.unwrap())
        }
    });
    let results = futures_util::future::join_all(requests).await;
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(results.iter().filter(|r| r.0 == 200).count(), 3, "{results:?}");
    assert_eq!(busy.len(), 5, "{results:?}");
    for (_, retry_after, took, body) in &busy {
        assert_retry_after_spread(retry_after.as_deref());
        assert!(*took < Duration::from_millis(1000), "refused at once, not queued: {took:?}");
        assert!(body.contains("session_check_busy") && !body.contains("\"auth\""), "{body}");
    }
    assert_eq!(app.host.received_requests().await.unwrap().len(), 3, "the host saw only the admitted checks");
    // The slots are free again once the answers are in.
    let res = app
        .post_form_with("/auth/new", "socket_id=1.1&channel_name=private-x", &[("cookie", "session=later")])
        .await;
    expect_status(res, 200).await;
    let metrics =
        app.client.get(format!("{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("result=\"busy\""), "the refusals are counted");
}
