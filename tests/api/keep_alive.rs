//! The session check's own HTTP/1.1 client (`http://` URLs) against a raw host
//! that shows what the wire carries: connections are kept alive and reused, a
//! connection the host closed is never a failed check, chunked answers are read
//! and capped, and the request line and Host come from `url`. The host echoes
//! each check's `X-Check-Id`, as it must for its connections to be kept.
use crate::helpers::*;
use crate::raw_http::{header, next_request};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const REQ: &str = "socket_id=1234.1234&channel_name=private-foobar";
const IDENTITY: &str = r#"{"user_id":"u-1"}"#;

/// How the raw host ends each answer.
#[derive(Clone, Copy)]
enum Ending {
    /// Keep the connection open for the next request.
    KeepAlive,
    /// Close the connection this long after answering, without saying so
    /// (a host's idle keep-alive timeout).
    CloseAfter(Duration),
    /// Answer with `Connection: close` and close.
    ConnectionClose,
    /// Answer each connection's first request; read its second and close
    /// without answering (the host's idle timeout fired as the request came).
    SilentOnSecond,
    /// The same, resetting the connection (RST) instead of closing it.
    ResetOnSecond,
    /// Read each request and close without answering.
    Silent,
}

#[derive(Default)]
struct Seen {
    connections: usize,
    /// (connection number, request line, Host header)
    requests: Vec<(usize, String, String)>,
}

/// A host on a raw socket: reads each request (head and Content-Length body),
/// answers with `answer` (a full HTTP response), then does `after`.
async fn raw_host(answer: String, after: Ending) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let id = {
                let mut s = log.lock().unwrap();
                s.connections += 1;
                s.connections
            };
            let (log, answer) = (log.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = next_request(&mut conn, &mut buf).await {
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    let host = header(&head, "host").unwrap_or_default().to_owned();
                    log.lock().unwrap().requests.push((id, line, host));
                    let nth = log.lock().unwrap().requests.iter().filter(|r| r.0 == id).count();
                    match after {
                        Ending::Silent => return,
                        Ending::SilentOnSecond if nth == 2 => return,
                        Ending::ResetOnSecond if nth == 2 => {
                            socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO)).unwrap();
                            return;
                        }
                        _ => {}
                    }
                    // Echo the check's id, as a host that wants kept-alive connections does.
                    let echo = format!(
                        "x-check-id: {}\r\n",
                        header(&head, "x-check-id").expect("every check has an id")
                    );
                    let (status_line, rest) = answer.split_once("\r\n").expect("an answer has a status line");
                    let answer = format!("{status_line}\r\n{echo}{rest}");
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    match after {
                        Ending::KeepAlive => {}
                        Ending::CloseAfter(delay) => {
                            tokio::time::sleep(delay).await;
                            return;
                        }
                        Ending::ConnectionClose => return,
                        Ending::SilentOnSecond | Ending::ResetOnSecond | Ending::Silent => {}
                    }
                }
            });
        }
    });
    (port, seen)
}

fn ok_answer(extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn chunked(body: &str, piece: usize) -> String {
    let mut out = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    for part in body.as_bytes().chunks(piece) {
        out += &format!("{:x}\r\n{}\r\n", part.len(), std::str::from_utf8(part).unwrap());
    }
    out + "0\r\n\r\n"
}

async fn app_against(url: &str) -> TestApp {
    spawn_with_config(wiremock::MockServer::start().await, &base_config(url)).await
}

async fn signed(app: &TestApp) {
    let body = expect_status(app.post_form("/auth/new", REQ).await, 200).await;
    assert!(body["auth"].as_str().is_some_and(|a| a.starts_with(NEW_KEY)), "{body}");
}

#[tokio::test]
async fn sequential_checks_share_one_kept_alive_connection() {
    let (port, seen) = raw_host(ok_answer("", IDENTITY), Ending::KeepAlive).await;
    let app = app_against(&format!("http://127.0.0.1:{port}/internal/check?v=1")).await;
    for _ in 0..50 {
        signed(&app).await;
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 50, "one check per authorization");
    // One worker, one request at a time: the first connection carries them all.
    assert_eq!(seen.connections, 1, "connections opened for 50 sequential checks");
    for (_, line, host) in &seen.requests {
        assert_eq!(line, "POST /internal/check?v=1 HTTP/1.1");
        assert_eq!(host, &format!("127.0.0.1:{port}"));
    }
}

#[tokio::test]
async fn a_connection_the_host_closed_while_idle_is_never_a_failed_check() {
    // The host drops each connection 50 ms after answering (its keep-alive timeout).
    let (port, seen) = raw_host(ok_answer("", IDENTITY), Ending::CloseAfter(Duration::from_millis(50))).await;
    let app = app_against(&format!("http://127.0.0.1:{port}/check")).await;
    for _ in 0..5 {
        signed(&app).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 5);
    assert_eq!(seen.connections, 5, "each check after the host's close used a new connection");
}

#[tokio::test]
async fn connection_close_answers_are_honoured() {
    let (port, seen) = raw_host(ok_answer("connection: close\r\n", IDENTITY), Ending::ConnectionClose).await;
    let app = app_against(&format!("http://127.0.0.1:{port}/check")).await;
    for _ in 0..5 {
        signed(&app).await;
    }
    let seen = seen.lock().unwrap();
    assert_eq!((seen.requests.len(), seen.connections), (5, 5));
}

#[tokio::test]
async fn a_chunked_answer_is_read_whole_and_reused() {
    let identity = r#"{"user_id":"u-1","user_info":{"name":"Chunked Charlie"}}"#;
    let (port, seen) = raw_host(chunked(identity, 7), Ending::KeepAlive).await;
    let app = app_against(&format!("http://127.0.0.1:{port}/check")).await;
    let body = expect_status(
        app.post_form("/auth/new", "socket_id=1234.1234&channel_name=presence-room").await,
        200,
    )
    .await;
    let data: serde_json::Value = serde_json::from_str(body["channel_data"].as_str().unwrap()).unwrap();
    assert_eq!(data["user_info"]["name"], "Chunked Charlie");
    signed(&app).await;
    assert_eq!(seen.lock().unwrap().connections, 1);
}

#[tokio::test]
async fn a_chunked_answer_past_the_cap_signs_nothing() {
    // base_config caps answers at 4,096 bytes; no Content-Length announces this one.
    let big = format!(r#"{{"user_id":"u-1","user_info":{{"pad":"{}"}}}}"#, "x".repeat(5000));
    let (port, _) = raw_host(chunked(&big, 1000), Ending::KeepAlive).await;
    let app = app_against(&format!("http://127.0.0.1:{port}/check")).await;
    let res = app.post_form("/auth/new", REQ).await;
    let body = res.text().await.unwrap();
    // Read whole, the answer is a valid identity: only the cap refuses it.
    let error = assert_status(reqwest::StatusCode::BAD_GATEWAY, &body, 502);
    assert_no_signature(&body);
    assert_eq!(error["error"]["code"], "session_check_invalid", "{body}");
}

#[tokio::test]
async fn a_refusal_keeps_the_connection_for_the_next_check() {
    let refusal =
        "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nforbidden".to_owned();
    let (port, seen) = raw_host(refusal, Ending::KeepAlive).await;
    let app = app_against(&format!("http://127.0.0.1:{port}/check")).await;
    for _ in 0..5 {
        let res = app.post_form("/auth/new", REQ).await;
        let body = res.text().await.unwrap();
        assert_no_signature(&body);
        assert_status(reqwest::StatusCode::FORBIDDEN, &body, 403);
    }
    assert_eq!(seen.lock().unwrap().connections, 1);
}

#[tokio::test]
async fn checks_that_time_out_leave_no_connection_open() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A host that reads every request and never answers; it counts its open connections.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (open, opened) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (o, n) = (open.clone(), opened.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            o.fetch_add(1, Ordering::SeqCst);
            n.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let app = app_against(&format!("http://127.0.0.1:{port}/check")).await;
    // Distinct channels: identical checks would share one call.
    let forms: Vec<String> =
        (0..40).map(|i| format!("socket_id=1234.1234&channel_name=private-{i}")).collect();
    let posts = forms.iter().map(|form| app.post_form("/auth/new", form));
    for res in futures_util::future::join_all(posts).await {
        let body = res.text().await.unwrap();
        assert_no_signature(&body);
        assert!(body.contains("session_check_timeout"), "{body}");
    }
    assert_eq!(opened.load(Ordering::SeqCst), 40, "one connection per check in flight");
    // A connection whose check timed out is closed, never kept for the next check.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while open.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open.load(Ordering::SeqCst), 0, "connections left open after their checks timed out");
}

#[tokio::test]
async fn an_answer_head_past_64_kib_signs_nothing() {
    // 100 KiB of headers (ten of them) before a valid identity: refused, where
    // hyper's default buffer (~400 KiB) would have read it and signed.
    let padding: String = (0..10).map(|i| format!("x-pad-{i}: {}\r\n", "p".repeat(10_000))).collect();
    let (port, _) = raw_host(ok_answer(&padding, IDENTITY), Ending::KeepAlive).await;
    let app = app_against(&format!("http://127.0.0.1:{port}/check")).await;
    let res = app.post_form("/auth/new", REQ).await;
    let body = res.text().await.unwrap();
    assert_status(reqwest::StatusCode::BAD_GATEWAY, &body, 502);
    assert_no_signature(&body);
}

#[tokio::test]
async fn a_refusal_is_decided_by_its_status_not_held_up_by_its_body() {
    // 403 announcing 1,000 bytes of body and sending 3, then nothing.
    let stalled = "HTTP/1.1 403 Forbidden\r\ncontent-length: 1000\r\n\r\nabc".to_owned();
    let (port, seen) = raw_host(stalled, Ending::KeepAlive).await;
    let app = app_against(&format!("http://127.0.0.1:{port}/check")).await;
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let res = app.post_form("/auth/new", REQ).await;
        let body = res.text().await.unwrap();
        assert_status(reqwest::StatusCode::FORBIDDEN, &body, 403);
        assert_no_signature(&body);
        // The check's timeout is 500 ms: a 403 must not wait for the body.
        assert!(started.elapsed() < Duration::from_millis(300), "took {:?}", started.elapsed());
    }
    // The unread body's connection is not reused.
    assert_eq!(seen.lock().unwrap().connections, 2);
}

#[tokio::test]
async fn a_check_the_host_closed_unanswered_on_a_kept_alive_connection_is_asked_once_more() {
    for ending in [Ending::SilentOnSecond, Ending::ResetOnSecond] {
        let (port, seen) = raw_host(ok_answer("", IDENTITY), ending).await;
        let app = app_against(&format!("http://127.0.0.1:{port}/check")).await;
        for _ in 0..3 {
            signed(&app).await;
        }
        // Connection 1 answers check 1 and drops check 2, which is asked again on
        // connection 2 (its first request, answered); check 3 is dropped there and
        // answered on connection 3.
        let seen = seen.lock().unwrap();
        let per_connection: Vec<usize> = seen.requests.iter().map(|r| r.0).collect();
        assert_eq!(per_connection, [1, 1, 2, 2, 3], "requests by connection");
    }
}

#[tokio::test]
async fn a_check_on_a_new_connection_the_host_closed_unanswered_is_not_asked_again() {
    let (port, seen) = raw_host(ok_answer("", IDENTITY), Ending::Silent).await;
    let app = app_against(&format!("http://127.0.0.1:{port}/check")).await;
    for _ in 0..2 {
        let body = expect_status(app.post_form("/auth/new", REQ).await, 502).await;
        assert!(body.get("auth").is_none(), "{body}");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 2, "one request per check: no second attempt");
    assert_eq!(seen.connections, 2);
}
