//! Property tests: for any request and any host answer, a signature appears only
//! with status 200, only after a host 2xx, and is correct for exactly what was
//! returned; the validators agree with the rules of pusher-protocol.md.

use proptest::prelude::*;
use pusher_dual_auth::{
    config::Settings,
    pusher::{ChannelName, MAX_CHANNEL_NAME_LEN, SocketId, hmac_sha256_hex},
    startup::Application,
};
use serde_json::Value;
use std::net::TcpListener;
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "278d425bdf160c739803";
const SECRET: &str = "7ad3773142a6692b25b8";

// ---- validators against reference regexes ---------------------------------------------------

fn socket_id_reference(s: &str) -> bool {
    let re = regex::Regex::new(r"^[0-9]{1,20}\.[0-9]{1,20}$").unwrap();
    re.is_match(s)
}

fn channel_reference(s: &str) -> bool {
    let charset = regex::Regex::new(r"^[A-Za-z0-9_\-=@,.;]+$").unwrap();
    let ok_prefix = ["private-encrypted-", "private-", "presence-"]
        .iter()
        .find(|p| s.starts_with(*p))
        .is_some_and(|p| s.len() > p.len());
    charset.is_match(s) && s.len() <= MAX_CHANNEL_NAME_LEN && ok_prefix
}

fn tricky_string() -> impl Strategy<Value = String> {
    // A vocabulary that hits the edges: digits (ASCII and not), separators, injection characters.
    let atoms = prop::sample::select(vec![
        "0",
        "1",
        "9",
        "12345",
        ".",
        ":",
        "\n",
        "\r",
        " ",
        "\t",
        "\0",
        "-",
        "_",
        "=",
        "@",
        ",",
        ";",
        "#",
        "/",
        "%",
        "private-",
        "presence-",
        "private-encrypted-",
        "cache-",
        "a",
        "Z",
        "é",
        "١",
        "１",
        "ǅ",
        "\u{200b}",
    ]);
    prop::collection::vec(atoms, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn socket_id_validation_matches_the_ascii_regex(s in tricky_string()) {
        prop_assert_eq!(SocketId::parse(&s).is_ok(), socket_id_reference(&s), "{:?}", s);
    }

    #[test]
    fn socket_id_validation_on_arbitrary_unicode(s in "\\PC{0,30}") {
        prop_assert_eq!(SocketId::parse(&s).is_ok(), socket_id_reference(&s), "{:?}", s);
    }

    #[test]
    fn channel_validation_matches_the_documented_rules(s in tricky_string()) {
        prop_assert_eq!(ChannelName::parse(&s).is_ok(), channel_reference(&s), "{:?}", s);
    }

    #[test]
    fn long_channel_names_are_cut_at_164(n in 150usize..180) {
        let name = format!("private-{}", "a".repeat(n - 8));
        prop_assert_eq!(ChannelName::parse(&name).is_ok(), n <= MAX_CHANNEL_NAME_LEN);
    }
}

// ---- the whole service: any request × any host answer -------------------------------------

#[derive(Debug, Clone)]
struct Case {
    socket_id: String,
    channel: String,
    extra: Vec<(String, String)>,
    host_status: u16,
    host_body: String,
}

fn host_body() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{}".to_string()),
        Just(String::new()),
        Just("null".to_string()),
        Just("<html>login</html>".to_string()),
        Just(r#"{"user_id":42}"#.to_string()),
        Just(r#"{"user_id":""}"#.to_string()),
        Just(r#"{"user_info":{"name":"no id"}}"#.to_string()),
        "[a-zA-Z0-9 ]{1,20}".prop_map(|id| serde_json::json!({"user_id": id}).to_string()),
        ("[a-z0-9]{1,10}", "\\PC{0,20}").prop_map(|(id, name)| {
            serde_json::json!({"user_id": id, "user_info": {"name": name}}).to_string()
        }),
        "\\PC{0,40}",
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let socket = prop_oneof![Just("1234.1234".to_string()), Just("1.1".to_string()), tricky_string()];
    let channel = prop_oneof![
        Just("private-foobar".to_string()),
        Just("presence-room".to_string()),
        Just("private-encrypted-x".to_string()),
        Just("public".to_string()),
        tricky_string(),
    ];
    let extra = prop::collection::vec(
        (prop::sample::select(vec!["socket_id", "channel_name", "user_id", "x"]), "[a-z0-9.:]{0,8}")
            .prop_map(|(k, v)| (k.to_string(), v)),
        0..2,
    );
    let status = prop::sample::select(vec![200u16, 201, 204, 301, 302, 400, 401, 403, 404, 500, 503]);
    (socket, channel, extra, status, host_body()).prop_map(
        |(socket_id, channel, extra, host_status, host_body)| Case {
            socket_id,
            channel,
            extra,
            host_status,
            host_body,
        },
    )
}

fn encode(pairs: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

#[test]
fn a_signature_appears_only_with_200_after_a_host_2xx_and_is_exact() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (host, address) = rt.block_on(async {
        let host = MockServer::start().await;
        let config = format!(
            r#"
[server]
admin_listen = "127.0.0.1:0"
workers = 1
[session_check]
url = "{}/check"
timeout_ms = 1000
[apps.new]
app_id = "2222"
key = "{KEY}"
secret = "{SECRET}"
encryption_master_key_base64 = "zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU="
"#,
            host.uri()
        );
        let app = Application::build_with_listener(
            Settings::from_toml(&config, None).unwrap(),
            TcpListener::bind("127.0.0.1:0").unwrap(),
        )
        .unwrap();
        let address = format!("http://127.0.0.1:{}/auth/new", app.port());
        tokio::spawn(app.run_until_stopped());
        (host, address)
    });
    let client = reqwest::Client::new();

    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: 300, ..ProptestConfig::default() });
    runner
        .run(&case(), |c| {
            let (status, body, host_calls) = rt.block_on(async {
                host.reset().await;
                Mock::given(wiremock::matchers::any())
                    .respond_with(ResponseTemplate::new(c.host_status).set_body_string(c.host_body.clone()))
                    .mount(&host)
                    .await;
                let mut pairs = vec![
                    ("socket_id".to_string(), c.socket_id.clone()),
                    ("channel_name".to_string(), c.channel.clone()),
                ];
                pairs.extend(c.extra.clone());
                let res = client
                    .post(&address)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(encode(&pairs))
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                let body = res.text().await.unwrap();
                (status, body, host.received_requests().await.unwrap().len())
            });
            let has_sig = body.contains("\"auth\"")
                || body.as_bytes().windows(64).any(|w| w.iter().all(u8::is_ascii_hexdigit));
            if status != 200 {
                prop_assert!(!has_sig, "signature on a {} answer: {}", status, body);
                return Ok(());
            }
            // 200: the host was asked exactly once and said 2xx, and the input was valid.
            prop_assert_eq!(host_calls, 1);
            prop_assert!((200..300).contains(&c.host_status), "signed after host {}", c.host_status);
            prop_assert!(SocketId::parse(&c.socket_id).is_ok() && ChannelName::parse(&c.channel).is_ok());
            let v: Value = serde_json::from_str(&body).unwrap();
            let auth = v["auth"].as_str().unwrap();
            let mut to_sign = format!("{}:{}", c.socket_id, c.channel);
            if let Some(data) = v.get("channel_data") {
                let data = data.as_str().expect("channel_data is a string");
                let parsed: Value = serde_json::from_str(data).expect("channel_data parses");
                prop_assert!(parsed["user_id"].is_string());
                to_sign = format!("{to_sign}:{data}");
            } else {
                prop_assert!(!c.channel.starts_with("presence-"), "presence without channel_data");
            }
            prop_assert_eq!(
                auth,
                format!("{KEY}:{}", hmac_sha256_hex(SECRET.as_bytes(), to_sign.as_bytes()))
            );
            Ok(())
        })
        .unwrap();
}
