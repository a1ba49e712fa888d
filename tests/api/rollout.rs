//! `GET /client-config`: which app a client should use during a rollout.
use crate::helpers::*;
use serde_json::Value;

const ORIGIN: &str = "https://app.example.com";

async fn rollout_app(rollout: &str) -> TestApp {
    let rollout = rollout.to_owned();
    spawn_app_with(move |c| {
        let c = c
            .edit("workers = 1", &format!("workers = 1\nallowed_origins = [\"{ORIGIN}\"]"))
            .edit("[apps.new]", "[apps.new]\ncluster = \"eu\"\nclient_options = { wsHost = \"ws.example.com\", wsPort = 6001, forceTLS = false }");
        format!("{c}\n[rollout]\n{rollout}\n")
    })
    .await
}

async fn get(app: &TestApp, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app.client.get(format!("{}/client-config{query}", app.address));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn config_for(app: &TestApp, uid: &str) -> Value {
    let res = get(app, &format!("?uid={uid}"), &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.json().await.unwrap()
}

#[tokio::test]
async fn without_a_rollout_there_is_no_client_config() {
    let app = spawn_app().await;
    assert_eq!(get(&app, "?uid=a", &[]).await.status(), 404);
}

#[tokio::test]
async fn the_answer_is_what_pusher_js_options_take_and_sticky_per_user() {
    let app = rollout_app("from = \"old\"\nto = \"new\"\npercent = 0\nforce_to = [\"tester-1\"]").await;
    let c = config_for(&app, "user-42").await;
    assert_eq!(c["app"], "old");
    assert_eq!(c["key"], OLD_KEY);
    assert_eq!(c["cluster"], "mt1");
    assert_eq!(c["channelAuthorization"]["endpoint"], "/auth/old");
    assert_eq!(c["userAuthentication"]["endpoint"], "/auth/old/user");
    assert_eq!(c["percent"].as_f64(), Some(0.0));
    assert_eq!(c["control_channel"], "pusher-dual-auth-rollout");
    assert!(c["version"].is_u64());
    assert!(c.get("failover").is_none(), "no [failover]: no field, and helpers do not re-read when dropped");
    // Force lists win over percent; the new app's client_options are handed over verbatim.
    let t = config_for(&app, "tester-1").await;
    assert_eq!(t["app"].as_str(), Some("new"));
    // Unauthenticated callers learn no list membership: a forced uid's answer has the
    // same fields as anyone's, and no bucket to compare with the percent.
    let fields = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(fields(&t), fields(&c));
    assert!(c.get("forced").is_none() && c.get("bucket").is_none(), "{c}");
    assert_eq!(t["key"], NEW_KEY);
    assert_eq!(t["cluster"], "eu");
    assert_eq!(
        t["client_options"],
        serde_json::json!({"wsHost": "ws.example.com", "wsPort": 6001, "forceTLS": false})
    );
    // The same uid gets the same answer, 1000 times out of 1000.
    for _ in 0..1000 {
        assert_eq!(config_for(&app, "user-42").await, c);
    }
    // A uid that is not a user id is refused.
    let bad = get(&app, "?uid=a%2Fb", &[]).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"]["code"], "invalid_uid");
}

#[tokio::test]
async fn without_a_uid_a_first_party_cookie_keeps_the_bucket() {
    let app = rollout_app("from = \"old\"\nto = \"new\"\npercent = 50").await;
    let first = get(&app, "", &[]).await;
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("pusher_dual_auth_rid=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let bucket = first.json::<Value>().await.unwrap()["bucket"].clone();
    let pair = cookie.split(';').next().unwrap();
    for _ in 0..20 {
        let again = get(&app, "", &[("cookie", pair)]).await;
        assert!(again.headers().get("set-cookie").is_none(), "the id is kept, not replaced");
        assert_eq!(again.json::<Value>().await.unwrap()["bucket"], bucket);
    }
    // Across 400 browsers, about half are on the new app.
    let mut on_new = 0;
    for _ in 0..400 {
        let c: Value = get(&app, "", &[]).await.json().await.unwrap();
        on_new += (c["app"] == "new") as usize;
    }
    assert!((140..=260).contains(&on_new), "{on_new} of 400 on new at 50 %");
}

/// Behind a trusted HTTPS proxy the cookie is `Secure`; the header from anyone
/// else is not believed, and plain HTTP keeps the cookie usable for dev setups.
#[tokio::test]
async fn the_cookie_is_secure_behind_a_trusted_https_proxy() {
    let secure = |res: &reqwest::Response| res.headers()["set-cookie"].to_str().unwrap().contains("; Secure");
    let trusting = spawn_app_with(|c| {
        let c = c.edit("workers = 1", "workers = 1\ntrusted_proxies = [\"127.0.0.1\"]");
        format!("{c}\n[rollout]\nfrom = \"old\"\nto = \"new\"\npercent = 50\n")
    })
    .await;
    assert!(secure(&get(&trusting, "", &[("x-forwarded-proto", "https")]).await));
    assert!(secure(&get(&trusting, "", &[("x-forwarded-proto", "HTTPS, http")]).await));
    assert!(!secure(&get(&trusting, "", &[("x-forwarded-proto", "http")]).await));
    assert!(!secure(&get(&trusting, "", &[]).await));
    let untrusting = rollout_app("from = \"old\"\nto = \"new\"\npercent = 50").await;
    assert!(!secure(&get(&untrusting, "", &[("x-forwarded-proto", "https")]).await), "a stranger's header");
}

#[tokio::test]
async fn client_config_follows_the_auth_routes_cors_rules() {
    let app = rollout_app("from = \"old\"\nto = \"new\"\npercent = 0").await;
    let ok = get(&app, "?uid=a", &[("origin", ORIGIN)]).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(get(&app, "?uid=a", &[("origin", "https://evil.example")]).await.status(), 403);
    let pre = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/client-config", app.address))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(pre.headers()["access-control-allow-methods"], "GET");
}

#[tokio::test]
async fn the_status_shows_the_target_beside_the_measured_share() {
    let app = rollout_app("from = \"old\"\nto = \"new\"\npercent = 12.5").await;
    let s: Value =
        app.client.get(format!("{}/status", app.admin)).send().await.unwrap().json().await.unwrap();
    assert_eq!(s["rollout"]["percent"], 12.5);
    assert_eq!((s["rollout"]["from"].as_str(), s["rollout"]["to"].as_str()), (Some("old"), Some("new")));
    assert!(s["apps"]["new"]["share"].is_number());
    assert_eq!(
        s["history"][0]["rollout_percent"], 12.5,
        "each sample records the target: changes show over time"
    );
}

#[tokio::test]
async fn a_stranger_cannot_make_client_config_wait_guess_or_grow() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = rollout_app("from = \"old\"\nto = \"new\"\npercent = 50").await;
    // A GET announcing a body it never sends: answered at once (the body is never read).
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /client-config?uid=a HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 32];
    let n = tokio::time::timeout(std::time::Duration::from_secs(1), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Two uids, or one too long: refused, not guessed.
    for query in ["?uid=a&uid=b", &format!("?uid={}", "x".repeat(129))] {
        let res = get(&app, query, &[]).await;
        assert_eq!(res.status(), 400, "{query}");
        assert_eq!(res.headers()["cache-control"], "no-store");
    }
    // 100 cookie-less reads: 100 fresh ids, nothing kept on the server (the id lives in the cookie).
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let res = get(&app, "", &[]).await;
        ids.insert(res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 100);
}

#[tokio::test]
async fn endpoints_are_the_ones_clients_can_reach_behind_a_proxy() {
    let endpoints = |c: &Value| {
        (
            c["channelAuthorization"]["endpoint"].as_str().unwrap().to_owned(),
            c["userAuthentication"]["endpoint"].as_str().unwrap().to_owned(),
        )
    };
    let prefixed = |prefix: &'static str| [("x-forwarded-prefix", prefix)];
    // Not a trusted proxy: its prefix is not believed.
    let app = rollout_app("from = \"old\"\nto = \"new\"\npercent = 0").await;
    let c: Value = get(&app, "?uid=u", &prefixed("/pusher/dual-auth")).await.json().await.unwrap();
    assert_eq!(endpoints(&c), ("/auth/old".into(), "/auth/old/user".into()));

    // A trusted proxy mounting the service under a prefix (the nginx recipe).
    let app = spawn_app_with(|c| {
        let c = c.edit("workers = 1", "workers = 1\ntrusted_proxies = [\"127.0.0.1\"]");
        format!("{c}\n[rollout]\nfrom = \"old\"\nto = \"new\"\npercent = 0\n")
    })
    .await;
    let c: Value = get(&app, "?uid=u", &prefixed("/pusher/dual-auth/")).await.json().await.unwrap();
    assert_eq!(
        endpoints(&c),
        ("/pusher/dual-auth/auth/old".into(), "/pusher/dual-auth/auth/old/user".into())
    );
    for bad in ["/a/../admin", "//evil.example", "https://evil.example", "/a b", "x"] {
        let c: Value = get(&app, "?uid=u", &[("x-forwarded-prefix", bad)]).await.json().await.unwrap();
        assert_eq!(endpoints(&c).0, "/auth/old", "prefix {bad:?} is not a plain path");
    }

    // Configured endpoints win (another host, or the recipe's own names).
    let app = spawn_app_with(|c| {
        let c = c.edit("[apps.old]", "[apps.old]\nauth_endpoint = \"/pusher/auth\"").edit(
            "[apps.new]",
            "[apps.new]\nauth_endpoint = \"https://auth.example.com/auth/new\"\n\
                 user_auth_endpoint = \"https://auth.example.com/sign-in\"",
        );
        format!("{c}\n[rollout]\nfrom = \"old\"\nto = \"new\"\npercent = 0\nforce_to = [\"t\"]\n")
    })
    .await;
    let c = config_for(&app, "u").await;
    assert_eq!(endpoints(&c), ("/pusher/auth".into(), "/pusher/auth/user".into()));
    let c = config_for(&app, "t").await;
    assert_eq!(
        endpoints(&c),
        ("https://auth.example.com/auth/new".into(), "https://auth.example.com/sign-in".into())
    );
}

#[test]
fn endpoints_must_be_paths_or_http_urls() {
    for bad in ["auth/new", "//host/x", "ftp://x/y", "https://u:p@x/y", "/a b", "https://x/y?z=1"] {
        let config = base_config("http://127.0.0.1:9/check")
            .edit("[apps.new]", &format!("[apps.new]\nauth_endpoint = \"{bad}\""));
        let Err(err) = pusher_dual_auth::config::Settings::from_toml(&config, None) else {
            panic!("{bad} accepted")
        };
        assert!(err.to_string().contains("apps.new.auth_endpoint"), "{bad}: {err}");
    }
}

/// The runbook's last step: the old app deleted. One app, `[rollout]` with only
/// `to`, publish targeting it: valid, and the helper's /client-config keeps
/// answering the remaining app to everyone (a build shipped for the migration
/// keeps connecting after it).
#[tokio::test]
async fn the_end_state_has_one_app_and_client_config_answers_it_to_everyone() {
    let host = wiremock::MockServer::start().await;
    let full = base_config(&format!("{}/check", host.uri()));
    let (start, end) = (full.find("[apps.old]").unwrap(), full.find("[apps.new]").unwrap());
    let one_app = format!(
        "{}{}\n[rollout]\nto = \"new\"\n[publish]\napp_id = \"dual\"\nkey = \"pk\"\nsecret = \"ps\"\ntargets = [\"new\"]\n",
        &full[..start],
        &full[end..]
    );
    assert!(!one_app.contains("[apps.old]") && one_app.contains("[apps.new]"), "the old app is gone");
    let app = spawn_with_config(host, &one_app).await;
    for uid in ["user-42", "tester-1", "vip-9", "anyone"] {
        let c = config_for(&app, uid).await;
        assert_eq!((c["app"].as_str(), c["key"].as_str()), (Some("new"), Some(NEW_KEY)), "{uid}");
        assert_eq!(c["percent"].as_f64(), Some(100.0));
    }
    let anonymous = get(&app, "", &[]).await;
    assert_eq!(anonymous.status(), 200);
    assert_eq!(anonymous.json::<Value>().await.unwrap()["app"], "new");
}
