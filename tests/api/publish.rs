//! Publish once, deliver on both apps: the REST surface against two real HTTP
//! servers standing in for the Pusher apps' REST APIs.
use crate::helpers::*;
use pusher_dual_auth::pusher::rest::{signed_query, verify_rest};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::path};

const PUB_KEY: &str = "publisher-key";
const PUB_SECRET: &str = "publisher-secret";

struct Fanout {
    app: TestApp,
    old: MockServer,
    new: MockServer,
}

async fn spawn_fanout(extra: &str) -> Fanout {
    let (old, new) = (MockServer::start().await, MockServer::start().await);
    let (old_uri, new_uri) = (old.uri(), new.uri());
    let extra = extra.to_owned();
    let app = spawn_app_with(move |c| {
        let c = c
            .edit("[apps.old]", &format!("[apps.old]\nrest_url = \"{old_uri}\""))
            .edit("[apps.new]", &format!("[apps.new]\nrest_url = \"{new_uri}\""))
            .edit(&format!("encryption_master_key_base64 = \"{MASTER_KEY}\""), "");
        format!(
            "{c}\n[publish]\napp_id = \"dual\"\nkey = \"{PUB_KEY}\"\nsecret = \"{PUB_SECRET}\"\ntargets = [\"old\", \"new\"]\n{extra}\n"
        )
    })
    .await;
    Fanout { app, old, new }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

impl Fanout {
    /// A request signed as the official SDKs sign it.
    async fn call(&self, method: &str, path: &str, body: &str, secret: &str, ts: i64) -> (u16, Value) {
        let b = (!body.is_empty()).then_some(body.as_bytes());
        let q = signed_query(PUB_KEY, secret, method, path, b, ts, &[]);
        let url = format!("{}{path}?{q}", self.app.address);
        let req = if method == "GET" {
            self.app.client.get(url)
        } else {
            self.app.client.post(url).header("content-type", "application/json").body(body.to_owned())
        };
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

async fn answer(server: &MockServer, template: ResponseTemplate) {
    Mock::given(wiremock::matchers::any()).respond_with(template).mount(server).await;
}

/// Each forwarded request is signed with its own app's credentials, for its own path.
async fn assert_signed_for(
    server: &MockServer,
    app_id: &str,
    key: &str,
    secret: &str,
) -> Vec<wiremock::Request> {
    let got = server.received_requests().await.unwrap();
    for r in &got {
        assert!(r.url.path().starts_with(&format!("/apps/{app_id}/")), "{}", r.url);
        let params: Vec<(String, String)> = r.url.query_pairs().into_owned().collect();
        let ok = verify_rest(r.method.as_str(), r.url.path(), &params, &r.body, now(), |k| {
            (k == key).then_some(secret)
        });
        assert_eq!(ok, Ok(()), "{}", r.url);
    }
    got
}

#[tokio::test]
async fn an_event_is_delivered_to_both_apps_each_signed_for_itself() {
    let f = spawn_fanout("").await;
    answer(&f.old, ResponseTemplate::new(200).set_body_json(json!({}))).await;
    answer(&f.new, ResponseTemplate::new(200).set_body_json(json!({}))).await;
    let body =
        r#"{"name":"order-shipped","data":"{\"id\":7}","channels":["private-orders","presence-room"]}"#;
    let (status, answer_body) = f.call("POST", "/apps/dual/events", body, PUB_SECRET, now()).await;
    assert_eq!((status, answer_body), (200, json!({})));
    let old = assert_signed_for(&f.old, "1111", OLD_KEY, OLD_SECRET).await;
    let new = assert_signed_for(&f.new, "2222", NEW_KEY, NEW_SECRET).await;
    assert_eq!((old.len(), new.len()), (1, 1));
    assert_eq!(old[0].body, body.as_bytes());
    assert_eq!(new[0].body, body.as_bytes());
}

#[tokio::test]
async fn requests_are_verified_as_pusher_does_before_anything_is_sent() {
    let f = spawn_fanout("").await;
    answer(&f.old, ResponseTemplate::new(200)).await;
    answer(&f.new, ResponseTemplate::new(200)).await;
    let body = r#"{"name":"e","data":"{}","channel":"private-a"}"#;
    assert_eq!(f.call("POST", "/apps/dual/events", body, "wrong-secret", now()).await.0, 401);
    let (status, b) = f.call("POST", "/apps/dual/events", body, PUB_SECRET, now() - 601).await;
    assert_eq!(status, 401);
    assert!(b["error"].as_str().unwrap().starts_with("Timestamp expired"), "{b}");
    assert_eq!(f.call("POST", "/apps/other/events", body, PUB_SECRET, now()).await.0, 404);
    // Pusher's limits.
    let big = json!({"name": "e", "data": "x".repeat(10_241), "channel": "a"}).to_string();
    assert_eq!(f.call("POST", "/apps/dual/events", &big, PUB_SECRET, now()).await.0, 413);
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let many = json!({"name": "e", "data": "", "channels": many}).to_string();
    assert_eq!(f.call("POST", "/apps/dual/events", &many, PUB_SECRET, now()).await.0, 400);
    let batch: Vec<Value> = (0..11).map(|_| json!({"name": "e", "data": "", "channel": "a"})).collect();
    let batch = json!({ "batch": batch }).to_string();
    assert_eq!(f.call("POST", "/apps/dual/batch_events", &batch, PUB_SECRET, now()).await.0, 400);
    assert!(f.old.received_requests().await.unwrap().is_empty());
    assert!(f.new.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failing_app_is_retried_then_reported_or_tolerated_per_policy() {
    let body = r#"{"name":"e","data":"{}","channel":"private-a"}"#;
    for (policy, expected) in [("", 502), ("success = \"any\"", 200)] {
        let f = spawn_fanout(&format!("retries = 2\n{policy}")).await;
        answer(&f.old, ResponseTemplate::new(200).set_body_json(json!({}))).await;
        answer(&f.new, ResponseTemplate::new(503)).await;
        let (status, b) = f.call("POST", "/apps/dual/events", body, PUB_SECRET, now()).await;
        assert_eq!(status, expected, "{policy}: {b}");
        if expected == 502 {
            assert_eq!(b["results"], json!({"old": 200, "new": 503}));
        } else {
            // "any": answered once one app took it; the failing one's retries go on behind.
            let at_answer = f.new.received_requests().await.unwrap().len();
            assert!(at_answer < 3, "answered before the failing app's retries ({at_answer} calls by then)");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while f.new.received_requests().await.unwrap().len() < 3 && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        assert_eq!(f.new.received_requests().await.unwrap().len(), 3, "1 call + 2 retries");
        assert_eq!(f.old.received_requests().await.unwrap().len(), 1, "no retry after a 200");
    }
}

#[tokio::test]
async fn a_target_refusing_the_request_passes_its_4xx_on() {
    let f = spawn_fanout("").await;
    answer(&f.old, ResponseTemplate::new(200).set_body_json(json!({}))).await;
    answer(&f.new, ResponseTemplate::new(400).set_body_json(json!({"error": "Invalid channel name"}))).await;
    let (status, b) = f
        .call("POST", "/apps/dual/events", r#"{"name":"e","data":"","channel":"a"}"#, PUB_SECRET, now())
        .await;
    assert_eq!((status, b), (400, json!({"error": "Invalid channel name"})));
    assert_eq!(f.new.received_requests().await.unwrap().len(), 1, "4xx is not retried");
}

#[tokio::test]
async fn queries_are_merged_across_apps() {
    let f = spawn_fanout("").await;
    Mock::given(path("/apps/1111/channels"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"channels": {"presence-room": {"user_count": 2}, "private-a": {}}})),
        )
        .mount(&f.old)
        .await;
    Mock::given(path("/apps/2222/channels"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"channels": {"presence-room": {"user_count": 1}, "private-b": {}}})),
        )
        .mount(&f.new)
        .await;
    Mock::given(path("/apps/1111/channels/presence-room"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"occupied": true, "user_count": 2})))
        .mount(&f.old)
        .await;
    Mock::given(path("/apps/2222/channels/presence-room"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"occupied": false, "user_count": 0})))
        .mount(&f.new)
        .await;
    Mock::given(path("/apps/1111/channels/presence-room/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"users": [{"id": "1"}, {"id": "2"}]})))
        .mount(&f.old)
        .await;
    Mock::given(path("/apps/2222/channels/presence-room/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"users": [{"id": "2"}, {"id": "3"}]})))
        .mount(&f.new)
        .await;
    let (s, b) = f.call("GET", "/apps/dual/channels", "", PUB_SECRET, now()).await;
    assert_eq!(
        (s, b),
        (200, json!({"channels": {"presence-room": {"user_count": 3}, "private-a": {}, "private-b": {}}}))
    );
    let (s, b) = f.call("GET", "/apps/dual/channels/presence-room", "", PUB_SECRET, now()).await;
    assert_eq!((s, b), (200, json!({"occupied": true, "user_count": 2})));
    let (s, b) = f.call("GET", "/apps/dual/channels/presence-room/users", "", PUB_SECRET, now()).await;
    assert_eq!((s, b), (200, json!({"users": [{"id": "1"}, {"id": "2"}, {"id": "3"}]})));
    assert_signed_for(&f.old, "1111", OLD_KEY, OLD_SECRET).await;
    assert_signed_for(&f.new, "2222", NEW_KEY, NEW_SECRET).await;
}

/// A path under the publish scope that no route serves: the JSON 404 with
/// exactly one request id, as anywhere else.
#[tokio::test]
async fn an_unknown_path_under_the_publish_scope_is_the_json_404() {
    let f = spawn_fanout("").await;
    let res = f.app.client.get(format!("{}/apps/dual/nope", f.app.address)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(res.headers().get_all("x-request-id").iter().count(), 1);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}

#[tokio::test]
async fn without_a_publish_section_the_surface_is_404() {
    let app = spawn_app().await;
    let res = app.client.post(format!("{}/apps/dual/events", app.address)).body("{}").send().await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn a_target_failure_never_puts_the_signed_url_in_the_answer() {
    let broken = crate::common::truncating_rest_api().await;
    let f = spawn_fanout("retries = 0\n").await;
    answer(&f.new, ResponseTemplate::new(200).set_body_json(json!({}))).await;
    // Point "old" at the broken API: same fan-out, one target failing mid-body.
    let app = spawn_app_with(move |c| {
        let c = c
            .edit("[apps.old]", &format!("[apps.old]\nrest_url = \"{broken}\""))
            .edit(&format!("encryption_master_key_base64 = \"{MASTER_KEY}\""), "");
        format!(
            "{c}\n[publish]\napp_id = \"dual\"\nkey = \"{PUB_KEY}\"\nsecret = \"{PUB_SECRET}\"\ntargets = [\"old\", \"new\"]\nretries = 0\n"
        )
    })
    .await;
    let f = Fanout { app, old: f.old, new: f.new };
    let body = r#"{"name":"e","channel":"private-a","data":"{}"}"#;
    let (status, answer) = f.call("POST", "/apps/dual/events", body, PUB_SECRET, now()).await;
    assert_eq!(status, 502, "{answer}");
    let text = answer.to_string();
    for leak in ["auth_signature", "auth_key", "auth_timestamp", "http://"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}

#[tokio::test]
async fn an_outsiders_body_is_never_read_and_path_tricks_never_leave() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = spawn_fanout("").await;
    answer(&f.old, ResponseTemplate::new(200).set_body_json(json!({}))).await;
    answer(&f.new, ResponseTemplate::new(200).set_body_json(json!({}))).await;
    // No valid signature: 401 before a byte of the announced 200 kB body is awaited.
    let addr = f.app.address.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /apps/dual/events?auth_key={PUB_KEY}&auth_timestamp={}&auth_version=1.0&body_md5=00&auth_signature=00 \
         HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n",
        now()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(1), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401"));

    // A user id that decodes to a path: refused, nothing sent.
    let (status, _) =
        f.call("POST", "/apps/dual/users/a%2F..%2F..%2Fx/terminate_connections", "", PUB_SECRET, now()).await;
    assert_eq!(status, 400);
    // auth_timestamp at the edge of i64: refused (not wrapped into the window, not a panic).
    let body = r#"{"name":"e","channel":"private-a","data":"{}"}"#;
    let (status, _) = f.call("POST", "/apps/dual/events", body, PUB_SECRET, i64::MIN).await;
    assert_eq!(status, 401);
    assert_eq!(
        f.old.received_requests().await.unwrap().len() + f.new.received_requests().await.unwrap().len(),
        0
    );
    // A valid user id still goes through, to both apps.
    let (status, _) =
        f.call("POST", "/apps/dual/users/user-42/terminate_connections", "", PUB_SECRET, now()).await;
    assert_eq!(status, 200);
    let got = f.old.received_requests().await.unwrap();
    assert_eq!(got[0].url.path(), "/apps/1111/users/user-42/terminate_connections");
}
