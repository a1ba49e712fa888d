//! Log audit: drive every path at debug level through the real subscriber and
//! scan every line for secrets, cookie and Authorization values, signatures.
mod common;
use pusher_dual_auth::{config::Settings, startup::Application, telemetry};
use serde_json::json;
use std::{
    io::Write,
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_partial_json, path},
};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const SECRET: &str = "s3cr3t-app-secret-value";
const MASTER: &str = "zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=";
const COOKIE: &str = "session=C00KIEVALUE-4242";
const TOKEN: &str = "Bearer T0KENVALUE-9191";
const PUB_SECRET: &str = "pub-s3cr3t-value";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_cookie_token_or_signature_reaches_the_log_at_debug() {
    let host = MockServer::start().await;
    let config = format!(
        r#"
[server]
admin_listen = "127.0.0.1:0"
workers = 1
[session_check]
url = "{}/check"
timeout_ms = 300
[apps.new]
app_id = "1"
key = "app-key"
secret = "{SECRET}"
encryption_master_key_base64 = "{MASTER}"
rest_url = "{rest}"
[publish]
app_id = "pub"
key = "pub-key"
secret = "{PUB_SECRET}"
targets = ["new"]
retries = 0
[log]
format = "json"
level = "debug"
"#,
        host.uri(),
        rest = common::truncating_rest_api().await,
    );
    let settings = Settings::from_toml(&config, None).unwrap();
    let capture = Capture::default();
    // SAFETY of the test: this binary has one test, so nothing races on the environment.
    unsafe { std::env::remove_var("RUST_LOG") };
    let _traces = telemetry::init_with_writer(&settings.log, None, capture.clone(), false);
    let app = Application::build_with_listener(settings, TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());

    let ok = json!({"user_id": "u-1", "user_info": {"name": "Ada"}});
    let answers = [
        ("private-slow", ResponseTemplate::new(200).set_delay(Duration::from_secs(2))),
        ("private-error", ResponseTemplate::new(500).set_body_string(format!("boom {COOKIE}"))),
        ("private-denied", ResponseTemplate::new(403)),
        ("private-garbage", ResponseTemplate::new(200).set_body_string("<html>")),
    ];
    for (channel, template) in answers {
        Mock::given(path("/check"))
            .and(body_partial_json(json!({"channel_name": channel})))
            .respond_with(template)
            .mount(&host)
            .await;
    }
    Mock::given(path("/check")).respond_with(ResponseTemplate::new(200).set_body_json(ok)).mount(&host).await;

    let client = reqwest::Client::new();
    let mut signatures = Vec::new();
    let bodies = [
        ("/auth/new", "socket_id=1.1&channel_name=private-a"),
        ("/auth/new", "socket_id=1.1&channel_name=presence-a"),
        ("/auth/new", "socket_id=1.1&channel_name=private-encrypted-a"),
        ("/auth/new", "socket_id=1.1&channel_name[0]=private-a&channel_name[1]=private-denied"),
        ("/auth/new/user", "socket_id=1.1"),
        ("/auth/new", "socket_id=1.1&channel_name=private-slow"),
        ("/auth/new", "socket_id=1.1&channel_name=private-error"),
        ("/auth/new", "socket_id=1.1&channel_name=private-denied"),
        ("/auth/new", "socket_id=1.1&channel_name=private-garbage"),
        ("/auth/new", "socket_id=1.1:x&channel_name=private-a"),
        ("/auth/nope", "socket_id=1.1&channel_name=private-a"),
    ];
    for (route, body) in bodies {
        let res = client
            .post(format!("{base}{route}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", COOKIE)
            .header("authorization", TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        let text = res.text().await.unwrap();
        // Collect every signature and shared secret we were given, to look for them in the log.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            let mut stack = vec![v];
            while let Some(v) = stack.pop() {
                match v {
                    serde_json::Value::Object(m) => {
                        for (k, v) in m {
                            if k == "auth" || k == "shared_secret" {
                                let s = v.as_str().unwrap().to_string();
                                signatures.push(s.rsplit(':').next().unwrap().to_string());
                            }
                            stack.push(v);
                        }
                    }
                    serde_json::Value::Array(a) => stack.extend(a),
                    _ => {}
                }
            }
        }
    }
    // A publish whose target fails mid-answer: the outbound error must not carry the signed URL.
    let event = r#"{"name":"e","channel":"private-a","data":"{}"}"#;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let query = pusher_dual_auth::pusher::rest::signed_query(
        "pub-key",
        PUB_SECRET,
        "POST",
        "/apps/pub/events",
        Some(event.as_bytes()),
        now,
        &[],
    );
    let res = client
        .post(format!("{base}/apps/pub/events?{query}"))
        .header("content-type", "application/json")
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    let lines = log.lines().count();
    assert!(signatures.len() >= 5, "the requests produced signatures: {signatures:?}");
    assert!(log.contains("\"outcome\":\"signed\"") && log.contains("DEBUG"), "debug logging was on");
    let mut hits = Vec::new();
    for needle in [SECRET, MASTER, PUB_SECRET, "C00KIEVALUE", "T0KENVALUE", "auth_signature"]
        .iter()
        .map(|s| s.to_string())
        .chain(signatures)
    {
        if log.contains(&needle) {
            hits.push(needle);
        }
    }
    let hex_runs = log.as_bytes().windows(64).filter(|w| w.iter().all(u8::is_ascii_hexdigit)).count();
    eprintln!("log audit: {lines} lines scanned, {} hits, {hex_runs} hex runs", hits.len());
    assert!(hits.is_empty(), "found in the log: {hits:?}");
    assert_eq!(hex_runs, 0, "a 64-hex run (a signature?) is in the log");
}
