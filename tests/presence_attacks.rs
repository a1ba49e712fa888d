//! Attacks on the presence bridge from outside, against the real binary (the
//! security review's items 2-5): a signed-in user naming many bridged channels
//! (Redis and memory mode), a batch asking for many big member lists, and
//! webhooks full of member events. Figures are printed (`--nocapture`); sizes
//! can be raised for a measuring run (PRESENCE_ATTACK_CHANNELS, _USERS, _ROOMS,
//! _MEMBERS), and DUAL_AUTH_BIN runs the same attacks against another build
//! (the configs use only keys older builds know, so the defaults are tested).
mod common;

use common::{Service, TempDir, env_or, redis_server::RedisServer};
use pusher_dual_auth::pusher::hmac_sha256_hex;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers};

const PREFIX: &str = "pusher-dual-auth";
/// The defaults the bounds ship with (`[presence]`).
const PER_USER: usize = 100;
const PER_CHANNEL: usize = 250;
const ANSWER_BYTES: usize = 512 * 1024;

fn config(host: &str, rest: &str, redis_port: Option<u16>) -> String {
    let store = redis_port
        .map(|p| format!("state = \"redis\"\nredis_url = \"redis://127.0.0.1:{p}/0\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
admin_listen = "127.0.0.1:{{admin}}"
workers = 2
max_body_bytes = 16384
[session_check]
url = "{host}/check"
[apps.old]
app_id = "1111"
key = "old-key"
secret = "old-secret"
rest_url = "{rest}"
[apps.new]
app_id = "2222"
key = "new-key"
secret = "new-secret"
rest_url = "{rest}"
[webhooks]
forward_url = "{rest}/hook"
key = "hook-key"
secret = "hook-secret"
max_body_bytes = 1048576
{store}
[presence]
bridge = ["presence-room*"]
[log]
level = "warn"
"#
    )
}

/// The host's session check: the user is the request's `u` parameter (or
/// "mallory"), its info `{"name": u, "pad": "xxx…"}` with `pad` characters.
struct Check;

impl Respond for Check {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let param = |k: &str| body["params"][k].as_str().map(str::to_owned);
        let user = param("u").unwrap_or_else(|| "mallory".into());
        let pad = param("pad").and_then(|p| p.parse().ok()).unwrap_or(0);
        ResponseTemplate::new(200)
            .set_body_json(json!({"user_id": user, "user_info": {"name": user, "pad": "x".repeat(pad)}}))
    }
}

async fn host() -> MockServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let host = MockServer::builder().disable_request_recording().start().await;
    Mock::given(matchers::path("/check")).respond_with(Check).mount(&host).await;
    host
}

/// Both apps' REST API (answering `status` to publishes) and the webhook receiver.
async fn rest(status: u16) -> MockServer {
    let rest = MockServer::start().await;
    Mock::given(matchers::method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"channels": {}})))
        .mount(&rest)
        .await;
    Mock::given(matchers::path("/hook")).respond_with(ResponseTemplate::new(200)).mount(&rest).await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(status).set_body_json(json!({})))
        .mount(&rest)
        .await;
    rest
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(16).build().unwrap()
}

/// One channel authorization (or a batch, when `channels` has several) as user
/// `user` with `pad` bytes of info: (status, answer bytes).
async fn authorize(
    http: &reqwest::Client,
    service: &Service,
    app: &str,
    user: &str,
    pad: usize,
    channels: &[String],
) -> (u16, bytes::Bytes) {
    let mut body = format!("socket_id=1234.5678&u={user}&pad={pad}");
    match channels {
        [one] => body.push_str(&format!("&channel_name={one}")),
        many => many.iter().enumerate().for_each(|(i, c)| body.push_str(&format!("&channel_name[{i}]={c}"))),
    }
    let res = http
        .post(format!("http://127.0.0.1:{}/auth/{app}", service.port))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.bytes().await.unwrap())
}

/// `user` authorizes every channel of `channels`, in batches of 100, 4 at a time.
async fn authorize_all(service: &Service, app: &str, user: &str, pad: usize, channels: &[String]) {
    use futures_util::StreamExt;
    let http = client();
    futures_util::stream::iter(channels.chunks(100))
        .for_each_concurrent(4, |batch| {
            let http = &http;
            async move { assert_eq!(authorize(http, service, app, user, pad, batch).await.0, 200) }
        })
        .await;
}

/// Each `(user, channel)` authorizes alone, 8 at a time.
async fn authorize_each(service: &Service, app: &str, pad: usize, pairs: &[(String, String)]) {
    use futures_util::StreamExt;
    let http = client();
    futures_util::stream::iter(pairs)
        .for_each_concurrent(8, |(user, channel)| {
            let http = &http;
            async move {
                let (status, _) =
                    authorize(http, service, app, user, pad, std::slice::from_ref(channel)).await;
                assert_eq!(status, 200);
            }
        })
        .await;
}

static WEBHOOK_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One signed webhook from `app` ("old"/"new") with `events`; each call its own `time_ms`.
async fn webhook(service: &Service, app: &str, events: &[Value]) {
    let time_ms = now_ms() + WEBHOOK_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = json!({"time_ms": time_ms, "events": events}).to_string();
    let (key, secret) = if app == "old" { ("old-key", "old-secret") } else { ("new-key", "new-secret") };
    let res = client()
        .post(format!("http://127.0.0.1:{}/webhooks", service.port))
        .header("content-type", "application/json")
        .header("x-pusher-key", key)
        .header("x-pusher-signature", hmac_sha256_hex(secret.as_bytes(), body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

/// `member_added` (or `_removed`) events, sent in webhooks of at most 500.
async fn members(service: &Service, app: &str, name: &str, pairs: &[(String, String)]) {
    let events: Vec<Value> =
        pairs.iter().map(|(u, c)| json!({"name": name, "channel": c, "user_id": u})).collect();
    for chunk in events.chunks(500) {
        webhook(service, app, chunk).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The bridge events the REST API got for `app_id`, through either route: (REST calls, events).
async fn published(rest: &MockServer, app_id: &str) -> (usize, Vec<Value>) {
    let (mut calls, mut events) = (0, Vec::new());
    for r in rest.received_requests().await.unwrap() {
        let path = r.url.path();
        if !path.starts_with(&format!("/apps/{app_id}/")) || r.method.as_str() != "POST" {
            continue;
        }
        calls += 1;
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let batch = match body.get("batch") {
            Some(Value::Array(b)) => b.clone(),
            _ => vec![body],
        };
        for e in batch {
            assert_eq!(e["name"], "dual-auth:presence");
            let mut data: Value = serde_json::from_str(e["data"].as_str().unwrap()).unwrap();
            data["channel"] = e["channel"].clone();
            events.push(data);
        }
    }
    (calls, events)
}

/// Waits until the REST API has had no new request for `quiet`, at most `max`.
async fn settle(rest: &MockServer, quiet: Duration, max: Duration) -> Duration {
    let started = Instant::now();
    let (mut seen, mut since) = (usize::MAX, Instant::now());
    while started.elapsed() < max {
        let n = rest.received_requests().await.unwrap().len();
        if n != seen {
            (seen, since) = (n, Instant::now());
        } else if since.elapsed() >= quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    since.duration_since(started)
}

/// CPU seconds the service used so far (user + system).
fn cpu_secs(service: &Service) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", service.pid())).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn redis_conn(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// How many keys match `pattern`, and the bytes they take (MEMORY USAGE).
async fn count_keys(r: &mut redis::aio::MultiplexedConnection, pattern: &str) -> (usize, u64) {
    let (mut cursor, mut n, mut bytes) = (0u64, 0, 0);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(r)
            .await
            .unwrap();
        n += keys.len();
        for key in keys {
            let used: Option<u64> = redis::cmd("MEMORY").arg("USAGE").arg(key).query_async(r).await.unwrap();
            bytes += used.unwrap_or(0);
        }
        if next == 0 {
            return (n, bytes);
        }
        cursor = next;
    }
}

/// `INFO memory`'s used_memory and used_memory_dataset, and DBSIZE.
async fn used_memory(r: &mut redis::aio::MultiplexedConnection) -> (u64, u64, u64) {
    let info: String = redis::cmd("INFO").arg("memory").query_async(r).await.unwrap();
    let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap();
    let keys: u64 = redis::cmd("DBSIZE").query_async(r).await.unwrap();
    (field("used_memory:"), field("used_memory_dataset:"), keys)
}

/// Item 2: in Redis mode one user naming 20,000 made-up channels, and thousands
/// of users on one channel, leave a bounded number of remembered infos; a
/// member who joined and left every app is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_remembers_a_bounded_number_of_member_infos() {
    let Some(redis) = RedisServer::start() else { return };
    let (host, rest) = (host().await, rest(200).await);
    let dir = TempDir::new("presence-redis");
    let service = Service::start(&dir, &config(&host.uri(), &rest.uri(), Some(redis.port)));
    let mut r = redis_conn(redis.port).await;
    let memory_at_start = used_memory(&mut r).await;

    let n = env_or("PRESENCE_ATTACK_CHANNELS", 2_000);
    let junk: Vec<String> = (0..n).map(|i| format!("presence-room-junk-{i}")).collect();
    let started = Instant::now();
    authorize_all(&service, "old", "mallory", 20, &junk).await;
    let took = started.elapsed();
    let (info_hashes, _) = count_keys(&mut r, &format!("{PREFIX}:minfo:*")).await;
    let (info_keys, info_bytes) = count_keys(&mut r, &format!("{PREFIX}:minfo*")).await;
    let memory_after_junk = used_memory(&mut r).await;

    let users = env_or("PRESENCE_ATTACK_USERS", 600);
    let busy: Vec<(String, String)> =
        (0..users).map(|i| (format!("u{i}"), "presence-room-busy".into())).collect();
    authorize_each(&service, "old", 20, &busy).await;
    let hlen: usize = redis::cmd("HLEN")
        .arg(format!("{PREFIX}:minfo:presence-room-busy"))
        .query_async(&mut r)
        .await
        .unwrap();

    let leaver = [("leaver".to_owned(), "presence-room-left".to_owned())];
    authorize_each(&service, "old", 20, &leaver).await;
    members(&service, "old", "member_added", &leaver).await;
    members(&service, "old", "member_removed", &leaver).await;
    let kept: bool = redis::cmd("HEXISTS")
        .arg(format!("{PREFIX}:minfo:presence-room-left"))
        .arg("leaver")
        .query_async(&mut r)
        .await
        .unwrap();
    let memory_at_end = used_memory(&mut r).await;
    println!(
        "redis: {n} made-up channels authorized by one user in {took:?}: {info_hashes} minfo:* hashes, \
         {info_keys} minfo* keys of {info_bytes} B; (used_memory, used_memory_dataset, DBSIZE) {memory_at_start:?} -> \
         {memory_after_junk:?}; {users} users on one channel: HLEN {hlen}; at end {memory_at_end:?}; \
         left after joining: remembered {kept}"
    );
    assert!(info_hashes <= PER_USER, "one user's infos are remembered in {info_hashes} channels");
    assert!(info_keys <= 4 * PER_USER + 2, "{info_keys} keys for one user's infos");
    assert!(hlen <= PER_CHANNEL, "{hlen} infos remembered for one channel");
    assert!(!kept, "a member who left every app is forgotten");
}

/// Item 3: in memory mode a user authorized for (and a member of) 10,000
/// bridged channels neither pushes a later member's info out nor slows the
/// authorization of bridged channels it is not in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_in_many_channels_neither_hides_infos_nor_slows_authorizations() {
    let (host, rest) = (host().await, rest(200).await);
    let dir = TempDir::new("presence-memory");
    let service = Service::start(&dir, &config(&host.uri(), &rest.uri(), None));

    let n = env_or("PRESENCE_ATTACK_CHANNELS", 10_000);
    let channels: Vec<String> = (0..n).map(|i| format!("presence-room-m{i}")).collect();
    authorize_all(&service, "old", "mallory", 20, &channels).await;
    let pairs: Vec<(String, String)> = channels.iter().map(|c| ("mallory".to_owned(), c.clone())).collect();
    members(&service, "old", "member_added", &pairs).await;
    settle(&rest, Duration::from_millis(500), Duration::from_secs(120)).await;

    // Bridged channels not remembered yet, against channels not bridged, taking turns.
    let http = client();
    let (mut bridged, mut plain) = (Vec::new(), Vec::new());
    for i in 0..env_or("PRESENCE_ATTACK_AUTHS", 200) {
        for (channel, out) in
            [(format!("presence-room-fresh-{i}"), &mut bridged), (format!("presence-plain-{i}"), &mut plain)]
        {
            let started = Instant::now();
            assert_eq!(authorize(&http, &service, "old", &format!("v{i}"), 20, &[channel]).await.0, 200);
            out.push(started.elapsed());
        }
    }
    let (bridged, plain) = (median(bridged), median(plain));

    // A later member of a room whose other side (new) is occupied: its info reaches new.
    webhook(&service, "new", &[json!({"name": "channel_occupied", "channel": "presence-room-victim"})]).await;
    let victim = [("victim".to_owned(), "presence-room-victim".to_owned())];
    authorize_each(&service, "old", 20, &victim).await;
    members(&service, "old", "member_added", &victim).await;
    let mut info = None;
    for _ in 0..200 {
        let (_, events) = published(&rest, "2222").await;
        info = events.into_iter().find(|e| e["user_id"] == "victim").map(|e| e["user_info"].clone());
        if info.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "memory: one user in {n} bridged channels; median authorization: bridged {bridged:?}, \
         not bridged {plain:?}; a later member's published info: {info:?}"
    );
    assert_eq!(info, Some(json!({"name": "victim", "pad": "x".repeat(20)})), "the later member's info");
    assert!(bridged <= plain * 2 + Duration::from_millis(1), "bridged {bridged:?} vs {plain:?}");
}

/// Item 4: a batch naming 100 bridged rooms of 100 members with ~1 KB infos
/// gets a bounded answer, at a bounded cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_big_rooms_gets_a_bounded_answer() {
    let (host, rest) = (host().await, rest(200).await);
    let dir = TempDir::new("presence-batch");
    let service = Service::start(&dir, &config(&host.uri(), &rest.uri(), None));
    let (rooms, per_room) = (env_or("PRESENCE_ATTACK_ROOMS", 100), env_or("PRESENCE_ATTACK_MEMBERS", 100));
    let room = |r: usize| format!("presence-room-big-{r}");
    let pairs: Vec<(String, String)> =
        (0..rooms).flat_map(|r| (0..per_room).map(move |k| (format!("r{r}-m{k}"), room(r)))).collect();
    authorize_each(&service, "new", 960, &pairs).await;
    members(&service, "new", "member_added", &pairs).await;

    let channels: Vec<String> = (0..rooms).map(room).collect();
    let http = client();
    let (mut sizes, mut times) = (Vec::new(), Vec::new());
    let cpu_before = cpu_secs(&service);
    let rounds = env_or("PRESENCE_ATTACK_ROUNDS", 5);
    for _ in 0..rounds {
        let started = Instant::now();
        let (status, body) = authorize(&http, &service, "old", "mallory", 20, &channels).await;
        times.push(started.elapsed());
        assert_eq!(status, 200);
        sizes.push(body.len());
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert!(channels.iter().all(|c| answer[c]["status"] == 200), "every room is still authorized");
    }
    let cpu = (cpu_secs(&service) - cpu_before) / rounds as f64;
    let biggest = *sizes.iter().max().unwrap();
    println!(
        "batch of {rooms} bridged rooms x {per_room} members: answer {biggest} B, median {:?}, \
         service CPU {:.0} ms per request",
        median(times),
        cpu * 1000.0
    );
    // The lists within the cap; each room's own authorization (~300 B) besides.
    assert!(biggest <= ANSWER_BYTES + rooms * 400, "a {biggest}-byte answer");
}

/// Item 5: member events are published once per real change of an app's
/// members, only to apps where the channel has subscribers, ten to a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_events_are_published_once_per_real_change_in_batches() {
    let (host, rest) = (host().await, rest(200).await);
    let dir = TempDir::new("presence-publish");
    let service = Service::start(&dir, &config(&host.uri(), &rest.uri(), None));
    webhook(&service, "new", &[json!({"name": "channel_occupied", "channel": "presence-room-five"})]).await;

    // 700 joins in one webhook.
    let joins: Vec<(String, String)> =
        (0..700).map(|i| (format!("j{i}"), "presence-room-five".to_owned())).collect();
    members(&service, "old", "member_added", &joins[..500]).await;
    members(&service, "old", "member_added", &joins[500..]).await;
    // The same join, 50 times (each a distinct webhook).
    let dup = [("dup".to_owned(), "presence-room-five".to_owned())];
    for _ in 0..50 {
        members(&service, "old", "member_added", &dup).await;
    }
    // 100 joins in a room nobody on new is subscribed to.
    let empty: Vec<(String, String)> =
        (0..100).map(|i| (format!("e{i}"), "presence-room-empty".to_owned())).collect();
    members(&service, "old", "member_added", &empty).await;
    settle(&rest, Duration::from_secs(1), Duration::from_secs(60)).await;

    let (calls, events) = published(&rest, "2222").await;
    let count = |f: &dyn Fn(&Value) -> bool| events.iter().filter(|e| f(e)).count();
    let joined = count(&|e| e["user_id"].as_str().is_some_and(|u| u.starts_with('j')));
    let dups = count(&|e| e["user_id"] == "dup");
    let to_empty = count(&|e| e["channel"] == "presence-room-empty");
    println!(
        "700 joins + 50 copies of one + 100 joins in an unoccupied room: {calls} REST calls to new, \
         {} events ({joined} joins, {dups} of the copied one, {to_empty} to the unoccupied room)",
        events.len()
    );
    assert_eq!((joined, dups, to_empty), (700, 1, 0), "each real change once, none to the unoccupied room");
    assert!(calls <= 71 + 1, "{calls} REST calls for 701 changes");
    assert_eq!(published(&rest, "1111").await.0, 0, "never to the app the change came from");
}

/// Item 5: against a REST API answering 500, 700 changes are tried in a few
/// dozen calls within seconds, not minutes of one call after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_rest_api_costs_seconds_not_minutes() {
    let (host, rest) = (host().await, rest(500).await);
    let dir = TempDir::new("presence-failing");
    let service = Service::start(&dir, &config(&host.uri(), &rest.uri(), None));
    webhook(&service, "new", &[json!({"name": "channel_occupied", "channel": "presence-room-five"})]).await;
    let joins: Vec<(String, String)> =
        (0..700).map(|i| (format!("j{i}"), "presence-room-five".to_owned())).collect();
    let started = Instant::now();
    members(&service, "old", "member_added", &joins[..500]).await;
    members(&service, "old", "member_added", &joins[500..]).await;
    let busy = settle(&rest, Duration::from_secs(2), Duration::from_secs(30)).await;
    let (calls, events) = published(&rest, "2222").await;
    let failed = service.metric("pusher_presence_bridge_events_total{app=\"new\",result=\"failed\"}");
    println!(
        "700 changes against a REST API answering 500: {calls} calls ({} events) over {busy:?} \
         (since the first webhook {:?}); failed counted: {failed}",
        events.len(),
        started.elapsed()
    );
    assert!(busy < Duration::from_secs(10), "still publishing after {busy:?}");
    assert_eq!(failed, 700.0, "every change not told is counted");
    assert!(calls <= 80, "{calls} calls");
}
