use super::*;
use secrecy::ExposeSecret;
use std::time::Duration;

const MINIMAL: &str = r#"
[session_check]
url = "http://127.0.0.1:3000/check"
[apps.old]
app_id = "1111"
key = "oldkey"
secret = "oldsecret"
[apps.new]
app_id = "2222"
key = "278d425bdf160c739803"
secret = "7ad3773142a6692b25b8"
cluster = "eu"
"#;

fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn err(toml: &str, e: &[(&str, &str)]) -> ConfigError {
    Settings::from_toml(toml, env(e)).expect_err("should fail")
}

#[test]
fn minimal_config_loads_with_defaults() {
    let s = Settings::from_toml(MINIMAL, None).unwrap();
    assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.session_check.timeout, Duration::from_millis(2000));
    assert_eq!(s.apps.keys().collect::<Vec<_>>(), ["new", "old"]);
    assert_eq!(s.app("new").unwrap().cluster.as_deref(), Some("eu"));
}

#[test]
fn environment_overrides_the_file() {
    let s = Settings::from_toml(
        MINIMAL,
        env(&[
            ("DUAL_AUTH__APPS__NEW__SECRET", "from-env"),
            ("DUAL_AUTH__SESSION_CHECK__TIMEOUT_MS", "750"),
            ("DUAL_AUTH__SERVER__ALLOWED_ORIGINS", "https://a.example.com,https://b.example.com:8443"),
            ("DUAL_AUTH__APPS__THIRD__APP_ID", "3"),
            ("DUAL_AUTH__APPS__THIRD__KEY", "k3"),
            ("DUAL_AUTH__APPS__THIRD__SECRET", "s3"),
        ]),
    )
    .unwrap();
    assert_eq!(s.app("new").unwrap().credentials.secret.expose_secret(), "from-env");
    assert_eq!(s.session_check.timeout, Duration::from_millis(750));
    assert_eq!(s.server.allowed_origins, ["https://a.example.com", "https://b.example.com:8443"]);
    assert!(s.app("third").is_some());
}

#[test]
fn secrets_can_come_from_files() {
    let dir = std::env::temp_dir().join(format!("dual-auth-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("new");
    std::fs::write(&secret, "file-secret\n").unwrap();
    let master = dir.join("master");
    std::fs::write(&master, "zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=\n").unwrap();
    let toml = MINIMAL.replace(
        "secret = \"7ad3773142a6692b25b8\"",
        &format!("secret_file = {:?}\nencryption_master_key_file = {:?}", secret, master),
    );
    let s = Settings::from_toml(&toml, None).unwrap();
    let new = s.app("new").unwrap();
    assert_eq!(new.credentials.secret.expose_secret(), "file-secret");
    assert!(new.credentials.master_key.is_some());
}

#[test]
fn errors_name_the_key() {
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (MINIMAL.replace("secret = \"oldsecret\"", ""), vec![], "apps.old.secret"),
        (MINIMAL.replace("secret = \"oldsecret\"", "secret = \"\""), vec![], "apps.old.secret"),
        (
            MINIMAL.replace("secret = \"oldsecret\"", "secret = \"a\"\nsecret_file = \"/x\""),
            vec![],
            "apps.old.secret",
        ),
        (
            MINIMAL.replace("secret = \"oldsecret\"", "secret_file = \"/nonexistent/x\""),
            vec![],
            "apps.old.secret_file",
        ),
        (MINIMAL.replace("key = \"oldkey\"", "key = \"a:b\""), vec![], "apps.old.key"),
        (MINIMAL.replace("app_id = \"1111\"", ""), vec![], "apps.old.app_id"),
        (
            format!("{MINIMAL}encryption_master_key_base64 = \"c2hvcnQ=\""),
            vec![],
            "apps.new.encryption_master_key_base64",
        ),
        (MINIMAL.replace("http://127.0.0.1:3000/check", "ftp://x"), vec![], "session_check.url"),
        (MINIMAL.replace("http://127.0.0.1:3000/check", "not a url"), vec![], "session_check.url"),
        (MINIMAL.replace("[apps.old]", "[apps.Old]"), vec![], "apps.Old"),
        (format!("[server]\nlisten = \"nope\"\n{MINIMAL}"), vec![], "server.listen"),
        (
            format!("[server]\nallowed_origins = [\"https://a.com/\"]\n{MINIMAL}"),
            vec![],
            "server.allowed_origins",
        ),
        (
            format!("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n{MINIMAL}"),
            vec![],
            "server.trusted_proxies",
        ),
        (
            MINIMAL.replace("[session_check]", "[session_check]\nforward_headers = [\"Host\"]"),
            vec![],
            "session_check.forward_headers",
        ),
        (
            MINIMAL.replace("[session_check]", "[session_check]\nforward_headers = [\"X-Forwarded-For\"]"),
            vec![],
            "session_check.forward_headers",
        ),
        (
            MINIMAL.replace("[session_check]", "[session_check]\nforward_headers = [\"X-Check-Id\"]"),
            vec![],
            "session_check.forward_headers",
        ),
        (
            MINIMAL.replace("[session_check]", "[session_check]\nforward_headers = [\"Traceparent\"]"),
            vec![],
            "session_check.forward_headers",
        ),
        (format!("{MINIMAL}\n[telemetry]\nsample_ratio = 1.5\n"), vec![], "telemetry.sample_ratio"),
        (format!("{MINIMAL}\n[telemetry]\nprotocol = \"grpc\"\n"), vec![], "telemetry.protocol"),
        (format!("{MINIMAL}\n[telemetry]\notlp_endpoint = \"udp://x\"\n"), vec![], "telemetry.otlp_endpoint"),
        (
            MINIMAL.replace("[session_check]", "[session_check]\ntimeout_ms = 0"),
            vec![],
            "session_check.timeout_ms",
        ),
        (
            MINIMAL.to_string(),
            vec![("DUAL_AUTH__SESSION_CHECK__TIMEOUT_MS", "soon")],
            "session_check.timeout_ms",
        ),
        (MINIMAL.replace("[session_check]", "[session_check]\ntimeuot_ms = 5"), vec![], "timeuot_ms"),
        (format!("{MINIMAL}\n[bogus]\nx = 1"), vec![], "bogus"),
        ("[apps.a]\napp_id=\"1\"\nkey=\"k\"\nsecret=\"s\"".to_string(), vec![], "session_check"),
        ("[session_check]\nurl = \"http://x\"".to_string(), vec![], "apps"),
        (
            format!(
                "{MINIMAL}encryption_master_key_base64 = \"zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=\"\n\
                 [publish]\napp_id = \"p\"\nkey = \"pk\"\nsecret = \"ps\"\ntargets = [\"old\", \"new\"]"
            ),
            vec![],
            "publish.targets",
        ),
        (
            format!(
                "{MINIMAL}[publish]\napp_id = \"p\"\nkey = \"pk\"\nsecret = \"ps\"\ntargets = [\"nope\"]"
            ),
            vec![],
            "publish.targets",
        ),
    ];
    for (toml, e, key) in cases {
        let err = err(&toml, &e);
        let text = err.to_string();
        assert!(text.contains(key), "expected {key} in: {text}");
    }
}

#[test]
fn syntax_errors_name_file_line_and_key_but_never_the_value() {
    for broken in [
        "secret = \"hunter2-VALUE",
        "secret = hunter2-VALUE",
        "secret = \"hunter2-VALUE\" trailing",
        "secret = '''hunter2-VALUE",
        "secret \"hunter2-VALUE\"",
    ] {
        let toml = MINIMAL.replace("secret = \"oldsecret\"", broken);
        let line = toml.lines().position(|l| l.contains("hunter2")).unwrap() + 1;
        let text = err(&toml, &[]).to_string();
        assert!(!text.contains("hunter2"), "{broken}: {text}");
        // An unterminated multi-line string is noticed (and reported) at the end of the file.
        if !broken.contains("'''") {
            assert!(text.contains(&format!("line {line}")), "{broken}: {text}");
        }
    }
    let text = err(&MINIMAL.replace("secret = \"oldsecret\"", "secret = \"x"), &[]).to_string();
    assert!(text.contains("`apps.old.secret`"), "{text}");
    // A value of the wrong type is not echoed either.
    let toml = MINIMAL.replace("[session_check]", "[session_check]\ntimeout_ms = \"hunter2-VALUE\"");
    let text = err(&toml, &[]).to_string();
    assert!(!text.contains("hunter2") && text.contains("session_check.timeout_ms"), "{text}");
}

#[test]
fn redacted_output_never_contains_secrets() {
    let toml = format!(
        "{}encryption_master_key_base64 = \"zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=\"",
        MINIMAL.replace("http://127.0.0.1:3000/check", "http://user:pw@127.0.0.1:3000/check")
    );
    let s = Settings::from_toml(&toml, None).unwrap();
    let out = s.redacted_toml();
    for secret in ["oldsecret", "7ad3773142a6692b25b8", "zyrm8pvV", ":pw@"] {
        assert!(!out.contains(secret), "{secret} leaked:\n{out}");
    }
    assert!(out.contains("278d425bdf160c739803") && out.contains("[redacted]"));
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("oldsecret") && !dbg.contains("7ad3773142a6692b25b8"));
}

#[test]
fn every_section_is_printed_and_the_printout_loads_back_the_same() {
    let full = format!(
        "{MINIMAL}\n[publish]\napp_id = \"p\"\nkey = \"pk\"\nsecret = \"ps\"\ntargets = [\"old\", \"new\"]\n\
         [webhooks]\nforward_url = \"http://127.0.0.1:3000/hook\"\nkey = \"wk\"\nsecret = \"ws\"\nmax_age_secs = 60\n\
         [status]\nold_app = \"old\"\ndrain_window_secs = 60\n\
         [rate_limit]\nenabled = true\nper_second = 5\nburst = 9\n\
         [log]\nlevel = \"debug\"\n\
         [telemetry]\notlp_endpoint = \"http://collector:4318\"\nsample_ratio = 0.25\n"
    );
    let printed = Settings::from_toml(&full, None).unwrap().redacted_toml();
    let table: toml::Table = printed.parse().unwrap();
    let sections = [
        "server",
        "session_check",
        "apps",
        "rate_limit",
        "publish",
        "webhooks",
        "status",
        "log",
        "telemetry",
    ];
    for section in sections {
        assert!(table.contains_key(section), "[{section}] missing from:\n{printed}");
    }
    for secret in ["\"ps\"", "\"ws\"", "oldsecret"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert!(
        printed.contains("\"http://collector:4318/v1/traces\""),
        "the base address means its traces path"
    );
    // Every value survives: the printout (secrets read "[redacted]") loads and prints the same.
    let again = Settings::from_toml(&printed, None).unwrap().redacted_toml();
    assert_eq!(printed, again);
}

#[test]
fn status_old_app_is_checked_at_load() {
    let e = err(&format!("{MINIMAL}[status]\nold_app = \"nope\"\n"), &[]);
    assert_eq!(e.key, "status.old_app");
    let s = Settings::from_toml(&MINIMAL.replace("[apps.old]", "[apps.legacy]"), None).unwrap();
    assert_eq!(s.status.old_app, None, "no app named old and none named: nothing to drain");
}

#[test]
fn rollout_values_are_checked_at_load_naming_the_key() {
    let with = |r: &str| format!("{MINIMAL}[rollout]\n{r}\n");
    let ok = Settings::from_toml(&with("from = \"old\"\nto = \"new\"\npercent = 5.5"), None).unwrap();
    let r = ok.rollout.unwrap();
    assert_eq!(
        (r.percent, r.control_channel.as_ref(), r.spread.as_secs()),
        (5.5, "pusher-dual-auth-rollout", 30)
    );
    let cases = [
        ("from = \"old\"\nto = \"new\"\npercent = 100.5", "rollout.percent"),
        ("from = \"old\"\nto = \"new\"\npercent = -1", "rollout.percent"),
        ("from = \"old\"\nto = \"nope\"", "rollout.to"),
        ("to = \"new\"\npercent = 50", "rollout.percent"),
        ("from = \"old\"\nto = \"old\"\npercent = 10", "rollout.percent"),
        ("to = \"new\"\nforce_to = [\"x\"]", "rollout.force_to"),
        ("from = \"old\"\nto = \"new\"\ncontrol_channel = \"private-x\"", "rollout.control_channel"),
        ("from = \"old\"\nto = \"new\"\ncontrol_channel = \"a b\"", "rollout.control_channel"),
        ("from = \"old\"\nto = \"new\"\nforce_to = [\"a/b\"]", "rollout.force_to"),
        ("from = \"old\"\nto = \"new\"\nforce_to = [\"x\"]\nforce_from = [\"x\"]", "rollout.force_from"),
    ];
    for (r, key) in cases {
        assert_eq!(err(&with(r), &[]).key, key, "{r}");
    }
    // The version follows what clients act on, force lists included (naming a user moves that user live).
    let v = |r: &str| Settings::from_toml(&with(r), None).unwrap().rollout.unwrap().version;
    assert_ne!(
        v("from = \"old\"\nto = \"new\"\npercent = 5"),
        v("from = \"old\"\nto = \"new\"\npercent = 5\nforce_to = [\"a\"]")
    );
    assert_eq!(
        v("from = \"old\"\nto = \"new\"\npercent = 5\nforce_to = [\"a\"]"),
        v("from = \"old\"\nto = \"new\"\npercent = 5\nforce_to = [\"a\"]"),
        "replicas reloading the same change announce the same version"
    );
    assert_ne!(
        v("from = \"old\"\nto = \"new\"\npercent = 5"),
        v("from = \"old\"\nto = \"new\"\npercent = 6")
    );
}

#[test]
fn the_digest_tells_configs_apart_but_not_listen_addresses() {
    let base = |listen: &str, secret: &str| {
        format!(
            "[server]\nlisten = \"{listen}\"\n[session_check]\nurl = \"http://h/check\"\n\
             [apps.old]\napp_id = \"1\"\nkey = \"k\"\nsecret = \"{secret}\"\n"
        )
    };
    let digest = |t: &str| Settings::from_toml(t, None).unwrap().digest();
    assert_eq!(
        digest(&base("127.0.0.1:8080", "s1")),
        digest(&base("127.0.0.1:8081", "s1")),
        "replicas on one host"
    );
    assert_ne!(
        digest(&base("127.0.0.1:8080", "s1")),
        digest(&base("127.0.0.1:8080", "s2")),
        "a missed rotation"
    );
    assert!(!digest(&base("127.0.0.1:8080", "s1")).contains("s1"));
}

#[test]
fn presence_bounds_load_from_the_environment_and_errors_name_the_key() {
    let s = Settings::from_toml(MINIMAL, env(&[("DUAL_AUTH__PRESENCE__MAX_INFOS", "2000")])).unwrap();
    assert_eq!(s.presence.max_infos, 2000);
    let e = err(MINIMAL, &[("DUAL_AUTH__PRESENCE__MAX_CHANNELS_PER_USER", "0")]);
    assert_eq!(e.key, "presence.max_channels_per_user");
}

#[test]
fn failover_needs_two_apps_and_sane_timings() {
    let rollout = "[rollout]\nfrom = \"old\"\nto = \"new\"\n";
    let with = |r: &str, f: &str| format!("{MINIMAL}{r}[failover]\n{f}\n");
    let s = Settings::from_toml(&with(rollout, "enabled = true"), None).unwrap();
    let f = s.failover.expect("enabled");
    assert_eq!(
        (f.probe_every.as_secs(), f.fail_after.as_secs(), f.return_after.as_secs()),
        (2, 6, 60),
        "the documented defaults"
    );
    assert_eq!(f.return_mode, crate::failover::config::Return::Manual);
    let off = Settings::from_toml(&with("", "enabled = false"), None).unwrap();
    assert!(off.failover.is_none(), "switched off, it needs nothing");
    let cases = [
        ("", "enabled = true", "failover"),
        ("[rollout]\nto = \"new\"\n", "enabled = true", "failover"),
        (rollout, "enabled = true\nprobe_secs = 0", "failover.probe_secs"),
        (rollout, "enabled = true\nprobe_secs = 5\nfail_after_secs = 4", "failover.fail_after_secs"),
        (rollout, "enabled = true\nreturn_after_secs = 0", "failover.return_after_secs"),
    ];
    for (r, f, key) in cases {
        assert_eq!(err(&with(r, f), &[]).key, key, "{r} {f}");
    }
    assert!(Settings::from_toml(&with(rollout, "enabled = true\nreturn = \"sometimes\""), None).is_err());
}

#[test]
fn redis_through_sentinels_in_either_form_and_replica_acks_are_checked_at_load() {
    let hooks = |extra: &str| {
        format!(
            "{MINIMAL}[webhooks]\nforward_url = \"http://127.0.0.1:3000/hook\"\nkey = \"wk\"\nsecret = \"ws\"\n\
             state = \"redis\"\n{extra}\n"
        )
    };
    let store = |extra: &str| Settings::from_toml(&hooks(extra), None).unwrap().webhooks.unwrap().store;
    let url = "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/2";
    let WebhookStore::Redis { url: from_url, acks, .. } = store(&format!("redis_url = \"{url}\"")) else {
        panic!("redis")
    };
    assert_eq!(from_url, url);
    assert_eq!(acks.replicas, 0, "off by default");
    let listed = store(
        "sentinels = [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]\nsentinel_master = \"mymaster\"\n\
         replica_acks = 1\nreplica_ack_timeout_ms = 200",
    );
    let WebhookStore::Redis { url: from_list, acks, .. } = listed else { panic!("redis") };
    assert_eq!(from_list, "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster");
    assert_eq!((acks.replicas, acks.timeout), (1, Duration::from_millis(200)));
    let target = crate::redis_client::SentinelTarget::parse(url).unwrap().unwrap();
    assert_eq!((target.master.as_str(), target.db, target.password.as_deref()), ("mymaster", 2, Some("pw")));

    // Printed without the password, and loads back the same.
    let printed =
        Settings::from_toml(&hooks(&format!("redis_url = \"{url}\"")), None).unwrap().redacted_toml();
    assert!(
        !printed.contains("pw@") && printed.contains("redis+sentinel://redacted@10.0.0.1:26379"),
        "{printed}"
    );
    assert_eq!(Settings::from_toml(&printed, None).unwrap().redacted_toml(), printed);

    for (extra, key) in [
        ("sentinels = [\"10.0.0.1:26379\"]", "webhooks.sentinel_master"),
        ("sentinel_master = \"m\"\nredis_url = \"redis://h:6379\"", "webhooks.sentinel_master"),
        (
            "sentinels = [\"10.0.0.1:26379\"]\nsentinel_master = \"m\"\nredis_url = \"redis://h:6379\"",
            "webhooks.sentinels",
        ),
        ("sentinels = [\"10.0.0.1\"]\nsentinel_master = \"m\"", "webhooks.sentinels"),
        ("redis_url = \"redis+sentinel://10.0.0.1:26379\"", "webhooks.redis_url"),
        ("redis_url = \"redis+sentinel://10.0.0.1:26379/\"", "webhooks.redis_url"),
        ("redis_url = \"redis://h:6379\"\nreplica_acks = 17", "webhooks.replica_acks"),
        ("redis_url = \"redis://h:6379\"\nreplica_ack_timeout_ms = 5000", "webhooks.replica_ack_timeout_ms"),
    ] {
        assert_eq!(err(&hooks(extra), &[]).key, key, "{extra}");
    }
    let memory = hooks("replica_acks = 1").replace("state = \"redis\"\n", "");
    assert_eq!(err(&memory, &[]).key, "webhooks.replica_acks", "acknowledged by replicas of what?");
}
