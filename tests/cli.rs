//! The binary as a user runs it: check-config, serve, demo.
mod common;
use common::Edit;
use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn config_file(contents: &str) -> tempfile_lite::Path {
    tempfile_lite::write(contents)
}

/// A tiny temp-file helper (no extra crate needed).
mod tempfile_lite {
    pub struct Path(pub std::path::PathBuf);
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    pub fn write(contents: &str) -> Path {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "dual-auth-cli-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&p, contents).unwrap();
        Path(p)
    }
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:PORT"
admin_listen = "127.0.0.1:0"
[session_check]
url = "http://127.0.0.1:9/check"
[apps.old]
app_id = "1111"
key = "old-key"
secret = "old-secret-value"
[apps.new]
app_id = "2222"
key = "new-key"
secret = "new-secret-value"
encryption_master_key_base64 = "zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU="
"#;

fn clean_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("DUAL_AUTH") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn check_config_prints_the_effective_config_without_secrets() {
    let file = config_file(&GOOD.edit("PORT", "8080"));
    let out = clean_env(Command::new(common::bin()).args(["check-config", "--config"]).arg(&file.0))
        .env("DUAL_AUTH__APPS__OLD__SECRET", "env-secret-value")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for secret in ["old-secret-value", "new-secret-value", "env-secret-value", "zyrm8pvV"] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    assert!(stdout.contains("new-key") && stdout.contains("[redacted]"), "{stdout}");
    assert!(stdout.find("[server]").unwrap() < stdout.find("[apps.old]").unwrap(), "sections in file order");
}

#[test]
fn check_config_warns_loudly_when_state_is_kept_in_one_process() {
    let check = |extra: &str| {
        let file = config_file(&format!("{}{extra}", GOOD.edit("PORT", "8080")));
        let out = clean_env(Command::new(common::bin()).args(["check-config", "--config"]).arg(&file.0))
            .output()
            .unwrap();
        assert!(out.status.success(), "a warning is not an error: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stderr).unwrap()
    };
    let webhooks = "[webhooks]\nforward_url = \"http://127.0.0.1:9/hook\"\nkey = \"k\"\nsecret = \"s\"\n";
    let publish =
        "[publish]\napp_id = \"dual\"\nkey = \"pk\"\nsecret = \"ps\"\ntargets = [\"old\"]\n[recovery]\n";
    let failover = "[rollout]\nfrom = \"old\"\nto = \"new\"\n[failover]\nenabled = true\n";
    let memory = check(&format!("{webhooks}{publish}{failover}"));
    for section in [
        "[webhooks] state = \"memory\" is for ONE process",
        "[recovery] keeps events in this process",
        "[failover] without Redis",
    ] {
        assert!(memory.contains(&format!("warning: {section}")), "{section}: {memory}");
    }
    let redis = check(&format!(
        "{webhooks}state = \"redis\"\nredis_url = \"redis://127.0.0.1:9\"\n{publish}{failover}"
    ));
    assert!(!redis.contains("warning:"), "{redis}");
    assert!(!check("").contains("warning:"), "nothing kept, nothing to warn about");
}

#[test]
fn check_config_names_the_bad_key_and_fails() {
    let cases = [
        (GOOD.edit("secret = \"old-secret-value\"", ""), "apps.old.secret"),
        (
            GOOD.edit("zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=", "c2hvcnQ="),
            "apps.new.encryption_master_key_base64",
        ),
        (GOOD.edit("http://127.0.0.1:9/check", "nope"), "session_check.url"),
        (GOOD.edit("[apps.new]", "[apps.new]\nsecrt = \"x\""), "secrt"),
    ];
    for (contents, key) in cases {
        let file = config_file(&contents.edit("PORT", "8080"));
        let out = clean_env(Command::new(common::bin()).args(["check-config", "--config"]).arg(&file.0))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "expected {key} in: {stderr}");
        assert!(!stderr.contains("old-secret-value") && !stderr.contains("new-secret-value"), "{stderr}");
    }
}

#[test]
fn the_config_path_can_come_from_dual_auth_config() {
    let file = config_file(&GOOD.edit("PORT", "8080"));
    let out = clean_env(&mut Command::new(common::bin()))
        .arg("check-config")
        .env("DUAL_AUTH_CONFIG", &file.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = clean_env(&mut Command::new(common::bin())).arg("check-config").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

fn wait_for(url: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(url) {
            let _ = s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
            let mut buf = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut buf);
            if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn serve_is_the_default_and_stops_cleanly_on_sigterm() {
    // SIGTERM as soon as the port answers, a few times: both listeners must see
    // it (each actix server used to register its own handler late, and one could
    // miss it and keep the process alive: 9 hangs in 40 runs under load).
    for _ in 0..5 {
        let port = common::free_port();
        let file = config_file(&GOOD.edit("PORT", &port.to_string()));
        let mut child = clean_env(&mut Command::new(common::bin()))
            .env("DUAL_AUTH_CONFIG", &file.0)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(wait_for(&format!("127.0.0.1:{port}")), "service did not come up");
        // SIGTERM: graceful shutdown, exit 0, within the shutdown timeout.
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("still running 20 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status:?}");
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(!stderr.contains("old-secret-value") && !stderr.contains("new-secret-value"));
    }
}

#[test]
fn the_demo_refuses_non_loopback_addresses() {
    let out = Command::new(common::bin()).args(["demo", "--listen", "0.0.0.0:18999"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn the_demo_serves_real_signatures() {
    let port = common::free_port();
    let dir = common::TempDir::new("demo-log");
    let log = dir.0.join("demo.log");
    let mut child = Command::new(common::bin())
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let up = wait_for(&format!("127.0.0.1:{port}"));
    let post = |auth: &str, body: &str| -> String {
        let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        let req = format!(
            "POST /auth/new HTTP/1.0\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut s, &mut buf).unwrap();
        buf
    };
    let ok =
        if up { post("alice", "socket_id=1234.1234&channel_name=private-foobar") } else { String::new() };
    let denied =
        if up { post("bob", "socket_id=1234.1234&channel_name=private-admin-ops") } else { String::new() };
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "demo did not come up");
    let expected = pusher_dual_auth::pusher::hmac_sha256_hex(b"demo-new-secret", b"1234.1234:private-foobar");
    assert!(ok.contains(&format!("demo-new-key:{expected}")), "{ok}");
    assert!(denied.starts_with("HTTP/1.0 403"), "{denied}");
    // Its log, redirected to a file, is plain text: no terminal colour codes.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO"), "the demo logged: {text}");
    assert!(!text.contains('\x1b'), "ANSI codes in a redirected log: {text:?}");
}

#[test]
fn the_example_config_is_valid() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config.example.toml")).unwrap();
    // The example reads the new app's secret from a file, as in a container.
    let secret = config_file("example-secret\n");
    let file = config_file(&example.edit("/run/secrets/pusher-new", secret.0.to_str().unwrap()));
    let out = clean_env(Command::new(common::bin()).args(["check-config", "--config"]).arg(&file.0))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `verify` gives one verdict: valid (exit 0), or what is wrong (exit 1), with
/// no second line that contradicts it.
#[test]
fn verify_answers_with_one_consistent_verdict() {
    let file = config_file(&GOOD.edit("PORT", "0"));
    let signature =
        pusher_dual_auth::pusher::hmac_sha256_hex(b"new-secret-value", b"1234.1234:private-foobar");
    let run = |auth: &str| {
        let out = clean_env(Command::new(common::bin()).args(["verify", "--config"]).arg(&file.0).args([
            "--socket-id",
            "1234.1234",
            "--channel",
            "private-foobar",
            "--auth",
            auth,
        ]))
        .output()
        .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&format!("new-key:{signature}"));
    assert_eq!((code, stderr.as_str()), (Some(0), ""), "{stdout}");
    assert!(stdout.starts_with("valid: signed by app \"new\""), "{stdout}");
    // The new app's signature under the old app's key: the cross-route mistake, or swapped secrets.
    let (code, stdout, stderr) = run(&format!("old-key:{signature}"));
    assert_eq!(code, Some(1));
    assert_eq!(stderr, "", "nothing but the verdict");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("mismatch:") && stdout.contains("swapped in the config"), "{stdout}");
}

/// The README's first real set-up is pasted as it is: its config must load.
#[test]
fn the_readmes_first_set_up_config_is_valid() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## A first real set-up").nth(1).expect("the README has its first set-up");
    let toml =
        section.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("a toml block in it");
    let file = config_file(toml);
    let out = clean_env(Command::new(common::bin()).args(["check-config", "--config"]).arg(&file.0))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
