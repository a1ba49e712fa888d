//! Host faults against real (misbehaving) upstream servers: every one maps to
//! the status table, nothing is signed, nothing hangs.
use crate::helpers::*;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::path};

const REQ: &str = "socket_id=1234.1234&channel_name=private-foobar";

/// A raw TCP "host" that reads the request and then does `behave` with the socket.
async fn raw_host<F, Fut>(behave: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let behave = std::sync::Arc::new(behave);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let behave = behave.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                // Read until the end of the JSON body (it ends with '}').
                while !seen.ends_with(b"}") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                behave(sock).await;
            });
        }
    });
    format!("http://{addr}/check")
}

async fn app_against(url: &str) -> TestApp {
    spawn_with_config(MockServer::start().await, &base_config(url)).await
}

async fn expect_within(app: &TestApp, status: u16, limit: Duration) -> serde_json::Value {
    let started = Instant::now();
    let body = expect_status(app.post_form("/auth/new", REQ).await, status).await;
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    body
}

#[tokio::test]
async fn a_host_that_closes_without_answering_is_502() {
    let url = raw_host(|sock| async move { drop(sock) }).await;
    expect_within(&app_against(&url).await, 502, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_host_that_resets_mid_body_is_502() {
    let url = raw_host(|mut sock| async move {
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"user_id\":")
            .await;
        let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO)); // RST, not FIN
        drop(sock);
    })
    .await;
    expect_within(&app_against(&url).await, 502, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_drip_fed_body_hits_the_total_timeout() {
    let url = raw_host(|mut sock| async move {
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n")
            .await;
        for _ in 0..50 {
            if sock.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await; // 5 s in all; timeout_ms = 500
        }
    })
    .await;
    let body = expect_within(&app_against(&url).await, 504, Duration::from_secs(2)).await;
    assert_eq!(body["error"]["code"], "session_check_timeout");
}

#[tokio::test]
async fn a_host_that_never_answers_is_504() {
    let url = raw_host(|sock| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(sock);
    })
    .await;
    expect_within(&app_against(&url).await, 504, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn garbage_instead_of_http_is_502() {
    let url = raw_host(|mut sock| async move {
        let _ = sock.write_all(b"\x00\x01garbage that is not HTTP\r\n\r\n").await;
    })
    .await;
    expect_within(&app_against(&url).await, 502, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn an_endless_body_is_cut_at_the_cap_quickly() {
    // Chunked, unbounded: memory must stay bounded by max_response_bytes.
    let url = raw_host(|mut sock| async move {
        let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
        let chunk = format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536));
        for _ in 0..2000 {
            if sock.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let body = expect_within(&app_against(&url).await, 502, Duration::from_secs(2)).await;
    assert_eq!(body["error"]["code"], "session_check_invalid");
}

#[tokio::test]
async fn a_redirect_loop_is_one_call_and_a_502() {
    let app = spawn_app().await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", "/check"))
        .expect(1)
        .mount(&app.host)
        .await;
    expect_within(&app, 502, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_flapping_host_under_load_never_yields_an_unapproved_signature() {
    // The host answers 200, 500, 403, garbage, slow... in turn, while 200 requests run 20 at a time.
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = counter.clone();
    let url = raw_host(move |mut sock| {
        let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let reply: &[u8] = match n % 5 {
                0 => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                1 => b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
                2 => b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n",
                3 => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n<html",
                _ => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
                }
            };
            let _ = sock.write_all(reply).await;
            let _ = sock.shutdown().await;
        }
    })
    .await;
    let app = app_against(&url).await;
    let started = Instant::now();
    let results: Vec<(u16, String)> =
        futures_util::StreamExt::collect(futures_util::StreamExt::buffer_unordered(
            futures_util::stream::iter((0..200).map(|_| async {
                let res = app.post_form("/auth/new", REQ).await;
                (res.status().as_u16(), res.text().await.unwrap())
            })),
            20,
        ))
        .await;
    let mut by_status = std::collections::BTreeMap::new();
    for (status, body) in &results {
        *by_status.entry(*status).or_insert(0) += 1;
        if *status == 200 {
            assert_eq!(
                body,
                &json!({"auth": "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"})
                    .to_string()
            );
        } else {
            assert_no_signature(body);
        }
    }
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    // Each fault shows up; no request got anything else.
    for status in [200, 403, 502, 504] {
        assert!(by_status.get(&status).copied().unwrap_or(0) > 0, "no {status} in {by_status:?}");
    }
    assert_eq!(by_status.values().sum::<i32>(), 200, "{by_status:?}");
    assert!(by_status.keys().all(|s| [200, 403, 502, 504].contains(s)), "{by_status:?}");
}
