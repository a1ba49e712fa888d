//! `pusher-dual-auth doctor` against a real Pusher-protocol server: sockudo
//! with two apps, `old` (client events on) and `new` (client events off).
//! The correct config passes; each classic mix-up is named in plain words.
//!
//! Needs sockudo: `scripts/test` builds it once (scripts/e2e-setup) and runs
//! `SOCKUDO_BIN=… cargo test --test doctor -- --ignored`.

mod common;
use common::Edit;

use serde_json::Value;
use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::sockudo::{MASTER, OTHER_MASTER, SECRETS};

/// One app's config section; the tests rewrite it (the mix-ups).
fn app(name: &str, id: &str, key: &str, secret: &str, master: &str, port: u16) -> String {
    format!(
        "[apps.{name}]\napp_id = \"{id}\"\nkey = \"{key}\"\nsecret = \"{secret}\"\n\
         encryption_master_key_base64 = \"{master}\"\nrest_url = \"http://127.0.0.1:{port}\"\n\
         client_options = {{ wsHost = \"127.0.0.1\", wsPort = {port}, forceTLS = false }}\n"
    )
}

fn correct(port: u16) -> (String, String) {
    (
        app("old", "1001", "old-key", SECRETS[0], MASTER, port),
        app("new", "1002", "new-key", SECRETS[1], MASTER, port),
    )
}

/// Runs `doctor --json` on the two sections: (exit code, report, seconds taken).
fn doctor(old: &str, new: &str, extra: &[&str]) -> (i32, Value, f64) {
    doctor_with_env(old, new, extra, &[])
}

/// A session check that answers every request with `status` (and no body), on a
/// thread of its own: its URL.
fn session_host(status: u16) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
        }
    });
    url
}

/// The session check every app test uses: one that refuses a request without a session.
fn refusing_session_check() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| session_host(403))
}

fn doctor_with_env(old: &str, new: &str, extra: &[&str], env: &[(&str, &str)]) -> (i32, Value, f64) {
    let dir = common::TempDir::new("doctor-config");
    let path = dir.0.join("config.toml");
    let url = refusing_session_check();
    std::fs::write(&path, format!("[session_check]\nurl = \"{url}\"\n{old}{new}")).unwrap();
    let started = Instant::now();
    let out = Command::new(common::bin())
        .args(["doctor", "--json", "--config"])
        .arg(&path)
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for secret in SECRETS {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a secret in doctor's output:\n{stdout}{stderr}"
        );
    }
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), report, took)
}

fn check<'a>(report: &'a Value, app: &str, name: &str) -> &'a Value {
    let app = report["apps"].as_array().unwrap().iter().find(|a| a["app"] == app).unwrap();
    app["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name}: {app}"))
}

fn detail(report: &Value, app: &str, name: &str) -> String {
    check(report, app, name)["detail"].as_str().unwrap().to_owned()
}

fn compared<'a>(report: &'a Value, setting: &str) -> &'a Value {
    report["compared"].as_array().unwrap().iter().find(|c| c["setting"] == setting).unwrap()
}

#[test]
#[ignore = "needs sockudo: scripts/test sets SOCKUDO_BIN and runs it"]
fn doctor_passes_the_right_config_and_names_each_mix_up() {
    let server = common::sockudo::start();
    let port = server.port;
    let (old, new) = correct(port);

    // The correct config passes, and the client-events difference is reported (a warning).
    let (code, r, took) = doctor(&old, &new, &[]);
    println!("correct config: exit {code} in {took:.2} s");
    assert_eq!(code, 0, "{r:#}");
    for app in ["old", "new"] {
        for name in ["REST API", "connect", "private channel", "presence channel", "encrypted channel"] {
            assert_eq!(check(&r, app, name)["status"], "pass", "{app} {name}: {r:#}");
        }
        assert_eq!(check(&r, app, "user sign-in")["status"], "info");
    }
    assert!(detail(&r, "old", "encrypted channel").contains("opened"));
    assert!(detail(&r, "old", "client events").starts_with("allowed"));
    assert!(detail(&r, "new", "client events").starts_with("client event refused (4301)"), "{r:#}");
    let events = compared(&r, "client events");
    assert_eq!(
        (events["agreement"].as_str(), events["breaks_migration"].as_bool()),
        (Some("differs"), Some(false))
    );
    assert_eq!(
        (events["values"]["old"].as_str(), events["values"]["new"].as_str()),
        (Some("allowed"), Some("refused"))
    );
    assert_eq!((r["problems"].as_u64(), r["warnings"].as_u64()), (Some(0), Some(1)));

    // With [failover], the same config is not ready: a client failed over from old
    // to new would lose its client events, and nobody chooses when that happens.
    let failover = format!("{new}[rollout]\nfrom = \"old\"\nto = \"new\"\n[failover]\nenabled = true\n");
    let (code, r, _) = doctor(&old, &failover, &[]);
    assert_eq!(code, 1, "{r:#}");
    let ready =
        r["service"].as_array().unwrap().iter().find(|c| c["name"] == "failover").expect("a failover check");
    assert_eq!(ready["status"], "fail", "{ready}");
    assert!(ready["detail"].as_str().unwrap().contains("client events differs"), "{ready}");
    for app in ["old", "new"] {
        assert_eq!(check(&r, app, "control channel")["status"], "pass", "{app}: {r:#}");
    }
    let session = &r["service"][0];
    assert_eq!((session["name"].as_str(), session["status"].as_str()), (Some("session check"), Some("pass")));
    assert_eq!(compared(&r, "master key")["agreement"], "same");

    // Secrets swapped between the apps: both keys now sign with the other app's secret.
    let (code, r, _) = doctor(&old.edit(SECRETS[0], SECRETS[1]), &new.edit(SECRETS[1], SECRETS[0]), &[]);
    assert_eq!(code, 1);
    for app in ["old", "new"] {
        let private = detail(&r, app, "private channel");
        assert!(
            private.starts_with("signature rejected (4009): this key and secret belong to different apps"),
            "{private}"
        );
        assert!(detail(&r, app, "REST API").starts_with("REST 401: app_id/secret mismatch"), "{r:#}");
    }
    // Named as what it is, once, before the per-app lines.
    let secrets = r["service"].as_array().unwrap().iter().find(|c| c["name"] == "secrets").expect("named");
    assert!(
        secrets["detail"].as_str().unwrap().starts_with("swapped: [apps.new] and [apps.old]"),
        "{secrets}"
    );

    // A wrong key: the server does not know it.
    let (code, r, _) = doctor(&old.edit("\"old-key\"", "\"old-kee\""), &new, &[]);
    assert_eq!(code, 1);
    assert!(detail(&r, "old", "connect").contains("app key unknown on this cluster"), "{r:#}");
    assert_eq!(check(&r, "new", "private channel")["status"], "pass", "the other app is unaffected");

    // A wrong app_id: WebSocket fine, REST refuses, so published events cannot arrive.
    let (code, r, _) = doctor(&old.edit("\"1001\"", "\"1099\""), &new, &[]);
    assert_eq!(code, 1);
    assert_eq!(check(&r, "old", "connect")["status"], "pass");
    assert!(detail(&r, "old", "REST API").starts_with("REST 401: app_id/secret mismatch"), "{r:#}");
    assert!(
        detail(&r, "old", "private channel").contains("subscribed, but publishing through REST failed"),
        "{r:#}"
    );

    // A wrong master key on one app: each app works alone; together they break the fan-out.
    let (code, r, _) = doctor(&old, &new.edit(MASTER, OTHER_MASTER), &[]);
    assert_eq!(code, 1);
    assert_eq!(check(&r, "new", "encrypted channel")["status"], "pass");
    let keys = compared(&r, "master key");
    assert_eq!(
        (keys["agreement"].as_str(), keys["breaks_migration"].as_bool()),
        (Some("differs"), Some(true))
    );
    assert_ne!(keys["values"]["old"], keys["values"]["new"], "{keys}");
    assert!(keys["detail"].as_str().unwrap().contains("encrypts once opens on one app only"), "{keys}");

    // The server unreachable: named with the address tried.
    let closed = common::free_port();
    let (code, r, _) = doctor(&old.edit(&port.to_string(), &closed.to_string()), &new, &[]);
    assert_eq!(code, 1);
    let connect = detail(&r, "old", "connect");
    assert!(connect.starts_with(&format!("cannot reach ws://127.0.0.1:{closed}/app/old-key")), "{connect}");
    assert!(detail(&r, "old", "REST API").starts_with(&format!("cannot reach http://127.0.0.1:{closed}/")));

    // wss:// and https://, as against Pusher itself: nginx terminates TLS in front of
    // sockudo with a certificate the system roots do not know, then one they do
    // (SSL_CERT_FILE, read by both the WebSocket and the REST client).
    let tls = tls_proxy(port);
    let over_tls = |section: &str| {
        section
            .edit(&format!("http://127.0.0.1:{port}"), &format!("https://localhost:{}", tls.port))
            .edit(
                &format!("wsPort = {port}, forceTLS = false"),
                &format!("wssPort = {}, forceTLS = true", tls.port),
            )
            .edit("wsHost = \"127.0.0.1\"", "wsHost = \"localhost\"")
    };
    let (old_tls, new_tls) = (over_tls(&old), over_tls(&new));
    let (code, r, _) = doctor(&old_tls, &new_tls, &[]);
    assert_eq!(code, 1);
    let connect = detail(&r, "old", "connect");
    assert!(
        connect.starts_with(&format!("cannot reach wss://localhost:{}/app/old-key", tls.port)),
        "{connect}"
    );
    assert!(connect.to_lowercase().contains("certificate"), "{connect}");
    let trusted = [("SSL_CERT_FILE", tls.cert.to_str().unwrap())];
    let (code, r, took) = doctor_with_env(&old_tls, &new_tls, &[], &trusted);
    println!("over TLS (nginx in front of sockudo): exit {code} in {took:.2} s");
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["apps"][0]["websocket"], format!("wss://localhost:{}/app/old-key", tls.port));
    assert_eq!(check(&r, "new", "encrypted channel")["status"], "pass");
}

/// nginx terminating TLS (a fresh self-signed certificate for localhost) in
/// front of sockudo's WebSocket and REST port.
fn tls_proxy(upstream: u16) -> common::nginx_tls::NginxTls {
    common::nginx_tls::NginxTls::start(&format!(
        "    location / {{\n      proxy_pass http://127.0.0.1:{upstream};\n      proxy_http_version 1.1;\n\
         proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n    }}"
    ))
}

/// A server that accepts connections and never answers: doctor still ends
/// at --timeout-secs, naming what went unanswered.
#[test]
fn doctor_is_bounded_in_time_by_a_silent_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut sockets = Vec::new();
        for s in listener.incoming().take(8) {
            sockets.push(s);
        }
        std::thread::sleep(Duration::from_secs(10));
    });
    let (old, new) = correct(port);
    let (code, r, took) = doctor(&old, &new, &["--timeout-secs", "2"]);
    println!("silent server: exit {code} in {took:.2} s");
    assert_eq!(code, 1);
    assert!(took < 6.0, "took {took:.1} s with --timeout-secs 2");
    assert!(detail(&r, "old", "REST API").starts_with("no answer in time"), "{r:#}");
    assert!(detail(&r, "old", "connect").starts_with("no answer in time"), "{r:#}");
    drop(held);
}

/// A hostile "Pusher server": it accepts the WebSocket, says connected, then
/// sends one 4 MiB frame. doctor refuses it at its 1 MiB cap and says so,
/// instead of buffering it or hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_refuses_an_oversized_frame_from_a_hostile_server() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let hello = r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.1\",\"activity_timeout\":120}"}"#;
                let _ = ws.send(Message::text(hello)).await;
                let _ = ws.send(Message::text("x".repeat(4 << 20))).await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
        }
    });
    let (old, new) = correct(port);
    let (code, r, took) =
        tokio::task::spawn_blocking(move || doctor(&old, &new, &["--timeout-secs", "8"])).await.unwrap();
    println!("hostile server: exit {code} in {took:.2} s");
    assert_eq!(code, 1);
    assert_eq!(check(&r, "old", "connect")["status"], "pass", "{r:#}");
    let private = detail(&r, "old", "private channel");
    assert!(private.contains("the connection failed") && private.contains("too long"), "{private}");
    assert!(took < 8.0, "took {took:.1} s");
}

/// A hostile WebSocket server on a fresh port: it says connected with
/// `socket_id`, then runs `then` on the socket (and never reads from it).
async fn hostile_ws<F, Fut>(socket_id: String, then: F) -> u16
where
    F: Fn(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let then = std::sync::Arc::new(then);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (then, socket_id) = (then.clone(), socket_id.clone());
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let data = serde_json::json!({"socket_id": socket_id, "activity_timeout": 120}).to_string();
                let hello = serde_json::json!({"event": "pusher:connection_established", "data": data});
                let _ = ws.send(Message::text(hello.to_string())).await;
                then(ws).await;
            });
        }
    });
    port
}

/// Runs `doctor` (text, or `--json`) on `config`, measuring the process's peak
/// RSS: (exit code, stdout and stderr, seconds, peak KiB).
fn doctor_measured(config: &str, json: bool, extra: &[&str]) -> (i32, String, f64, u64) {
    let dir = common::TempDir::new("doctor-hostile");
    let path = dir.0.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let started = Instant::now();
    let mut cmd = Command::new(common::bin());
    cmd.arg("doctor").args(if json { &["--json"][..] } else { &[][..] }).arg("--config").arg(&path);
    let (out, err) = (dir.0.join("out"), dir.0.join("err"));
    let mut child = cmd
        .args(extra)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let status = loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        if let Some(hwm) = status.lines().find(|l| l.starts_with("VmHWM:")) {
            peak = peak.max(hwm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0));
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill(); // never left running by a failed test
            let _ = child.wait();
            panic!("doctor still running after 90 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(out).unwrap() + &std::fs::read_to_string(err).unwrap();
    (status.code().unwrap_or(-1), text, started.elapsed().as_secs_f64(), peak)
}

/// A server that completes the handshake, floods `pusher:ping` and never reads:
/// doctor's pongs fill the socket, and every send is bounded by --timeout-secs
/// (before: still running past 70 s with --timeout-secs 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_is_bounded_by_a_server_that_floods_pings_and_never_reads() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let port = hostile_ws("1.1".into(), |mut ws| async move {
        let ping = Message::text(r#"{"event":"pusher:ping","data":{}}"#);
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && ws.send(ping.clone()).await.is_ok() {}
    })
    .await;
    let (old, new) = correct(port);
    let config = format!("[session_check]\nurl = \"http://127.0.0.1:9/check\"\n{old}{new}");
    let (code, out, took, _) =
        tokio::task::spawn_blocking(move || doctor_measured(&config, false, &["--timeout-secs", "5"]))
            .await
            .unwrap();
    println!("ping flood: exit {code} in {took:.2} s");
    assert_eq!(code, 1, "{out}");
    assert!(took < 8.0, "took {took:.1} s with --timeout-secs 5");
}

/// Server-chosen data is shown cut short: a 1 GiB REST error body is not read
/// whole (before: RSS 1,182 MiB) and a socket id of 300k newlines does not
/// become 600 KB of output; a password in rest_url is never shown, in text or
/// JSON, on this failure path (a silent REST server) or any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reads_hostile_answers_cut_short_and_never_shows_a_rest_password() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // REST: 401 with a body of 1 GiB, sent as fast as it is read.
    let rest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest_port = rest.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = rest.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let head = format!("HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n", 1u64 << 30);
                let _ = tcp.write_all(head.as_bytes()).await;
                let chunk = vec![b'x'; 1 << 16];
                for _ in 0..(1 << 14) {
                    if tcp.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let ws_port = hostile_ws("\n".repeat(300_000), |_ws| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    // And one app whose REST server accepts and never answers, with a password in its URL.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || silent.incoming().take(4).collect::<Vec<_>>());
    let (old, _) = correct(ws_port);
    let old = old.edit(&format!("http://127.0.0.1:{ws_port}"), &format!("http://127.0.0.1:{rest_port}"));
    let new = app("new", "1002", "new-key", SECRETS[1], MASTER, ws_port).edit(
        &format!("rest_url = \"http://127.0.0.1:{ws_port}\""),
        &format!("rest_url = \"http://doctor:pa55w0rd-in-url@127.0.0.1:{silent_port}\""),
    );
    assert!(old.contains(&rest_port.to_string()) && new.contains("pa55w0rd"), "the setup took effect");
    let config = format!("[session_check]\nurl = \"http://127.0.0.1:9/check\"\n{old}{new}");
    for json in [false, true] {
        let config = config.clone();
        let (code, out, took, peak_kib) =
            tokio::task::spawn_blocking(move || doctor_measured(&config, json, &["--timeout-secs", "6"]))
                .await
                .unwrap();
        println!(
            "hostile answers (json: {json}): exit {code} in {took:.2} s, peak RSS {} MiB, {} bytes out",
            peak_kib / 1024,
            out.len()
        );
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("REST 401"), "the 401 is reported: {out}");
        assert!(out.contains("invalid socket_id"), "the bad socket id is named: {out}");
        assert!(out.len() < 20_000, "output cut short: {} bytes", out.len());
        assert!(peak_kib < 100 * 1024, "peak RSS {peak_kib} KiB reading a 1 GiB body");
        assert!(!out.contains("pa55w0rd"), "the rest_url password is shown:\n{out}");
        assert!(out.contains("redacted@127.0.0.1"), "the REST URL is shown redacted:\n{out}");
        for secret in SECRETS {
            assert!(!out.contains(secret), "a secret in the output");
        }
    }
    drop(held);
}

/// doctor asks the session check what a stranger's request gets: 401/403 passes;
/// a 2xx is a fail-open host and fails loudly; a dead port, a redirect or a
/// silent host are each named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_session_check_refuses_a_request_without_credentials() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/check", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || silent.incoming().take(2).collect::<Vec<_>>());
    let cases = [
        (session_host(401), "pass", "refuses a request without credentials (401)"),
        (session_host(200), "fail", "FAIL-OPEN"),
        (session_host(302), "fail", "redirect (302)"),
        ("http://127.0.0.1:9/check".to_owned(), "fail", "cannot reach"),
        (silent_url, "fail", "no answer in time"),
    ];
    let (old, new) = correct(9);
    for (url, status, says) in cases {
        let config = format!("[session_check]\nurl = \"{url}\"\ntimeout_ms = 1000\n{old}{new}");
        let (code, out, _, _) =
            tokio::task::spawn_blocking(move || doctor_measured(&config, true, &["--timeout-secs", "5"]))
                .await
                .unwrap();
        // The report, then stderr's closing line.
        let r: Value = serde_json::Deserializer::from_str(&out).into_iter().next().unwrap().unwrap();
        let check = &r["service"][0];
        assert_eq!(code, 1, "the apps are unreachable here");
        assert_eq!(
            (check["name"].as_str(), check["status"].as_str()),
            (Some("session check"), Some(status)),
            "{url}: {check}"
        );
        assert!(check["detail"].as_str().unwrap().contains(says), "{url}: {check}");
    }
    drop(held);
}

/// With `session_check.unix_socket`, doctor asks the host over the socket, as the
/// service does; the URL's host name is never resolved (here it cannot be).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_asks_the_session_check_over_its_unix_socket() {
    use std::io::{Read, Write};
    let dir = common::TempDir::new("doctor-socket");
    let socket = dir.0.join("session.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let head = seen.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            *head.lock().unwrap() = String::from_utf8_lossy(&buf[..n]).into_owned();
            let _ = write!(s, "HTTP/1.1 401 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let (old, new) = correct(9);
    let config = format!(
        "[session_check]\nurl = \"http://app.invalid/internal/pusher-session\"\nunix_socket = \"{}\"\n{old}{new}",
        socket.display()
    );
    let (_, out, _, _) =
        tokio::task::spawn_blocking(move || doctor_measured(&config, true, &["--timeout-secs", "5"]))
            .await
            .unwrap();
    let r: Value = serde_json::Deserializer::from_str(&out).into_iter().next().unwrap().unwrap();
    let check = &r["service"][0];
    assert_eq!(
        (check["name"].as_str(), check["status"].as_str()),
        (Some("session check"), Some("pass")),
        "{check}"
    );
    assert!(check["detail"].as_str().unwrap().contains("(401)"), "{check}");
    let head = seen.lock().unwrap().clone();
    assert!(head.starts_with("POST /internal/pusher-session HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("host: app.invalid\r\n"), "{head}");
}
