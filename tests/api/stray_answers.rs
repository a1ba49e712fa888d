//! A host that writes an answer twice (a framework writing an error page after a
//! response, a buggy proxy): the copy must never be taken for the next check on
//! that connection. Each check carries a fresh `X-Check-Id`; a kept-alive
//! connection is reused only after an answer that echoed it, and an answer that
//! echoes another check's id fails closed. So whatever the host does, no check
//! ever carries another user's identity — over TCP and a Unix socket, with the
//! decision cache on and off, with the echo and without.
use crate::helpers::*;
use crate::raw_http::{header, next_request};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

/// What the host writes after each answer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Copy {
    /// The answer again.
    Same,
    /// A 401 without the echo (a stray denial).
    Denial,
}

/// How the hostile host answers each check.
#[derive(Clone, Copy, Debug)]
struct Hostile {
    /// Echo the check's `X-Check-Id` in the answer.
    echo: bool,
    /// What the copy is.
    copy: Copy,
    /// How long each check takes to answer.
    think: Duration,
    /// The answer is written once more this long after it (zero: in the same write).
    copy_after: Duration,
}

/// The user a check is for: the `user=NAME` cookie the browser sent.
fn user_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("cookie:").map(str::to_owned))
        .and_then(|c| c.trim().strip_prefix("user=").map(str::to_owned))
        .expect("every check carries the user cookie")
}

/// Serves one connection: each request answered with its user's identity after
/// `think`, and the same bytes again `copy_after` later.
async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(conn: S, h: Hostile, n: usize, seen: Seen) {
    let (mut read, write) = tokio::io::split(conn);
    let write = Arc::new(Mutex::new(write));
    let mut buf = Vec::new();
    while let Some(head) = next_request(&mut read, &mut buf).await {
        seen.lock().await.push((n, head.clone()));
        let body = format!(r#"{{"user_id":"{}"}}"#, user_of(&head));
        let echo = match (h.echo, header(&head, "x-check-id")) {
            (true, Some(id)) => format!("x-check-id: {id}\r\n"),
            _ => String::new(),
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{echo}\r\n{body}",
            body.len()
        );
        let copy = match h.copy {
            Copy::Same => answer.clone(),
            Copy::Denial => "HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}".to_owned(),
        };
        tokio::time::sleep(h.think).await;
        let first = if h.copy_after.is_zero() { format!("{answer}{copy}") } else { answer.clone() };
        if write.lock().await.write_all(first.as_bytes()).await.is_err() {
            return;
        }
        if !h.copy_after.is_zero() {
            let write = write.clone();
            tokio::spawn(async move {
                tokio::time::sleep(h.copy_after).await;
                let _ = write.lock().await.write_all(copy.as_bytes()).await;
            });
        }
    }
}

enum Transport {
    Tcp,
    Unix,
}

/// Every request the host read: (connection number from 1, request head).
type Seen = Arc<Mutex<Vec<(usize, String)>>>;

/// Starts the hostile host; returns the config lines that point the service at
/// it, and what it reads.
async fn hostile_host(transport: &Transport, h: Hostile) -> (String, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    let config = match transport {
        Transport::Tcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                for n in 1.. {
                    let Ok((conn, _)) = listener.accept().await else { return };
                    tokio::spawn(serve(conn, h, n, log.clone()));
                }
            });
            format!("url = \"http://127.0.0.1:{port}/check\"\n")
        }
        Transport::Unix => {
            let path =
                std::env::temp_dir().join(format!("stray-{}-{}.sock", std::process::id(), fastrand::u64(..)));
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            tokio::spawn(async move {
                for n in 1.. {
                    let Ok((conn, _)) = listener.accept().await else { return };
                    tokio::spawn(serve(conn, h, n, log.clone()));
                }
            });
            format!("url = \"http://localhost/check\"\nunix_socket = \"{}\"\n", path.display())
        }
    };
    (config, seen)
}

/// The service against the hostile host, with `extra` lines in `[session_check]`.
async fn app_against(target: &str, extra: &str) -> TestApp {
    spawn_app_with(|c| {
        let anchor = "[session_check]\n";
        assert_eq!(c.matches(anchor).count(), 1, "base config has one [session_check]");
        let c = c.edit(anchor, &format!("{anchor}{target}{extra}"));
        // The base URL line goes: the hostile host's own comes first in the section.
        let base_url =
            c.lines().filter(|l| l.starts_with("url = ")).nth(1).expect("base url line").to_owned();
        c.edit_first(&format!("{base_url}\n"), "")
    })
    .await
}

/// Signs `user` in on `old`; the signed identity, or the error status.
async fn sign_in(app: &TestApp, user: &str) -> Result<String, u16> {
    let cookie = format!("user={user}");
    let res = app.post_form_with("/auth/old/user", "socket_id=1234.1234", &[("cookie", &cookie)]).await;
    let status = res.status().as_u16();
    let body = res.text().await.unwrap();
    if status != 200 {
        assert_no_signature(&body);
        return Err(status);
    }
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let user_data: serde_json::Value = serde_json::from_str(answer["user_data"].as_str().unwrap()).unwrap();
    Ok(user_data["id"].as_str().unwrap().to_owned())
}

/// What a run saw: checks signed as their own user, refused, and the metric of answers not tied to their check.
#[derive(Debug, Default)]
struct Outcome {
    signed: usize,
    refused: usize,
    unmatched_metric: u64,
    transport_metric: u64,
}

/// alice alone, then bob, carol and dave at once, three rounds (twice over with
/// the cache on, so a wrong cached identity would show): every signed identity
/// must be the requester's own.
async fn run(transport: Transport, h: Hostile, cache: bool) -> Outcome {
    let (target, _) = hostile_host(&transport, h).await;
    let cache_line = if cache { "cache_ttl_ms = 5000\n" } else { "" };
    let app = app_against(&target, &format!("coalesce = false\n{cache_line}")).await;
    let mut outcome = Outcome::default();
    let passes = if cache { 2 } else { 1 };
    for _ in 0..passes {
        for _round in 0..3 {
            let mut results = vec![("alice", sign_in(&app, "alice").await)];
            let (b, c, d) = tokio::join!(sign_in(&app, "bob"), sign_in(&app, "carol"), sign_in(&app, "dave"));
            results.extend([("bob", b), ("carol", c), ("dave", d)]);
            for (user, result) in results {
                match result {
                    Ok(signed) => {
                        assert_eq!(signed, user, "{user} was signed in as {signed} ({h:?}, cache {cache})");
                        outcome.signed += 1;
                    }
                    Err(status) => {
                        assert_eq!(status, 502, "a stray answer fails closed with 502");
                        outcome.refused += 1;
                    }
                }
            }
            // Let the last copies land before the next round.
            tokio::time::sleep(h.copy_after + Duration::from_millis(20)).await;
        }
    }
    let metrics =
        app.client.get(format!("{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
    let count = |result: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("pusher_auth_session_check_duration_seconds_count"))
            .filter(|l| l.contains(&format!("result=\"{result}\"")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    outcome.unmatched_metric = count("unmatched");
    outcome.transport_metric = count("transport_error") + count("connect_error");
    outcome
}

fn hostile(echo: bool, think_ms: u64, copy_ms: u64) -> Hostile {
    Hostile {
        echo,
        copy: Copy::Same,
        think: Duration::from_millis(think_ms),
        copy_after: Duration::from_millis(copy_ms),
    }
}

/// The three shapes of the review: the copy in the same write, 5 ms later (after
/// the next check was sent, the host taking 30 ms a check) and 40 ms later (while
/// a 100 ms check is in flight).
const SHAPES: [(u64, u64); 3] = [(30, 0), (30, 5), (100, 40)];

#[tokio::test]
async fn without_the_echo_a_copy_is_never_taken_and_nothing_fails() {
    for (think, copy) in SHAPES {
        for cache in [false, true] {
            for transport in [Transport::Tcp, Transport::Unix] {
                let o = run(transport, hostile(false, think, copy), cache).await;
                // No echo: no connection is reused, so a copy has no check to land on.
                assert_eq!(o.refused, 0, "{o:?}");
                assert_eq!(o.signed, 12 * if cache { 2 } else { 1 }, "{o:?}");
            }
        }
    }
}

#[tokio::test]
async fn with_the_echo_a_copy_fails_closed_and_is_counted() {
    for (think, copy) in SHAPES {
        for cache in [false, true] {
            for transport in [Transport::Tcp, Transport::Unix] {
                let o = run(transport, hostile(true, think, copy), cache).await;
                eprintln!("echo, think {think} ms, copy after {copy} ms, cache {cache}: {o:?}");
                // Every answer taken was the requester's own (asserted in run); the
                // refusals are the copies caught by the echo, each counted.
                assert_eq!(o.unmatched_metric + o.transport_metric, o.refused as u64, "{o:?}");
                assert!(o.signed > 0, "{o:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_host_that_does_not_echo_gets_a_connection_per_check_that_it_closes() {
    let (target, seen) = hostile_host(&Transport::Tcp, hostile(false, 0, 0)).await;
    let app = app_against(&target, "").await;
    for user in ["alice", "bob", "carol"] {
        assert_eq!(sign_in(&app, user).await, Ok(user.to_owned()));
    }
    let seen = seen.lock().await;
    let connections: Vec<usize> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(connections, [1, 2, 3], "one connection per check");
    let closes = |head: &str| header(head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    // The first check hopes for the echo; once it is known missing, the host is
    // asked to close, so TIME_WAIT stays on its side rather than ours.
    assert!(!closes(&seen[0].1) && closes(&seen[1].1) && closes(&seen[2].1), "{seen:?}");
    let ids: std::collections::HashSet<&str> =
        seen.iter().map(|(_, h)| header(h, "x-check-id").unwrap()).collect();
    assert_eq!(ids.len(), 3, "a fresh X-Check-Id per check");
}

#[tokio::test]
async fn a_copy_written_while_the_connection_is_idle_closes_it() {
    // Each answer copied 20 ms later, while the connection is idle: the bytes
    // outside any answer close it, and the next check goes out on a new one.
    let (target, seen) = hostile_host(&Transport::Tcp, hostile(true, 0, 20)).await;
    let app = app_against(&target, "").await;
    for user in ["alice", "bob", "carol"] {
        assert_eq!(sign_in(&app, user).await, Ok(user.to_owned()));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let connections: Vec<usize> = seen.lock().await.iter().map(|(n, _)| *n).collect();
    assert_eq!(connections, [1, 2, 3], "a connection that carried stray bytes is not reused");
}

#[tokio::test]
async fn require_check_id_refuses_every_answer_without_the_echo() {
    let app = spawn_app_with(|c| {
        let anchor = "[session_check]\n";
        assert_eq!(c.matches(anchor).count(), 1);
        c.edit(anchor, &format!("{anchor}require_check_id = true\n"))
    })
    .await;
    for status in [200, 401, 403] {
        wiremock::Mock::given(wiremock::matchers::path("/check"))
            .respond_with(
                wiremock::ResponseTemplate::new(status).set_body_json(serde_json::json!({"user_id": "u"})),
            )
            .up_to_n_times(1)
            .mount(&app.host)
            .await;
        let body = expect_status(app.post_form("/auth/old/user", "socket_id=1234.1234").await, 502).await;
        assert_eq!(body["error"]["code"], "session_check_unmatched", "{status}: {body}");
    }
}

/// The review's `deny_copy_then_ok`: a stray 401 (no echo) after each answer. On
/// a kept-alive connection it must not be taken as the next user's denial (nor,
/// cached, keep refusing them): it fails closed as not this check's.
#[tokio::test]
async fn a_stray_denial_never_refuses_the_next_user() {
    for cache in [false, true] {
        let h = Hostile { copy: Copy::Denial, ..hostile(true, 30, 5) };
        let o = run(Transport::Tcp, h, cache).await;
        // run() asserts every 200 is the requester's and every refusal a 502 (never 403).
        assert_eq!(o.unmatched_metric + o.transport_metric, o.refused as u64, "{o:?}");
    }
}

/// A raw host for one answer shape: each request answered by `answer(check id)`.
async fn scripted_host(answer: fn(&str, usize) -> String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut buf, mut nth) = (Vec::new(), 0);
                while let Some(head) = next_request(&mut conn, &mut buf).await {
                    let id = header(&head, "x-check-id").unwrap_or_default().to_owned();
                    nth += 1;
                    if conn.write_all(answer(&id, nth).as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("url = \"http://127.0.0.1:{port}/check\"\n")
}

fn ok_with(id: &str, body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nx-check-id: {id}\r\ncontent-length: {}\r\n\r\n{body}", body.len())
}

/// The review's `mid_body`: the head is tied by its echo, but the body could be
/// another's. A body that names a `check_id` must name this check's.
#[tokio::test]
async fn a_body_naming_another_checks_id_signs_nothing() {
    let target =
        scripted_host(|id, _| ok_with(id, &format!(r#"{{"user_id":"alice","check_id":"{id}"}}"#))).await;
    let app = app_against(&target, "").await;
    assert_eq!(sign_in(&app, "alice").await, Ok("alice".to_owned()), "its own id in the body is taken");
    let target = scripted_host(|id, _| {
        ok_with(id, r#"{"user_id":"alice","check_id":"0f0e0d0c-0000-4000-8000-000000000000"}"#)
    })
    .await;
    let app = app_against(&target, "").await;
    assert_eq!(sign_in(&app, "bob").await, Err(502));
}

/// A host that times an idle kept-alive connection out with an unsolicited 408
/// took none of the check: it is asked once more on a new connection.
#[tokio::test]
async fn a_408_on_a_kept_alive_connection_is_asked_again() {
    let target = scripted_host(|id, nth| match nth {
        1 => ok_with(id, r#"{"user_id":"alice"}"#),
        _ => "HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_owned(),
    })
    .await;
    let app = app_against(&target, "").await;
    assert_eq!(sign_in(&app, "alice").await, Ok("alice".to_owned()));
    // The second check meets the 408 on the kept connection, and is signed from a new one.
    assert_eq!(sign_in(&app, "alice").await, Ok("alice".to_owned()));
}
