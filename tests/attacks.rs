//! Attacks from outside against the real binary, measuring its memory: bodies
//! held open on the unauthenticated surfaces, and requests reset while their
//! session check is in flight. Figures are printed (`--nocapture`); the sizes
//! can be raised for a benchmark run with ATTACK_CONNECTIONS / ATTACK_RESETS,
//! and DUAL_AUTH_BIN runs the same attacks against another build.
mod common;

use common::{Edit, Service, TempDir, env_or};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const BODY_TIMEOUT_MS: u64 = 3000;
const CHECK_TIMEOUT_MS: u64 = 5000;
const MIB: u64 = 1024;
/// What an attack may add to the service's RSS. The issue's target is 64 MiB in
/// all for the release build (measured there: peak 36-46 MiB); the debug build
/// these tests run starts higher (36 MiB) and varies more (+22 to +40 MiB for
/// the same attack, allocator fragmentation), so the bound is on growth, with
/// room for that. Before the fix: +400 MiB and more.
const MAX_GROWTH_MIB: u64 = 48;

/// One attack at a time: parallel attacks would measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Only keys an older build also knows, so DUAL_AUTH_BIN can point at one.
fn config(host: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
admin_listen = "127.0.0.1:{{admin}}"
workers = 2
body_timeout_ms = {BODY_TIMEOUT_MS}
[session_check]
url = "{host}/check"
timeout_ms = {CHECK_TIMEOUT_MS}
[apps.old]
app_id = "1111"
key = "old-key"
secret = "old-secret"
rest_url = "http://127.0.0.1:9"
[apps.new]
app_id = "2222"
key = "new-key"
secret = "new-secret"
rest_url = "http://127.0.0.1:9"
[publish]
app_id = "pub"
key = "pub-key"
secret = "pub-secret"
targets = ["old", "new"]
[webhooks]
forward_url = "http://127.0.0.1:9/hook"
key = "hook-key"
secret = "hook-secret"
[log]
level = "warn"
"#
    )
}

/// A session check that accepts connections and never answers: every check stays in flight.
/// A host that accepts and never answers; counts the connections it was given
/// and releases each once the service hangs up on it.
async fn silent_host() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                // Read (and drop) the request; end when the service closes its side.
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

#[derive(Debug, Default)]
struct Held {
    answered: usize,
    closed: usize,
    still_open: usize,
    slowest: Duration,
}

/// Opens `n` connections that each send `head` and `sent` body bytes and then
/// hold; waits for each to be answered or closed (up to the body deadline + 2 s).
async fn hold_bodies(port: u16, head: String, sent: usize, n: usize) -> Held {
    let limit = Duration::from_millis(BODY_TIMEOUT_MS + 2000);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let head = head.clone();
            tokio::spawn(async move {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
                s.write_all(head.as_bytes()).await.ok()?;
                let _ = s.write_all(&vec![b'a'; sent]).await;
                let started = Instant::now();
                let mut buf = [0u8; 64];
                let outcome = match tokio::time::timeout(limit, s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => "answered",
                    Ok(_) => "closed",
                    Err(_) => "open",
                };
                Some((outcome, started.elapsed()))
            })
        })
        .collect();
    let mut held = Held::default();
    for t in tasks {
        match t.await.unwrap() {
            Some(("answered", d)) => {
                held.answered += 1;
                held.slowest = held.slowest.max(d);
            }
            Some(("closed", d)) => {
                held.closed += 1;
                held.slowest = held.slowest.max(d);
            }
            _ => held.still_open += 1,
        }
    }
    held
}

async fn held_body_attack(surface: &str, head: impl Fn(usize) -> String) {
    let _one = ONE_AT_A_TIME.lock().await;
    let n = env_or("ATTACK_CONNECTIONS", 500);
    let dir = TempDir::new(&format!("attack-{surface}"));
    let service = Service::start(&dir, &config(&silent_host().await.0));
    let (start_rss, _) = service.rss_kib();
    // The issue's shape (one byte short of 256 KiB), and one byte short of this build's cap.
    let shapes: Vec<usize> = std::env::var("ATTACK_SHAPES")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|_| vec![262_000, 64 * 1024]);
    for declared in shapes {
        let started = Instant::now();
        let held = hold_bodies(service.port, head(declared), declared - 1, n).await;
        let (rss, peak) = service.rss_kib();
        println!(
            "{surface}: {n} connections holding {} of {declared} bytes: {} answered, {} closed, {} still open \
             (slowest {} ms, run {} ms); RSS {} → {} MiB, peak {} MiB",
            declared - 1,
            held.answered,
            held.closed,
            held.still_open,
            held.slowest.as_millis(),
            started.elapsed().as_millis(),
            start_rss / MIB,
            rss / MIB,
            peak / MIB
        );
        assert_eq!(held.still_open, 0, "{surface}: connections left hanging past the body deadline");
        assert!(
            peak.saturating_sub(start_rss) < MAX_GROWTH_MIB * MIB,
            "{surface}: RSS grew {} → {} MiB",
            start_rss / MIB,
            peak / MIB
        );
    }
    assert!(service.stop(), "clean exit after the attack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_webhook_bodies_are_bounded_and_timed_out() {
    // The app key is public (it is in every browser), so the attacker has it.
    held_body_attack("webhooks", |len| {
        format!(
            "POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Pusher-Key: new-key\r\n\
             X-Pusher-Signature: 00\r\nContent-Length: {len}\r\n\r\n"
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_publish_bodies_without_a_signature_are_never_read() {
    held_body_attack("publish", |len| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        format!(
            "POST /apps/pub/events?auth_key=pub-key&auth_timestamp={now}&auth_version=1.0&body_md5=00&auth_signature=00 \
             HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reset_during_their_check_leave_nothing_behind() {
    let _one = ONE_AT_A_TIME.lock().await;
    let n = env_or("ATTACK_RESETS", 2000);
    let batch = 200.min(n);
    let dir = TempDir::new("attack-reset");
    let (host, host_connections) = silent_host().await;
    let service = Service::start(&dir, &config(&host));
    let in_flight = || service.metric("pusher_auth_session_checks_in_flight");
    let (start_rss, _) = service.rss_kib();
    let started = Instant::now();
    let mut peak_in_flight = 0.0f64;
    for first in (0..n).step_by(batch) {
        let mut conns = Vec::new();
        for i in first..(first + batch).min(n) {
            // A unique extra param: a unique coalescing key per request.
            let body = format!("socket_id=1.1&channel_name=private-a&x={i}");
            let mut s = TcpStream::connect(("127.0.0.1", service.port)).await.unwrap();
            let head = format!(
                "POST /auth/new HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            conns.push(s);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        if first == 0 {
            peak_in_flight = in_flight();
        }
        for s in conns {
            // RST instead of FIN: the client vanishes mid-request.
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
            drop(s);
        }
    }
    // Resets are noticed as the workers get to them (most within a few hundred
    // ms); a straggler ends at the host timeout at the latest. Before the fix an
    // entry stayed in the map for good.
    let attack_ms = started.elapsed().as_millis();
    let drain = Instant::now();
    let mut left = in_flight();
    while left > 0.0 && drain.elapsed() < Duration::from_millis(CHECK_TIMEOUT_MS + 5000) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = in_flight();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss, peak) = service.rss_kib();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", service.pid())).map(|d| d.count()).unwrap_or(0);
    println!(
        "reset mid-check: {n} requests reset while their session check was in flight ({attack_ms} ms): \
         checks in flight {peak_in_flight} during the first batch, {left} after {} ms; {fds} fds open; \
         {} host connections opened; RSS {} → {} MiB (peak {} MiB)",
        drain.elapsed().as_millis(),
        host_connections.load(Ordering::Relaxed),
        start_rss / MIB,
        rss / MIB,
        peak / MIB
    );
    assert!(peak_in_flight >= (batch / 2) as f64, "the checks were in flight: {peak_in_flight}");
    assert_eq!(left, 0.0, "cancelled checks left entries behind");
    assert!(service.stop());
}

/// A flood of distinct checks against a host that does not answer: at most
/// `session_check.max_in_flight` (default 1024) reach the host; the rest are
/// refused at once with 503 instead of piling up connections and memory behind
/// it. Every request is answered, none is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_against_a_silent_host_is_capped_at_max_in_flight() {
    let _one = ONE_AT_A_TIME.lock().await;
    let n = env_or("ATTACK_FLOOD", 3000);
    let dir = TempDir::new("attack-flood");
    let (host, host_connections) = silent_host().await;
    let service = Service::start(&dir, &config(&host));
    let (start_rss, _) = service.rss_kib();
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let port = service.port;
            tokio::spawn(async move {
                let body = format!("socket_id=1.1&channel_name=private-a&x={i}");
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
                let head = format!(
                    "POST /auth/new HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(head.as_bytes()).await.ok()?;
                let mut answer = Vec::new();
                let deadline = Duration::from_millis(CHECK_TIMEOUT_MS + 5000);
                tokio::time::timeout(deadline, s.read_to_end(&mut answer)).await.ok()?.ok()?;
                Some(String::from_utf8_lossy(&answer).into_owned())
            })
        })
        .collect();
    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    let mut signed = 0;
    for t in tasks {
        let answer = t.await.unwrap().unwrap_or_default();
        let status = answer.split(' ').nth(1).unwrap_or("none").to_owned();
        signed += answer.contains("\"auth\"") as usize;
        *by_status.entry(status).or_default() += 1;
    }
    let (rss, peak) = service.rss_kib();
    let opened = host_connections.load(Ordering::Relaxed);
    println!(
        "flood: {n} distinct checks against a silent host in {} ms: statuses {by_status:?}; {opened} host \
         connections opened; RSS {} → {} MiB (peak {} MiB)",
        started.elapsed().as_millis(),
        start_rss / MIB,
        rss / MIB,
        peak / MIB
    );
    assert_eq!(signed, 0);
    assert_eq!(by_status.get("none"), None, "every request is answered");
    assert!(opened <= 1024, "host connections beyond max_in_flight: {opened}");
    // Measured: release 23 → 46 MiB (peak 103), debug 37 → 115 (peak 117); before
    // the cap, release peaked at 227 MiB for 3,000 and 485 MiB for 8,000.
    assert!((peak - start_rss) / MIB < 160, "RSS grew {} MiB", (peak - start_rss) / MIB);
    assert_eq!(by_status.get("503").copied().unwrap_or(0) + by_status.get("504").copied().unwrap_or(0), n);
    assert!(service.stop());
}

/// A client bound to another loopback address than the attacker's (127.0.0.1):
/// the legitimate user or Pusher, seen by the service as another client.
fn other_client(ip: [u8; 4]) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The key checked before a webhook body is public (it is in every page), so
/// anyone can hold body-reader slots: 70 connections declaring 65,000 bytes
/// and sending one a second. Pusher (another address) must still get its
/// webhooks accepted: each client has a share of the slots, and a body must
/// arrive within 2 s. Before: 38 of 38 genuine webhooks got 503 over 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_holding_webhook_bodies_cannot_starve_genuine_webhooks() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (attackers, secs) = (env_or("ATTACK_WEBHOOK_CONNECTIONS", 70), env_or("ATTACK_WEBHOOK_SECS", 12));
    let dir = TempDir::new("attack-webhook-slots");
    let (host, _) = silent_host().await;
    let service = Service::start(&dir, &config(&host));
    let port = service.port;
    let stop_at = Instant::now() + Duration::from_secs(secs as u64);
    let held = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..attackers)
        .map(|_| {
            let held = held.clone();
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else { continue };
                    let head = "POST /webhooks HTTP/1.1\r\nHost: x\r\nX-Pusher-Key: old-key\r\n\
                                Content-Type: application/json\r\nContent-Length: 65000\r\n\r\n";
                    if s.write_all(head.as_bytes()).await.is_err() {
                        continue;
                    }
                    held.fetch_add(1, Ordering::Relaxed);
                    // One byte a second until the service answers or hangs up.
                    while Instant::now() < stop_at && s.write_all(b"{").await.is_ok() {
                        let mut buf = [0u8; 256];
                        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                            Err(_) => continue,
                            Ok(_) => break,
                        }
                    }
                    held.fetch_sub(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pusher = other_client([127, 0, 0, 2]);
    let (mut sent, mut accepted, mut statuses) = (0, 0, std::collections::BTreeMap::<u16, usize>::new());
    while Instant::now() + Duration::from_secs(1) < stop_at {
        let body = serde_json::json!({"time_ms": now_ms(),
            "events": [{"name": "channel_occupied", "channel": format!("private-genuine-{sent}")}]})
        .to_string();
        let signature = pusher_dual_auth::pusher::hmac_sha256_hex(b"old-secret", body.as_bytes());
        let status = pusher
            .post(format!("http://127.0.0.1:{port}/webhooks"))
            .header("content-type", "application/json")
            .header("x-pusher-key", "old-key")
            .header("x-pusher-signature", signature)
            .body(body)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        sent += 1;
        accepted += (status == 200) as usize;
        *statuses.entry(status).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let attackers_holding = held.load(Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let (_, peak) = service.rss_kib();
    println!(
        "webhook slots: {attackers} slow senders ({attackers_holding} connected at the end) for {secs} s; \
         genuine webhooks accepted {accepted} of {sent} ({statuses:?}); peak RSS {} MiB",
        peak / MIB
    );
    assert!(sent >= 10, "the genuine sender ran: {sent}");
    assert!(accepted * 100 >= sent * 99, "genuine webhooks accepted: {accepted} of {sent} ({statuses:?})");
    assert!(service.stop());
}

/// The in-flight cap is shared fairly: a client with no session holding 70
/// connections of distinct checks against a 1 s host (cap 64) cannot take the
/// cap from a signed-in user at another address. Before: 40 of 40 tries got 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_take_every_in_flight_session_check() {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers};
    let _one = ONE_AT_A_TIME.lock().await;
    let (attackers, tries) = (env_or("ATTACK_INFLIGHT_CONNECTIONS", 70), env_or("ATTACK_INFLIGHT_TRIES", 40));
    let host = MockServer::start().await;
    let slow = |status: u16| ResponseTemplate::new(status).set_delay(Duration::from_secs(1));
    Mock::given(matchers::header("cookie", "session=good"))
        .respond_with(slow(200).set_body_json(serde_json::json!({"user_id": "u1"})))
        .mount(&host)
        .await;
    Mock::given(matchers::any()).respond_with(slow(401)).mount(&host).await;
    let dir = TempDir::new("attack-in-flight");
    let base = config(&host.uri());
    let capped = base.edit(
        &format!("timeout_ms = {CHECK_TIMEOUT_MS}\n"),
        &format!("timeout_ms = {CHECK_TIMEOUT_MS}\nmax_in_flight = 64\n"),
    );
    assert_ne!(capped, base, "the cap was set");
    let service = Service::start(&dir, &capped);
    let port = service.port;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stranger = reqwest::Client::builder().pool_max_idle_per_host(attackers).build().unwrap();
    let flood: Vec<_> = (0..attackers)
        .map(|a| {
            let (done, stranger) = (done.clone(), stranger.clone());
            tokio::spawn(async move {
                let mut k = 0;
                while !done.load(Ordering::Relaxed) {
                    k += 1;
                    let _ = stranger
                        .post(format!("http://127.0.0.1:{port}/auth/new"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(format!("socket_id=1.1&channel_name=private-flood-{a}-{k}"))
                        .send()
                        .await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let user = other_client([127, 0, 0, 3]);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    // The user's page subscribes to 4 channels at a time (within its share of 8 at cap 64).
    for round in 0..tries.div_ceil(4) {
        let calls = (0..4.min(tries - round * 4)).map(|i| {
            user.post(format!("http://127.0.0.1:{port}/auth/new"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", "session=good")
                .body(format!("socket_id=1.1&channel_name=private-user-{round}-{i}"))
                .send()
        });
        for r in futures_util::future::join_all(calls).await {
            *statuses.entry(r.map_or(0, |r| r.status().as_u16())).or_default() += 1;
        }
    }
    done.store(true, Ordering::Relaxed);
    for t in flood {
        let _ = t.await;
    }
    let ok = statuses.get(&200).copied().unwrap_or(0);
    let (_, peak) = service.rss_kib();
    println!(
        "in-flight share: {attackers} stranger connections against a 1 s host, cap 64; the user got \
         {ok} of {tries} signed ({statuses:?}); peak RSS {} MiB",
        peak / MIB
    );
    assert!(ok * 100 >= tries * 99, "the user was starved: {statuses:?}");
    assert!(service.stop());
}

/// The start-up reconcile reads each app's REST channel list: a 512 MiB answer
/// (a broken or hostile endpoint) is refused at the cap, not read whole and
/// retried. Before: RSS 1.1 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_rest_answer_is_read_cut_short_at_start() {
    let _one = ONE_AT_A_TIME.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let size = 512u64 << 20;
                // No Content-Length: the size is only known by reading.
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"channels\":{\"";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'a'; 1 << 16];
                for _ in 0..(size >> 16) {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    count.fetch_add(chunk.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let dir = TempDir::new("attack-rest-answer");
    let (host, _) = silent_host().await;
    let base = config(&host);
    let cfg = base.edit_first("rest_url = \"http://127.0.0.1:9\"", &format!("rest_url = \"{rest}\""));
    assert_ne!(cfg, base, "the old app's rest_url points at the huge answer");
    let service = Service::start(&dir, &cfg);
    let (start_rss, _) = service.rss_kib();
    tokio::time::sleep(Duration::from_secs(5)).await; // the first reconcile and its retries
    let (rss, peak) = service.rss_kib();
    println!(
        "huge REST answer: {} MiB sent in 5 s; RSS {} → {} MiB (peak {} MiB)",
        served.load(Ordering::Relaxed) >> 20,
        start_rss / MIB,
        rss / MIB,
        peak / MIB
    );
    assert!(service.log_text().contains("larger than"), "the refusal is logged: {}", service.log_text());
    assert!((peak - start_rss) / MIB < 100, "RSS grew {} MiB", (peak - start_rss) / MIB);
    assert!(service.stop());
}

/// `POST /auth/<60,000 × A>`: the unknown name is logged cut short, not 60 KB
/// a request at INFO. And the admin listener answers only IP addresses,
/// localhost and configured names (DNS rebinding from an operator's browser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_app_names_are_logged_cut_short_and_the_admin_listener_checks_host() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = TempDir::new("attack-log-host");
    let (host, _) = silent_host().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let service = Service::start(&dir, &config(&host));
    let before = service.log_text().len();
    let name = "A".repeat(60_000);
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let res = client
            .post(format!("http://127.0.0.1:{}/auth/{name}", service.port))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("socket_id=1.1&channel_name=private-a")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = service.log_text().len() - before;
    println!("20 requests naming a 60,000-byte app: the log grew {grown} bytes");
    assert!(grown < 20 * 1024, "the log grew {grown} bytes");

    let with_host = |host: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", service.admin)).unwrap();
        write!(s, "GET /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split(' ').nth(1).unwrap_or("none").to_owned()
    };
    let admin = service.admin;
    assert_eq!(with_host("attacker.example"), "403");
    assert_eq!(with_host(&format!("rebind.attacker.example:{admin}")), "403");
    assert_eq!(with_host(&format!("127.0.0.1:{admin}")), "200");
    assert_eq!(with_host(&format!("localhost:{admin}")), "200");
    assert_eq!(with_host("10.0.0.5:9090"), "200", "a pod IP, as Prometheus scrapes");
    assert!(service.stop());
}
