pub use crate::common::Edit;
use pusher_dual_auth::{config::Settings, startup::Application};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use std::net::TcpListener;
use wiremock::MockServer;

pub const NEW_KEY: &str = "278d425bdf160c739803";
pub const NEW_SECRET: &str = "7ad3773142a6692b25b8";
pub const OLD_KEY: &str = "old-app-key";
pub const OLD_SECRET: &str = "old-app-secret";
pub const MASTER_KEY: &str = "zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=";

pub struct TestApp {
    pub address: String,
    /// The admin listener: /metrics, /status, /status.html.
    pub admin: String,
    pub host: MockServer,
    pub client: reqwest::Client,
}

/// The config every test starts from: two apps, "new" with the docs' credentials.
pub fn base_config(session_check_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
workers = 1
[session_check]
url = "{session_check_url}"
timeout_ms = 500
max_response_bytes = 4096
[apps.old]
app_id = "1111"
key = "{OLD_KEY}"
secret = "{OLD_SECRET}"
[apps.new]
app_id = "2222"
key = "{NEW_KEY}"
secret = "{NEW_SECRET}"
encryption_master_key_base64 = "{MASTER_KEY}"
"#
    )
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|c| c).await
}

/// Spawns the service with the base config passed through `edit`.
pub async fn spawn_app_with(edit: impl FnOnce(String) -> String) -> TestApp {
    let host = MockServer::start().await;
    let config = edit(base_config(&format!("{}/check", host.uri())));
    spawn_with_config(host, &config).await
}

pub async fn spawn_with_config(host: MockServer, config: &str) -> TestApp {
    let settings = Settings::from_toml(config, None).expect("test config is valid");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = Application::build_with_listener(settings, listener).expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    TestApp { address, admin, host, client }
}

impl TestApp {
    pub async fn post_form(&self, path: &str, body: &str) -> Response {
        self.post_form_with(path, body, &[]).await
    }

    pub async fn post_form_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request sent")
    }

    /// The JSON bodies the host stub received, in order.
    pub async fn host_bodies(&self) -> Vec<Value> {
        self.host
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).expect("host got JSON"))
            .collect()
    }
}

/// Asserts the status and returns the JSON body; on mismatch shows the body.
#[track_caller]
pub fn assert_status(status: StatusCode, body: &str, expected: u16) -> Value {
    assert_eq!(status.as_u16(), expected, "unexpected status; body: {body}");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

pub async fn expect_status(res: Response, expected: u16) -> Value {
    let status = res.status();
    let body = res.text().await.unwrap();
    if expected != 200 {
        assert_no_signature(&body);
    }
    assert_status(status, &body, expected)
}

/// No `auth`, no 64-hex signature, no shared secret in an error body.
#[track_caller]
pub fn assert_no_signature(body: &str) {
    assert!(!body.contains("\"auth\""), "error body carries auth: {body}");
    assert!(
        !body.contains("shared_secret") && !body.contains("channel_data"),
        "error body carries auth data: {body}"
    );
    let hex_run = body.as_bytes().windows(64).any(|w| w.iter().all(|b| b.is_ascii_hexdigit()));
    assert!(!hex_run, "error body carries a hex signature: {body}");
}

pub fn sign(secret: &str, to_sign: &str) -> String {
    pusher_dual_auth::pusher::hmac_sha256_hex(secret.as_bytes(), to_sign.as_bytes())
}

/// POSTs a webhook body to `/webhooks` as the Pusher app with `key`/`secret` would.
/// Each call gets its own `time_ms` (now, plus a counter), as distinct webhooks from Pusher would.
pub async fn post_webhook(app: &TestApp, key: &str, secret: &str, events: serde_json::Value) -> u16 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let time_ms = crate::helpers::now_ms() + SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = serde_json::json!({"time_ms": time_ms, "events": events}).to_string();
    post_webhook_body(app, key, secret, &body).await
}

/// POSTs exactly `body` to `/webhooks`, signed with `secret`.
pub async fn post_webhook_body(app: &TestApp, key: &str, secret: &str, body: &str) -> u16 {
    let body = body.to_owned();
    app.client
        .post(format!("{}/webhooks", app.address))
        .header("content-type", "application/json")
        .header("x-pusher-key", key)
        .header("x-pusher-signature", sign(secret, &body))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A receiver that answers 503 `failures` times, then 200 (a host that recovers).
pub async fn mount_recovering(server: &wiremock::MockServer, failures: u64) {
    use wiremock::{Mock, ResponseTemplate, matchers::any};
    Mock::given(any()).respond_with(ResponseTemplate::new(503)).up_to_n_times(failures).mount(server).await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200)).mount(server).await;
}

/// Answers `path` on `server` (standing in for an app's REST API) with 200 and `body`.
pub async fn rest_json(server: &wiremock::MockServer, path: &str, body: serde_json::Value) {
    use wiremock::{Mock, ResponseTemplate, matchers};
    Mock::given(matchers::path(path))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

/// The base config with both apps' REST API at `rest` and a `[webhooks]` section
/// forwarding to `receiver`, then `extra`.
pub fn with_rest_and_webhooks(config: String, rest: &str, receiver: &str, extra: &str) -> String {
    let c = config
        .edit("[apps.old]", &format!("[apps.old]\nrest_url = \"{rest}\""))
        .edit("[apps.new]", &format!("[apps.new]\nrest_url = \"{rest}\""));
    format!("{c}\n[webhooks]\nforward_url = \"{receiver}/hook\"\nkey = \"k\"\nsecret = \"s\"\n{extra}")
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A load refusal's Retry-After: 1 to 3 seconds (spread, so refused clients do not return together).
pub fn assert_retry_after_spread(value: Option<&str>) {
    let secs: Option<u64> = value.and_then(|v| v.parse().ok());
    assert!(secs.is_some_and(|s| (1..=3).contains(&s)), "Retry-After {value:?}");
}
