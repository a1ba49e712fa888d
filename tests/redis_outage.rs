//! A Redis outage under the running binary (`[webhooks] state = "redis"`):
//! Redis killed, or frozen with SIGSTOP as a network partition looks, while
//! webhooks arrive. Every webhook is answered within 2 s (503 + Retry-After
//! while Redis cannot take it, never held until Redis returns), auth keeps
//! signing, and the webhook Pusher retries after Redis is back reaches the
//! host exactly once. Rounds: REDIS_OUTAGE_KILLS (20) and REDIS_OUTAGE_FREEZES (5).
mod common;

use common::{Service, TempDir, env_or as rounds, redis_server::RedisServer};
use pusher_dual_auth::pusher::hmac_sha256_hex;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wiremock::MockServer;

/// What the issue asks of every answer during an outage.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
const OLD_KEY: &str = "old-key";
const OLD_SECRET: &str = "old-secret";

fn config(host: &str, redis_port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
admin_listen = "127.0.0.1:{{admin}}"
workers = 2
[session_check]
url = "{host}/check"
[apps.old]
app_id = "1111"
key = "{OLD_KEY}"
secret = "{OLD_SECRET}"
rest_url = "{host}"
[apps.new]
app_id = "2222"
key = "new-key"
secret = "new-secret"
rest_url = "{host}"
[webhooks]
forward_url = "{host}/hook"
key = "hook-key"
secret = "hook-secret"
state = "redis"
redis_url = "redis://127.0.0.1:{redis_port}/0"
"#
    )
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A signed webhook from the old app: (status, Retry-After, how long the answer took).
    async fn webhook(&self, body: &str) -> (u16, Option<String>, Duration) {
        let started = Instant::now();
        let res = self
            .http
            .post(format!("{}/webhooks", self.base))
            .header("content-type", "application/json")
            .header("x-pusher-key", OLD_KEY)
            .header("x-pusher-signature", hmac_sha256_hex(OLD_SECRET.as_bytes(), body.as_bytes()))
            .body(body.to_owned())
            .send()
            .await;
        let elapsed = started.elapsed();
        match res {
            Ok(r) => {
                let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                (r.status().as_u16(), retry, elapsed)
            }
            Err(e) => panic!("no answer to a webhook after {elapsed:?}: {e}"),
        }
    }

    /// One channel authorization: (status, how long it took).
    async fn auth(&self) -> (u16, Duration) {
        let started = Instant::now();
        let res = self
            .http
            .post(format!("{}/auth/old", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("socket_id=1234.5678&channel_name=private-outage")
            .send()
            .await
            .expect("an auth answer");
        (res.status().as_u16(), started.elapsed())
    }

    /// Retries the webhook as Pusher does, until it is acknowledged (within 20 s).
    async fn webhook_until_acknowledged(&self, body: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _, took) = self.webhook(body).await;
            assert!(took < ANSWER_WITHIN, "a retried webhook took {took:?}");
            if status == 200 {
                return;
            }
            assert_eq!(status, 503, "only 'store unavailable' is expected while Redis comes back");
            assert!(Instant::now() < deadline, "not acknowledged 20 s after Redis came back");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The channels the host received `channel_occupied` for, each as often as it came.
async fn forwarded(host: &MockServer) -> Vec<String> {
    let mut out = Vec::new();
    for r in host.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/hook") {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        for e in v["events"].as_array().unwrap() {
            out.push(e["channel"].as_str().unwrap().to_owned());
        }
    }
    out.sort();
    out
}

fn occupied(channel: &str) -> String {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    json!({"time_ms": now_ms,
           "events": [{"name": "channel_occupied", "channel": channel}]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_refuses_webhooks_at_once_and_loses_or_repeats_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Durable, as production runs it: what Redis acknowledged survives its kill.
    let Some(mut redis) = RedisServer::start_persistent() else { return };
    let host = common::host::start("/check", "/hook").await;
    let dir = TempDir::new("redis-outage");
    let service = Service::start(&dir, &config(&host.uri(), redis.port));
    let client = Client {
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        base: format!("http://127.0.0.1:{}", service.port),
    };
    client.webhook_until_acknowledged(&occupied("private-before")).await;
    let reachable = |want: f64| {
        let service = &service;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while service.metric("pusher_redis_reachable ") != want {
                assert!(Instant::now() < deadline, "pusher_redis_reachable never became {want}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    reachable(1.0).await;

    let (kills, freezes) = (rounds("REDIS_OUTAGE_KILLS", 20), rounds("REDIS_OUTAGE_FREEZES", 5));
    let mut expected = vec!["private-before".to_owned()];
    let mut slowest = Duration::ZERO;
    for round in 0..kills + freezes {
        let killed = round < kills;
        if killed {
            redis.kill();
        } else {
            redis.freeze();
        }
        // Vary the moment: at once, and while the service's Redis client is
        // reconnecting (the outbox sender polls every 200 ms and notices first).
        tokio::time::sleep(Duration::from_millis((round as u64 % 5) * 150)).await;
        let channel = format!("private-round-{round}");
        let body = occupied(&channel);
        let (status, retry_after, took) = client.webhook(&body).await;
        let (auth, auth_took) = client.auth().await;
        slowest = slowest.max(took);
        let what = if killed { "killed" } else { "frozen" };
        assert!(took < ANSWER_WITHIN, "round {round} ({what}): the webhook was answered after {took:?}");
        assert_eq!(status, 503, "round {round} ({what}): a webhook Redis cannot take is refused");
        assert_eq!(retry_after.as_deref(), Some("1"), "round {round}: 503 says when to retry");
        assert_eq!(auth, 200, "round {round} ({what}): auth needs no Redis");
        assert!(auth_took < ANSWER_WITHIN, "round {round}: auth took {auth_took:?}");
        if round == 0 {
            reachable(0.0).await; // what the RedisUnavailable alert reads
        }
        if killed {
            redis.restart();
        } else {
            redis.thaw();
        }
        if round == 0 {
            reachable(1.0).await;
        }
        client.webhook_until_acknowledged(&body).await;
        expected.push(channel);
    }
    expected.sort();

    // Every acknowledged webhook forwarded once: none lost, none repeated.
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let got = forwarded(&host).await;
        if got.len() >= expected.len() || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_millis(1000)).await; // a late duplicate would show now
    let got_later = forwarded(&host).await;
    assert_eq!(got, expected, "forwarded once each");
    assert_eq!(got_later, expected, "and nothing more afterwards");
    eprintln!(
        "{kills} kills and {freezes} freezes: slowest first answer {slowest:?}; {} webhooks forwarded once each",
        expected.len()
    );
    assert!(service.stop(), "stops cleanly on SIGTERM");
}
