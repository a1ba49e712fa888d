//! Recovery: what passed through the publish fan-out, handed back to a socket
//! the host allowed on the channel (the token of its authorization answer),
//! in order and exactly as published; gaps said, strangers refused. Memory
//! mode, and Redis mode across two replicas.
use crate::common::redis_server::RedisServer;
use crate::helpers::*;
use pusher_dual_auth::pusher::rest::signed_query;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::path};

const PUB_KEY: &str = "publisher-key";
const PUB_SECRET: &str = "publisher-secret";

/// Both apps' REST APIs at `rest` (answering 200), `[publish]` and `[recovery]`, then `extra`.
fn config(c: String, rest: &str, extra: &str) -> String {
    let c = c
        .edit("[apps.old]", &format!("[apps.old]\nrest_url = \"{rest}\""))
        .edit("[apps.new]", &format!("[apps.new]\nrest_url = \"{rest}\""))
        .edit(&format!("encryption_master_key_base64 = \"{MASTER_KEY}\""), "");
    format!(
        "{c}\n[publish]\napp_id = \"dual\"\nkey = \"{PUB_KEY}\"\nsecret = \"{PUB_SECRET}\"\ntargets = [\"old\", \"new\"]\n\
         [recovery]\nwindow_secs = 60\nmax_events_per_channel = 5\nmax_channels_per_request = 3\n{extra}\n"
    )
}

async fn rest_ok() -> MockServer {
    let rest = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&rest)
        .await;
    rest
}

async fn allow_everyone(app: &TestApp) {
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"user_id": "u1"})))
        .mount(&app.host)
        .await;
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Publishes through the service as the official SDKs do: its status and body.
async fn publish_answer(address: &str, path: &str, body: Value) -> (u16, String) {
    let body = body.to_string();
    let q = signed_query(PUB_KEY, PUB_SECRET, "POST", path, Some(body.as_bytes()), now(), &[]);
    let res = reqwest::Client::new()
        .post(format!("{address}{path}?{q}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn publish(app: &TestApp, path: &str, body: Value) {
    let (status, text) = publish_answer(&app.address, path, body).await;
    assert_eq!(status, 200, "{text}");
}

async fn token(app: &TestApp, socket: &str, channel: &str) -> String {
    let body = expect_status(
        app.post_form("/auth/new", &format!("socket_id={socket}&channel_name={channel}")).await,
        200,
    )
    .await;
    body["recovery"]["token"].as_str().expect("the answer carries a recovery token").to_owned()
}

async fn recover(app: &TestApp, body: Value) -> (u16, Value) {
    let res = app
        .client
        .post(format!("{}/recover/new", app.address))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn datas(channel: &Value) -> Vec<String> {
    channel["events"].as_array().unwrap().iter().map(|e| e["data"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_socket_gets_what_it_missed_in_order_and_exactly_as_published() {
    let rest = rest_ok().await;
    let uri = rest.uri();
    let app = spawn_app_with(|c| config(c, &uri, "")).await;
    allow_everyone(&app).await;
    let t = token(&app, "1.1", "private-a").await;
    let anchor =
        recover(&app, json!({"socket_id": "1.1", "channels": [{"channel": "private-a", "token": t}]})).await;
    assert_eq!(anchor.0, 200, "{}", anchor.1);
    let since = anchor.1["channels"]["private-a"]["position"].as_str().unwrap().to_owned();
    assert!(anchor.1["channels"]["private-a"]["events"].as_array().unwrap().is_empty());

    publish(&app, "/apps/dual/events", json!({"name": "n", "data": "{\"n\":1}", "channel": "private-a"}))
        .await;
    publish(
        &app,
        "/apps/dual/events",
        json!({"name": "n", "data": "{\"n\":2}", "channels": ["private-a", "public-b"], "socket_id": "9.9"}),
    )
    .await;
    publish(
        &app,
        "/apps/dual/batch_events",
        json!({"batch": [
            {"name": "n", "data": "{\"n\":3}", "channel": "private-a"},
            {"name": "other", "data": "x", "channel": "private-z"},
            {"name": "n", "data": "{\"n\":2}", "channel": "private-a"},
        ]}),
    )
    .await;

    let (status, got) = recover(
        &app,
        json!({"socket_id": "1.1", "channels": [
            {"channel": "private-a", "since": since, "token": t},
            {"channel": "public-b", "since": since},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        (got["window_secs"].as_u64(), got["max_channels_per_request"].as_u64()),
        (Some(60), Some(3)),
        "{got}"
    );
    let a = &got["channels"]["private-a"];
    // A deliberate repeat (the second {"n":2}) comes back twice; another channel's never.
    assert_eq!(datas(a), ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}", "{\"n\":2}"], "{got}");
    assert_eq!(a["events"][1], json!({"event": "n", "data": "{\"n\":2}", "socket_id": "9.9"}));
    assert_eq!(a["gap"], Value::Null);
    assert_eq!(datas(&got["channels"]["public-b"]), ["{\"n\":2}"], "public channels need no token");
    // From the position it was given, nothing more.
    let next = a["position"].as_str().unwrap();
    let (_, again) = recover(
        &app,
        json!({"socket_id": "1.1", "channels": [{"channel": "private-a", "since": next, "token": t}]}),
    )
    .await;
    assert!(again["channels"]["private-a"]["events"].as_array().unwrap().is_empty(), "{again}");

    // More than the channel keeps (5): the oldest go, and the reader is told.
    for n in 0..6 {
        publish(
            &app,
            "/apps/dual/events",
            json!({"name": "n", "data": n.to_string(), "channel": "private-a"}),
        )
        .await;
    }
    let (_, capped) = recover(
        &app,
        json!({"socket_id": "1.1", "channels": [{"channel": "private-a", "since": next, "token": t}]}),
    )
    .await;
    assert_eq!(datas(&capped["channels"]["private-a"]), ["1", "2", "3", "4", "5"]);
    assert_eq!(capped["channels"]["private-a"]["gap"], "evicted");
    let status: Value =
        app.client.get(format!("{}/status", app.admin)).send().await.unwrap().json().await.unwrap();
    let held = &status["recovery"];
    assert_eq!(
        (held["store"].as_str(), held["window_secs"].as_u64()),
        (Some("memory"), Some(60)),
        "{status}"
    );
    assert!(held["buffered_events"].as_u64().is_some_and(|n| n >= 5), "{status}");
    let metrics =
        app.client.get(format!("{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pusher_recovery_events_total{stage=\"recovered\"} 10"), "{metrics}");
}

#[tokio::test]
async fn history_is_as_private_as_the_channel() {
    let rest = rest_ok().await;
    let uri = rest.uri();
    let app = spawn_app_with(|c| config(c, &uri, "")).await;
    allow_everyone(&app).await;
    let mine = token(&app, "1.1", "private-a").await;
    let other_channel = token(&app, "1.1", "private-b").await;
    let other_socket = token(&app, "2.2", "private-a").await;
    // The same token with its last hex digit changed.
    let forged = format!("{}{}", &mine[..mine.len() - 1], if mine.ends_with('0') { '1' } else { '0' });
    let cases = [
        (json!({"channel": "private-a"}), "missing_token"),
        (json!({"channel": "private-a", "token": other_channel}), "invalid_token"),
        (json!({"channel": "private-a", "token": other_socket}), "invalid_token"),
        (json!({"channel": "private-a", "token": forged}), "invalid_token"),
        (json!({"channel": "private-a", "token": "garbage"}), "invalid_token"),
        (json!({"channel": "#server-to-user-1", "token": mine}), "invalid_channel_name"),
    ];
    for (wanted, code) in cases {
        let (status, got) = recover(&app, json!({"socket_id": "1.1", "channels": [wanted.clone()]})).await;
        assert_eq!(status, 200);
        let answer = got["channels"].as_object().unwrap().values().next().unwrap().clone();
        assert_eq!(answer["error"]["code"], code, "{wanted} -> {got}");
        assert!(answer.get("events").is_none(), "{got}");
    }
    // A position from elsewhere (another process, a guess) is a gap, never someone else's events.
    let (_, got) = recover(&app, json!({"socket_id": "1.1", "channels": [{"channel": "private-a", "since": "feedface:1", "token": mine}]})).await;
    assert_eq!(got["channels"]["private-a"]["gap"], "unknown_position", "{got}");
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_and_nothing_else() {
    let rest = rest_ok().await;
    let uri = rest.uri();
    let app = spawn_app_with(|c| config(c, &uri, "")).await;
    let four: Vec<Value> = (0..4).map(|i| json!({"channel": format!("public-{i}")})).collect();
    let cases = [
        (json!({"socket_id": "1.1", "channels": four}), 400, "too_many_channels"),
        (json!({"socket_id": "nope", "channels": []}), 400, "malformed_body"),
        (json!({"socket_id": "1.1"}), 400, "malformed_body"),
        (
            json!({"socket_id": "1.1", "channels": [{"channel": "public-a"}, {"channel": "public-a"}]}),
            400,
            "malformed_body",
        ),
        (json!({"socket_id": "1.1", "channels": [], "extra": 1}), 400, "malformed_body"),
    ];
    for (body, status, code) in cases {
        let (got_status, got) = recover(&app, body.clone()).await;
        assert_eq!((got_status, got["error"]["code"].as_str()), (status, Some(code)), "{body} -> {got}");
    }
    let unknown = app.client.post(format!("{}/recover/nope", app.address)).body("{}").send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    // Without [recovery] the route is not there at all.
    let plain = spawn_app().await;
    allow_everyone(&plain).await;
    let res = plain.client.post(format!("{}/recover/new", plain.address)).body("{}").send().await.unwrap();
    assert_eq!(res.status(), 404);
    let answer =
        expect_status(plain.post_form("/auth/new", "socket_id=1.1&channel_name=private-a").await, 200).await;
    assert!(answer.get("recovery").is_none());
}

#[tokio::test]
async fn with_redis_events_kept_through_one_replica_are_recovered_through_another() {
    let Some(redis) = RedisServer::start() else { return };
    let rest = rest_ok().await;
    let uri = rest.uri();
    let port = redis.port;
    let store = move |c: String| {
        config(
            c,
            &uri,
            &format!(
                "[webhooks]\nforward_url = \"{uri}/hook\"\nkey = \"k\"\nsecret = \"s\"\nstate = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"\n"
            ),
        )
    };
    let (a, b) = (spawn_app_with(store.clone()).await, spawn_app_with(store).await);
    allow_everyone(&a).await;
    allow_everyone(&b).await;
    let t = token(&b, "1.1", "private-a").await;
    let (_, anchor) =
        recover(&b, json!({"socket_id": "1.1", "channels": [{"channel": "private-a", "token": t}]})).await;
    let since = anchor["channels"]["private-a"]["position"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        publish(&a, "/apps/dual/events", json!({"name": "n", "data": n.to_string(), "channel": "private-a"}))
            .await;
    }
    let (status, got) = recover(
        &b,
        json!({"socket_id": "1.1", "channels": [{"channel": "private-a", "since": since, "token": t}]}),
    )
    .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(datas(&got["channels"]["private-a"]), ["1", "2", "3"], "{got}");
    assert_eq!(got["channels"]["private-a"]["gap"], Value::Null);
    // Past the per-channel cap, Redis says what it trimmed.
    for n in 4..=10 {
        publish(&a, "/apps/dual/events", json!({"name": "n", "data": n.to_string(), "channel": "private-a"}))
            .await;
    }
    let (_, capped) = recover(
        &b,
        json!({"socket_id": "1.1", "channels": [{"channel": "private-a", "since": since, "token": t}]}),
    )
    .await;
    assert_eq!(datas(&capped["channels"]["private-a"]), ["6", "7", "8", "9", "10"], "{capped}");
    assert_eq!(capped["channels"]["private-a"]["gap"], "evicted");
    // A position not of ours: a gap, and a position to go on from.
    let (_, odd) = recover(
        &b,
        json!({"socket_id": "1.1", "channels": [{"channel": "private-a", "since": "r:nope", "token": t}]}),
    )
    .await;
    let odd = &odd["channels"]["private-a"];
    assert_eq!(odd["gap"], "unknown_position", "{odd}");
    assert!(odd["position"].as_str().is_some_and(|p| p.starts_with("r:") && p.len() > 4), "{odd}");
}

/// A Redis outage never blocks a publish: the event still goes out to the apps,
/// is counted as not kept, and a reader whose range covers the outage is told
/// `buffer_outage` (the marker is written once Redis is back) rather than
/// handed a history with a hole in it.
#[tokio::test]
async fn a_redis_outage_is_a_gap_for_readers_never_a_failed_publish() {
    let Some(mut redis) = RedisServer::start_persistent() else { return };
    let rest = rest_ok().await;
    let uri = rest.uri();
    let port = redis.port;
    let app = spawn_app_with(move |c| {
        config(
            c,
            &uri,
            &format!("[webhooks]\nforward_url = \"{uri}/hook\"\nkey = \"k\"\nsecret = \"s\"\nstate = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"\n"),
        )
    })
    .await;
    let (_, anchor) = recover(&app, json!({"socket_id": "1.1", "channels": [{"channel": "public-r"}]})).await;
    let since = anchor["channels"]["public-r"]["position"].as_str().unwrap().to_owned();
    publish(&app, "/apps/dual/events", json!({"name": "n", "data": "1", "channel": "public-r"})).await;
    redis.kill();
    // Still 200: the apps got it (publish() asserts the status).
    publish(&app, "/apps/dual/events", json!({"name": "n", "data": "2", "channel": "public-r"})).await;
    let forwarded =
        rest.received_requests().await.unwrap().iter().filter(|r| r.url.path().ends_with("/events")).count();
    assert_eq!(forwarded, 4, "both events reached both apps");
    redis.restart();
    publish(&app, "/apps/dual/events", json!({"name": "n", "data": "3", "channel": "public-r"})).await;
    let (status, got) =
        recover(&app, json!({"socket_id": "1.1", "channels": [{"channel": "public-r", "since": since}]}))
            .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(datas(&got["channels"]["public-r"]), ["1", "3"], "{got}");
    assert_eq!(got["channels"]["public-r"]["gap"], "buffer_outage", "{got}");
    let metrics =
        app.client.get(format!("{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pusher_recovery_events_total{stage=\"not_kept\"} 1"), "{metrics}");
}

/// Both apps answer publishes with `status` after `delay`.
async fn rest_slow(status: u16, delay: std::time::Duration) -> MockServer {
    let rest = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(status).set_body_json(json!({})).set_delay(delay))
        .mount(&rest)
        .await;
    rest
}

/// An event is in the buffer before Pusher has it: a client recovering while
/// the fan-out is under way gets it (kept only after the fan-out, it read past
/// it and never got it), and one no app accepted is taken back, its position
/// still good to read on from. Memory mode, and Redis mode when redis-server is here.
async fn kept_before_forwarding_and_taken_back_if_refused(redis: Option<u16>) {
    let slow = std::time::Duration::from_millis(800);
    let (ok, refused) = (rest_slow(200, slow).await, rest_slow(503, slow).await);
    let store = |uri: String| {
        let extra = redis.map_or(String::new(), |port| {
            format!("[webhooks]\nforward_url = \"{uri}/hook\"\nkey = \"k\"\nsecret = \"s\"\nstate = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"\n")
        });
        move |c: String| config(c, &uri, &extra)
    };
    for (rest, accepted) in [(&ok, true), (&refused, false)] {
        let app = spawn_app_with(store(rest.uri())).await;
        let channel = format!("public-race-{accepted}");
        let ask = |since: Option<&str>| {
            let mut c = json!({"channel": channel});
            if let Some(s) = since {
                c["since"] = json!(s);
            }
            json!({"socket_id": "1.1", "channels": [c]})
        };
        let (_, anchor) = recover(&app, ask(None)).await;
        let since = anchor["channels"][&channel]["position"].as_str().unwrap().to_owned();
        let event = json!({"name": "n", "data": "1", "channel": channel});
        let address = app.address.clone();
        let publishing =
            tokio::spawn(async move { publish_answer(&address, "/apps/dual/events", event).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!publishing.is_finished(), "the apps answer after {slow:?}: the fan-out is still under way");
        let (status, during) = recover(&app, ask(Some(&since))).await;
        assert_eq!(status, 200, "{during}");
        assert_eq!(datas(&during["channels"][&channel]), ["1"], "read during the fan-out: {during}");
        let seen = during["channels"][&channel]["position"].as_str().unwrap().to_owned();
        let (status, text) = publishing.await.unwrap();
        assert_eq!(status == 200, accepted, "{status} {text}");
        let (_, after) = recover(&app, ask(Some(&since))).await;
        let want: &[&str] = if accepted { &["1"] } else { &[] };
        assert_eq!(datas(&after["channels"][&channel]), want, "{after}");
        // The reader who saw the withdrawn event reads on from there, no gap told.
        let (_, on) = recover(&app, ask(Some(&seen))).await;
        assert_eq!(
            (datas(&on["channels"][&channel]).len(), &on["channels"][&channel]["gap"]),
            (0, &Value::Null),
            "{on}"
        );
        let metrics =
            app.client.get(format!("{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
        let withdrawn = metrics.contains("pusher_recovery_events_total{stage=\"withdrawn\"} 1");
        assert_eq!(withdrawn, !accepted, "{metrics}");
    }
}

#[tokio::test]
async fn in_memory_an_event_is_kept_before_forwarding_and_taken_back_if_refused() {
    kept_before_forwarding_and_taken_back_if_refused(None).await;
}

#[tokio::test]
async fn in_redis_an_event_is_kept_before_forwarding_and_taken_back_if_refused() {
    let Some(redis) = RedisServer::start() else { return };
    kept_before_forwarding_and_taken_back_if_refused(Some(redis.port)).await;
}

/// In Redis, what the window took is a gap for a reader from before it, and a
/// channel with nothing stale loses nothing (the write's trim reads the oldest
/// entry first, rather than searching below it).
#[tokio::test]
async fn in_redis_what_the_window_took_is_a_gap() {
    let Some(redis) = RedisServer::start() else { return };
    let rest = rest_ok().await;
    let uri = rest.uri();
    let port = redis.port;
    let app = spawn_app_with(move |c: String| {
        config(
            c,
            &uri,
            &format!("[webhooks]\nforward_url = \"{uri}/hook\"\nkey = \"k\"\nsecret = \"s\"\nstate = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"\n"),
        )
        .edit("window_secs = 60", "window_secs = 1")
    })
    .await;
    allow_everyone(&app).await;
    let t = token(&app, "1.1", "private-w").await;
    let read = |since: String| {
        let body =
            json!({"socket_id": "1.1", "channels": [{"channel": "private-w", "since": since, "token": t}]});
        recover(&app, body)
    };
    let (_, anchor) =
        recover(&app, json!({"socket_id": "1.1", "channels": [{"channel": "private-w", "token": t}]})).await;
    let since = anchor["channels"]["private-w"]["position"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    for n in ["1", "2"] {
        publish(&app, "/apps/dual/events", json!({"name": "n", "data": n, "channel": "private-w"})).await;
    }
    let (_, fresh) = read(since.clone()).await;
    // Within the 1 s window only if the machine kept up (a loaded CI can take longer).
    if started.elapsed() < std::time::Duration::from_millis(800) {
        assert_eq!(datas(&fresh["channels"]["private-w"]), ["1", "2"], "{fresh}");
        assert_eq!(fresh["channels"]["private-w"]["gap"], Value::Null, "{fresh}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    publish(&app, "/apps/dual/events", json!({"name": "n", "data": "3", "channel": "private-w"})).await;
    let (_, late) = read(since).await;
    assert_eq!(datas(&late["channels"]["private-w"]), ["3"], "{late}");
    assert_eq!(late["channels"]["private-w"]["gap"], "evicted", "{late}");
}

/// A batch is kept in Redis in one script call: each event on its channel, in
/// order, and a batch no app accepted is taken back whole.
#[tokio::test]
async fn in_redis_a_batch_is_kept_in_order_and_taken_back_whole() {
    let Some(redis) = RedisServer::start() else { return };
    let (ok, refused) = (rest_ok().await, rest_slow(503, std::time::Duration::ZERO).await);
    for (rest, accepted) in [(&ok, true), (&refused, false)] {
        let uri = rest.uri();
        let port = redis.port;
        let app = spawn_app_with(move |c: String| {
            config(
                c,
                &uri,
                &format!("[webhooks]\nforward_url = \"{uri}/hook\"\nkey = \"k\"\nsecret = \"s\"\nstate = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"\n"),
            )
        })
        .await;
        let (a, b) = (format!("public-batch-a-{accepted}"), format!("public-batch-b-{accepted}"));
        let ask = |since: Option<(&str, &str)>| {
            let one = |c: &str, s: Option<&str>| match s {
                Some(s) => json!({"channel": c, "since": s}),
                None => json!({"channel": c}),
            };
            json!({"socket_id": "1.1", "channels": [one(&a, since.map(|s| s.0)), one(&b, since.map(|s| s.1))]})
        };
        let (_, anchor) = recover(&app, ask(None)).await;
        let pos = |r: &Value, c: &str| r["channels"][c]["position"].as_str().unwrap().to_owned();
        let (pa, pb) = (pos(&anchor, &a), pos(&anchor, &b));
        let batch = json!({"batch": [
            {"name": "n", "data": "1", "channel": a},
            {"name": "n", "data": "2", "channel": b},
            {"name": "n", "data": "3", "channel": a},
        ]});
        let (status, text) = publish_answer(&app.address, "/apps/dual/batch_events", batch).await;
        assert_eq!(status == 200, accepted, "{status} {text}");
        let (_, got) = recover(&app, ask(Some((&pa, &pb)))).await;
        let (want_a, want_b): (&[&str], &[&str]) = if accepted { (&["1", "3"], &["2"]) } else { (&[], &[]) };
        assert_eq!(datas(&got["channels"][&a]), want_a, "{got}");
        assert_eq!(datas(&got["channels"][&b]), want_b, "{got}");
        let metrics =
            app.client.get(format!("{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
        let kept = metrics.contains("pusher_recovery_events_total{stage=\"kept\"} 3");
        let withdrawn = metrics.contains("pusher_recovery_events_total{stage=\"withdrawn\"} 3");
        assert!(kept && withdrawn != accepted, "{metrics}");
    }
}
