//! Hot reload with the real binary: a Kubernetes-style secret swap (the `..data`
//! symlink) and a third app added, under load, without a failed request; an
//! invalid config is rejected and the previous one kept; SIGHUP reloads.
mod common;
use common::Edit;
use pusher_dual_auth::pusher::hmac_sha256_hex;
use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn config(port: u16, admin: u16, host: &str, secrets: &Path, third: bool) -> String {
    let mut c = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nworkers = 2\n\
         [session_check]\nurl = \"{host}/check\"\n\
         [apps.old]\napp_id = \"1\"\nkey = \"old-key\"\nsecret = \"old-secret\"\n\
         [apps.new]\napp_id = \"2\"\nkey = \"new-key\"\nsecret_file = \"{}\"\n",
        secrets.join("new").display()
    );
    if third {
        c.push_str("[apps.third]\napp_id = \"3\"\nkey = \"third-key\"\nsecret = \"third-secret\"\n");
    }
    c
}

/// Writes `secret` as a new version and swaps the `..data` symlink, as the kubelet does.
fn k8s_write(dir: &Path, version: &str, secret: &str) {
    let v = dir.join(version);
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join("new"), secret).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if !dir.join("new").exists() {
        symlink("..data/new", dir.join("new")).unwrap();
    }
}

async fn metrics(client: &reqwest::Client, admin: u16) -> String {
    client.get(format!("http://127.0.0.1:{admin}/metrics")).send().await.unwrap().text().await.unwrap()
}

/// Generous: a loaded 2-core CI machine may be slow; these tests check what
/// happens, not how fast.
async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_rotate_and_apps_appear_under_load_without_a_failed_request() {
    let host = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&host)
        .await;
    let dir: PathBuf = std::env::temp_dir().join(format!("dual-auth-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    k8s_write(&secrets, "..v1", "new-secret-1");
    let (port, admin) = (common::free_port(), common::free_port());
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config(port, admin, &host.uri(), &secrets, false)).unwrap();
    let mut child = Command::new(common::bin())
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("service.log")).unwrap())
        .spawn()
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    wait_until("startup", async || {
        client.get(format!("http://127.0.0.1:{admin}/readyz")).send().await.is_ok()
    })
    .await;
    // Metrics live on the admin listener only.
    let main_metrics = client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(main_metrics.status(), 404);

    // Load: 4 tasks posting to /auth/new until told to stop; record every answer.
    let stop = Arc::new(AtomicBool::new(false));
    // (sent at, answered at, status, body), in completion order.
    let answers = Arc::new(Mutex::new(Vec::<(Instant, Instant, u16, String)>::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, answers, client) = (stop.clone(), answers.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let res = client
                    .post(format!("http://127.0.0.1:{port}/auth/new"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("socket_id=1.1&channel_name=private-a")
                    .send()
                    .await;
                let (status, body) = match res {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                };
                let entry = (sent, Instant::now(), status, body);
                answers.lock().unwrap().push(entry);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Rotate the secret (symlink swap) and add a third app, while the load runs.
    k8s_write(&secrets, "..v2", "new-secret-2");
    std::fs::write(&config_path, config(port, admin, &host.uri(), &secrets, true)).unwrap();
    let sig = |secret: &str| {
        format!("{{\"auth\":\"new-key:{}\"}}", hmac_sha256_hex(secret.as_bytes(), b"1.1:private-a"))
    };
    let (v1, v2) = (sig("new-secret-1"), sig("new-secret-2"));
    wait_until("the rotated secret", async || answers.lock().unwrap().last().is_some_and(|a| a.3 == v2))
        .await;
    wait_until("the third app", async || {
        client
            .post(format!("http://127.0.0.1:{port}/auth/third"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("socket_id=1.1&channel_name=private-a")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // An invalid config is rejected, the previous one keeps serving, the metric says so.
    std::fs::write(&config_path, "[server]\nlisten = nonsense").unwrap();
    wait_until("the rejected reload", async || {
        metrics(&client, admin).await.contains("pusher_auth_config_last_reload_successful 0")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let answers = answers.lock().unwrap().clone();
    let (mut old, mut new, mut bad) = (0, 0, Vec::new());
    for (_, _, status, body) in answers.iter() {
        match (status, body) {
            (200, b) if *b == v1 => old += 1,
            (200, b) if *b == v2 => new += 1,
            _ => bad.push((status, body)),
        }
    }
    println!(
        "reload under load: {} requests; {old} signed with the old secret, {new} with the new; {} failed",
        answers.len(),
        bad.len()
    );
    assert!(bad.is_empty(), "failed requests during reload: {:?}", &bad[..bad.len().min(5)]);
    assert!(old > 0 && new > 0);
    // In-flight requests finish with the config they started with; every request
    // sent after the first new-secret answer came back uses the new secret. (A
    // request sent earlier may still be read before the swap, on another worker.)
    let swapped_by = answers.iter().find(|a| a.3 == v2).unwrap().1;
    let late_old = answers.iter().filter(|a| a.0 > swapped_by && a.3 != v2).count();
    assert_eq!(late_old, 0, "old secret used after the swap");

    // SIGHUP reloads too (the config is still invalid: one more rejected reload).
    let before = metrics(&client, admin).await;
    let count = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("pusher_auth_config_reloads_total{result=\"failure\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    wait_until("the SIGHUP reload", async || count(&metrics(&client, admin).await) > count(&before)).await;
    let m = metrics(&client, admin).await;
    assert!(m.contains("pusher_auth_requests_total{app=\"new\",kind=\"private\",outcome=\"signed\"}"), "{m}");
    assert!(
        m.contains("pusher_auth_session_check_duration_seconds_count{app=\"new\",result=\"2xx\"}"),
        "{m}"
    );

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload rejected because a secret file is missing is retried when the file
/// appears, with no SIGHUP; a TOML syntax error names file, line and key and
/// never the value on that line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_reload_is_retried_when_its_secret_file_appears_and_syntax_errors_hide_values() {
    let dir = common::TempDir::new("reload-rejected");
    let secret_dir = dir.0.join("later"); // does not exist yet: not even watchable
    let base = "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
                [session_check]\nurl = \"http://127.0.0.1:9/check\"\n\
                [apps.old]\napp_id = \"1\"\nkey = \"old-key\"\nsecret = \"old-secret\"\n";
    let service = common::Service::start(&dir, base);
    let config = std::fs::read_to_string(dir.0.join("config.toml")).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let ok = |m: &str| m.lines().any(|l| l == "pusher_auth_config_last_reload_successful 1");

    // A new app whose secret file is not there yet: rejected, the old config keeps serving.
    let with_new = format!(
        "{config}[apps.new]\napp_id = \"2\"\nkey = \"new-key\"\nsecret_file = \"{}\"\n",
        secret_dir.join("new").display()
    );
    std::fs::write(dir.0.join("config.toml"), &with_new).unwrap();
    wait_until("the rejected reload", async || !ok(&metrics(&client, service.admin).await)).await;

    // The file appears (directory and all): the reload succeeds by itself.
    std::fs::create_dir_all(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("new"), "new-secret").unwrap();
    wait_until("the retried reload", async || ok(&metrics(&client, service.admin).await)).await;
    let res = client
        .post(format!("http://127.0.0.1:{}/auth/new", service.port))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("socket_id=1.1&channel_name=private-a")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502, "the new app is served (its session check is down)");

    // A syntax error on a secret's line: the log names the line and key, not the value.
    let broken = with_new.edit("secret = \"old-secret\"", "secret = \"hunter2-SECRET-VALUE");
    std::fs::write(dir.0.join("config.toml"), &broken).unwrap();
    wait_until("the rejected reload", async || !ok(&metrics(&client, service.admin).await)).await;
    let line = broken.lines().position(|l| l.contains("hunter2")).unwrap() + 1;
    // The metric moves first; the log line follows it out of the process.
    wait_until("the rejection logged", async || service.log_text().contains("config key `apps.old.secret`"))
        .await;
    let log = service.log_text();
    assert!(!log.contains("hunter2"), "the secret reached the log:\n{log}");
    assert!(
        log.contains(&format!("config.toml line {line}")) && log.contains("config key `apps.old.secret`"),
        "{log}"
    );

    // And the same file at start (check-config): same report, same silence.
    let out = Command::new(common::bin())
        .args(["check-config", "--config"])
        .arg(dir.0.join("config.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("hunter2") && stderr.contains(&format!("line {line}")), "{stderr}");
    assert!(service.stop());
}

/// A reload that changes the rollout announces `rollout-changed` on the control
/// channel of both apps through their REST APIs, signed for each app; a reload
/// that leaves it as it was announces nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rollout_is_announced_on_both_apps_once() {
    use pusher_dual_auth::pusher::rest::verify_rest;
    let (old, new) = (MockServer::start().await, MockServer::start().await);
    for rest in [&old, &new] {
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
            .mount(rest)
            .await;
    }
    let dir = common::TempDir::new("reload-rollout");
    let config = |percent: &str, note: &str| {
        format!(
            "# {note}\n[server]\nlisten = \"127.0.0.1:{{port}}\"\nadmin_listen = \"127.0.0.1:{{admin}}\"\n\
             [session_check]\nurl = \"http://127.0.0.1:9/check\"\n\
             [apps.old]\napp_id = \"1\"\nkey = \"old-key\"\nsecret = \"old-secret\"\nrest_url = \"{}\"\n\
             [apps.new]\napp_id = \"2\"\nkey = \"new-key\"\nsecret = \"new-secret\"\nrest_url = \"{}\"\n\
             [rollout]\nfrom = \"old\"\nto = \"new\"\npercent = {percent}\nspread_secs = 5\n",
            old.uri(),
            new.uri()
        )
    };
    let service = common::Service::start(&dir, &config("0", "start"));
    let path = dir.0.join("config.toml");
    let ports = |text: String| {
        text.edit("{port}", &service.port.to_string()).edit("{admin}", &service.admin.to_string())
    };
    let events = async |rest: &MockServer| -> Vec<wiremock::Request> {
        rest.received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.url.path().ends_with("/events"))
            .collect()
    };
    assert!(events(&old).await.is_empty(), "nothing is announced at start");

    std::fs::write(&path, ports(config("50", "raise"))).unwrap();
    wait_until("both announcements", async || events(&old).await.len() == 1 && events(&new).await.len() == 1)
        .await;
    for (rest, app_id, key, secret) in
        [(&old, "1", "old-key", "old-secret"), (&new, "2", "new-key", "new-secret")]
    {
        let got = &events(rest).await[0];
        let params: Vec<(String, String)> = got.url.query_pairs().into_owned().collect();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let path = format!("/apps/{app_id}/events");
        verify_rest("POST", &path, &params, &got.body, now, |k| (k == key).then_some(secret))
            .expect("signed with the app's own credentials");
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(body["name"], "rollout-changed");
        assert_eq!(body["channel"], "pusher-dual-auth-rollout");
        let data: serde_json::Value = serde_json::from_str(body["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            (data["from"].as_str(), data["to"].as_str(), data["percent"].as_f64()),
            (Some("old"), Some("new"), Some(50.0))
        );
        assert_eq!(data["spread_secs"], 5);
        assert!(data["version"].is_u64());
    }

    // Same rollout, another edit: reloaded, not announced again.
    std::fs::write(&path, ports(config("50", "comment only"))).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!((events(&old).await.len(), events(&new).await.len()), (1, 1));
    assert!(service.log_text().matches("configuration reloaded").count() >= 2, "{}", service.log_text());
    assert!(service.stop());
}
