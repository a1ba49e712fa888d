//! The presence bridge over real HTTP: member changes on one app are published
//! to the other's REST API (in order, once, through `batch_events`, only where
//! the channel has subscribers), and an authorization answer for a bridged
//! presence channel lists the other apps' members with their info, within
//! the answer's budget and the caller's rate.
use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

async fn spawn_bridge(rest: &MockServer) -> TestApp {
    spawn_bridge_with(rest, "", "").await
}

/// The bridge with more `[webhooks]` keys, and more after `[presence] bridge =
/// ["presence-room*"]` (its keys, or further sections).
async fn spawn_bridge_with(rest: &MockServer, webhooks: &str, presence: &str) -> TestApp {
    let rest = rest.uri();
    let (webhooks, presence) = (webhooks.to_owned(), presence.to_owned());
    let app = spawn_app_with(move |c| {
        let c = c
            .edit("app_id = \"1111\"", &format!("app_id = \"1111\"\nrest_url = \"{rest}\""))
            .edit("app_id = \"2222\"", &format!("app_id = \"2222\"\nrest_url = \"{rest}\""));
        assert_eq!(c.matches("rest_url").count(), 2, "both apps point at the fake REST API");
        format!(
            "{c}\n[webhooks]\nforward_url = \"{rest}/hook\"\nkey = \"k\"\nsecret = \"s\"\n{webhooks}\n\
             [presence]\nbridge = [\"presence-room*\"]\n{presence}\n"
        )
    })
    .await;
    Mock::given(matchers::path("/check"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"user_id": "u7", "user_info": {"name": "Seven"}})),
        )
        .mount(&app.host)
        .await;
    app
}

/// The bridge events the REST API received for app `app_id`, as (channel, data).
async fn published(rest: &MockServer, app_id: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for r in rest.received_requests().await.unwrap() {
        if r.url.path() != format!("/apps/{app_id}/batch_events") {
            assert_ne!(r.url.path(), format!("/apps/{app_id}/events"), "one event a call");
            continue;
        }
        assert!(r.url.query().unwrap().contains("auth_signature="), "signed");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let batch = body["batch"].as_array().unwrap();
        assert!(!batch.is_empty() && batch.len() <= 10, "Pusher takes 10 a call");
        for event in batch {
            assert_eq!(event["name"], "dual-auth:presence");
            let data: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
            out.push((event["channel"].as_str().unwrap().to_owned(), data));
        }
    }
    out
}

async fn until_published(rest: &MockServer, app_id: &str, n: usize) -> Vec<(String, Value)> {
    for _ in 0..50 {
        let got = published(rest, app_id).await;
        if got.len() >= n {
            tokio::time::sleep(Duration::from_millis(200)).await; // a second copy would show now
            return published(rest, app_id).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} bridge events for app {app_id}");
}

async fn authorize(app: &TestApp, route: &str, channel: &str) -> Value {
    let res = app.post_form(route, &format!("socket_id=1234.5678&channel_name={channel}")).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn member_changes_reach_the_other_app_and_authorizations_list_its_members() {
    let rest = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&rest)
        .await;
    Mock::given(matchers::method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"channels": {}})))
        .mount(&rest)
        .await;
    let app = spawn_bridge(&rest).await;
    let occupied = json!({"name": "channel_occupied", "channel": "presence-room"});
    assert_eq!(post_webhook(&app, NEW_KEY, NEW_SECRET, json!([occupied])).await, 200);

    // u7 is authorized on the old app (its info is remembered), then joins there.
    let answer = authorize(&app, "/auth/old", "presence-room").await;
    assert_eq!(answer["presence_bridge"], json!({"new": {}}), "nobody on the new app yet");
    let add = json!({"name": "member_added", "channel": "presence-room", "user_id": "u7"});
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, json!([add])).await, 200);
    let got = until_published(&rest, "2222", 1).await;
    assert_eq!(got.len(), 1, "once, to the new app only (where the channel has subscribers)");
    assert!(published(&rest, "1111").await.is_empty(), "never to the app it came from");
    let (channel, data) = &got[0];
    assert_eq!(channel, "presence-room");
    assert_eq!(
        (&data["app"], &data["user_id"], &data["present"]),
        (&json!("old"), &json!("u7"), &json!(true))
    );
    assert_eq!(data["user_info"], json!({"name": "Seven"}), "the info the host gave at authorization");
    assert!(data["time_ms"].is_u64() && data["seq"] == 0);

    // Someone authorized on the new app learns who is on the old one.
    let answer = authorize(&app, "/auth/new", "presence-room").await;
    assert_eq!(answer["presence_bridge"], json!({"old": {"u7": {"name": "Seven"}}}));
    assert!(answer["auth"].as_str().unwrap().starts_with(&format!("{NEW_KEY}:")), "signed as usual");

    // A channel not bridged: the answer is exactly what it always was.
    let answer = authorize(&app, "/auth/new", "presence-other").await;
    let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["auth", "channel_data"]);

    // u7 leaves the old app: told to the new app; a repeated webhook tells nothing more.
    let body = json!({"time_ms": now_ms(), "events": [{"name": "member_removed", "channel": "presence-room", "user_id": "u7"}]})
        .to_string();
    assert_eq!(post_webhook_body(&app, OLD_KEY, OLD_SECRET, &body).await, 200);
    assert_eq!(post_webhook_body(&app, OLD_KEY, OLD_SECRET, &body).await, 200, "a repeat is acknowledged");
    let got = until_published(&rest, "2222", 2).await;
    assert_eq!(got.len(), 2, "the repeat was not published again: {got:?}");
    assert_eq!((&got[1].1["present"], &got[1].1["user_id"]), (&json!(false), &json!("u7")));
    let answer = authorize(&app, "/auth/new", "presence-room").await;
    assert_eq!(answer["presence_bridge"], json!({"old": {}}), "gone from the list");

    // Changes of channels not bridged are not published.
    let other = json!({"name": "member_added", "channel": "presence-other", "user_id": "u8"});
    assert_eq!(post_webhook(&app, NEW_KEY, NEW_SECRET, json!([other])).await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(published(&rest, "1111").await.is_empty());
}

#[tokio::test]
async fn the_bridge_needs_webhooks() {
    let config = base_config("http://127.0.0.1:9/check") + "\n[presence]\nbridge = [\"presence-*\"]\n";
    let err = pusher_dual_auth::config::Settings::from_toml(&config, None).unwrap_err().to_string();
    assert!(err.contains("presence.bridge") && err.contains("needs [webhooks]"), "{err}");
}

/// The host answers with the request's `u` parameter as the user, and an info of `pad` bytes.
struct UserFromParams;

impl wiremock::Respond for UserFromParams {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let user = body["params"]["u"].as_str().unwrap_or("u7").to_owned();
        let pad: usize = body["params"]["pad"].as_str().and_then(|p| p.parse().ok()).unwrap_or(0);
        ResponseTemplate::new(200)
            .set_body_json(json!({"user_id": user, "user_info": {"pad": "x".repeat(pad)}}))
    }
}

/// A REST API that accepts everything (publishes after `delay`) and lists no channels.
async fn accepting_rest(delay: Duration) -> MockServer {
    let rest = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})).set_delay(delay))
        .mount(&rest)
        .await;
    Mock::given(matchers::method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"channels": {}})))
        .mount(&rest)
        .await;
    rest
}

async fn spawn_with_users(rest: &MockServer, webhooks: &str, presence: &str) -> TestApp {
    let app = spawn_bridge_with(rest, webhooks, presence).await;
    Mock::given(matchers::path("/check"))
        .respond_with(UserFromParams)
        .with_priority(1)
        .mount(&app.host)
        .await;
    app
}

/// `user` authorizes `channels` through `route` (a batch when several); the answer.
async fn authorize_as(app: &TestApp, route: &str, user: &str, pad: usize, channels: &[&str]) -> (u16, Value) {
    let mut body = format!("socket_id=1234.5678&u={user}&pad={pad}");
    match channels {
        [one] => body.push_str(&format!("&channel_name={one}")),
        many => many.iter().enumerate().for_each(|(i, c)| body.push_str(&format!("&channel_name[{i}]={c}"))),
    }
    let res = app.post_form(route, &body).await;
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

/// `users` join `channel` through the new app: authorized there, then its webhook.
async fn join_on_new(app: &TestApp, channel: &str, users: &[String], pad: usize) {
    for u in users {
        assert_eq!(authorize_as(app, "/auth/new", u, pad, &[channel]).await.0, 200);
    }
    let events: Vec<Value> =
        users.iter().map(|u| json!({"name": "member_added", "channel": channel, "user_id": u})).collect();
    assert_eq!(post_webhook(app, NEW_KEY, NEW_SECRET, json!(events)).await, 200);
}

async fn metric(app: &TestApp, line: &str) -> f64 {
    let text = app.client.get(format!("{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
    text.lines().find(|l| l.starts_with(line)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn lists_beyond_the_answers_budget_are_left_out_and_counted() {
    let rest = accepting_rest(Duration::ZERO).await;
    let app = spawn_with_users(&rest, "", "max_answer_bytes = 1024").await;
    let rooms = ["presence-room-a", "presence-room-b", "presence-room-c"];
    for room in rooms {
        let users: Vec<String> = (0..5).map(|i| format!("{room}-u{i}")).collect();
        join_on_new(&app, room, &users, 150).await;
    }
    let (status, answer) = authorize_as(&app, "/auth/old", "m", 0, &rooms).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> =
        rooms.into_iter().filter(|r| answer[r]["data"].get("presence_bridge").is_some()).collect();
    assert_eq!(listed.len(), 1, "one list of ~850 bytes fits in 1024: {answer}");
    assert_eq!(answer[listed[0]]["data"]["presence_bridge"]["new"].as_object().unwrap().len(), 5);
    assert!(rooms.iter().all(|r| answer[r]["status"] == 200 && answer[r]["data"]["auth"].is_string()));
    let omitted = "pusher_presence_bridge_dropped_total{reason=\"answer_size\",what=\"list\"}";
    assert_eq!(metric(&app, omitted).await, 2.0);
}

#[tokio::test]
async fn a_list_with_members_costs_one_more_rate_limit_token() {
    let rest = accepting_rest(Duration::ZERO).await;
    let app = spawn_with_users(&rest, "", "[rate_limit]\nenabled = true\nper_second = 1\nburst = 4").await;
    join_on_new(&app, "presence-room-r", &["n1".to_owned()], 0).await; // one token
    // Check and list: two tokens of the three left.
    let (_, first) = authorize_as(&app, "/auth/old", "m", 0, &["presence-room-r"]).await;
    assert_eq!(first["presence_bridge"], json!({"new": {"n1": {"pad": ""}}}));
    // The check takes the last one: signed, without the list.
    let (status, second) = authorize_as(&app, "/auth/old", "m", 0, &["presence-room-r"]).await;
    assert_eq!(status, 200);
    assert!(second["auth"].is_string() && second.get("presence_bridge").is_none(), "{second}");
    let limited = "pusher_presence_bridge_dropped_total{reason=\"rate_limited\",what=\"list\"}";
    assert_eq!(metric(&app, limited).await, 1.0);
}

#[tokio::test]
async fn a_full_queue_drops_changes_and_counts_them() {
    let rest = accepting_rest(Duration::from_millis(1500)).await;
    let app = spawn_with_users(&rest, "", "max_queued_changes = 10").await;
    let occupied = json!({"name": "channel_occupied", "channel": "presence-room-q"});
    assert_eq!(post_webhook(&app, NEW_KEY, NEW_SECRET, json!([occupied])).await, 200);
    let join =
        |u: usize| json!({"name": "member_added", "channel": "presence-room-q", "user_id": format!("q{u}")});
    // The first is being published (slowly) while 100 more come: 10 wait, 90 are dropped.
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, json!([join(0)])).await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let many: Vec<Value> = (1..=100).map(join).collect();
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, json!(many)).await, 200);
    let dropped = "pusher_presence_bridge_dropped_total{reason=\"queue_full\",what=\"change\"}";
    assert_eq!(metric(&app, dropped).await, 90.0);
    assert_eq!(
        metric(&app, "pusher_presence_bridge_events_total{app=\"new\",result=\"dropped\"}").await,
        90.0
    );
    let got = until_published(&rest, "2222", 11).await;
    assert_eq!(got.len(), 11, "the first, then the 10 queued in one call");
}

#[tokio::test]
async fn redis_mode_keeps_the_same_bounds_and_forgets_who_left() {
    let Some(redis) = crate::common::redis_server::RedisServer::start() else { return };
    let rest = accepting_rest(Duration::ZERO).await;
    let store = format!("state = \"redis\"\nredis_url = \"redis://127.0.0.1:{}/0\"\n", redis.port);
    let app = spawn_with_users(&rest, &store, "max_channels_per_user = 2").await;
    let mut r = redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let remembered = async |r: &mut redis::aio::MultiplexedConnection, channel: &str, user: &str| -> bool {
        redis::cmd("HEXISTS")
            .arg(format!("pusher-dual-auth:minfo:{channel}"))
            .arg(user)
            .query_async(r)
            .await
            .unwrap()
    };
    // One user, three channels: its oldest is forgotten (at most 2 each).
    for c in ["presence-room-1", "presence-room-2", "presence-room-3"] {
        assert_eq!(authorize_as(&app, "/auth/old", "m", 0, &[c]).await.0, 200);
    }
    assert!(!remembered(&mut r, "presence-room-1", "m").await);
    assert!(remembered(&mut r, "presence-room-3", "m").await);
    // Someone present through new (its channel_occupied never came): new is told.
    let n1 = json!({"name": "member_added", "channel": "presence-room-3", "user_id": "n1"});
    assert_eq!(post_webhook(&app, NEW_KEY, NEW_SECRET, json!([n1])).await, 200);
    // Joined twice (once a real change), then left every app: published twice, forgotten.
    let add = json!({"name": "member_added", "channel": "presence-room-3", "user_id": "m"});
    let rm = json!({"name": "member_removed", "channel": "presence-room-3", "user_id": "m"});
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, json!([add, add])).await, 200);
    until_published(&rest, "2222", 1).await; // else one round would keep the leave only
    assert_eq!(post_webhook(&app, OLD_KEY, OLD_SECRET, json!([add, rm, rm])).await, 200);
    let got = until_published(&rest, "2222", 2).await;
    let seen: Vec<(&Value, &Value)> = got.iter().map(|(_, d)| (&d["present"], &d["user_info"])).collect();
    assert_eq!(seen, [(&json!(true), &json!({"pad": ""})), (&json!(false), &Value::Null)], "{got:?}");
    assert!(!remembered(&mut r, "presence-room-3", "m").await, "left every app after joining");
    let evicted = "pusher_presence_bridge_dropped_total{reason=\"user_cap\",what=\"info\"}";
    assert_eq!(metric(&app, evicted).await, 1.0);
}
