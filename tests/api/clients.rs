//! Drain by client: which client builds still keep the old app alive.
use crate::helpers::*;
use serde_json::{Value, json};
use wiremock::{Mock, ResponseTemplate, matchers::path};

const IOS: &str = "MyShop/4.2.1 CFNetwork/1410.0.3 Darwin/22.6.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const ANDROID: &str = "Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230805.001)";

#[tokio::test]
async fn the_status_names_the_builds_still_on_the_old_app_first() {
    let app = spawn_app().await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&app.host)
        .await;
    let one = "socket_id=1.1&channel_name=private-a";
    let sign = async |route: &str, ua: &str, body: &str| {
        expect_status(app.post_form_with(route, body, &[("user-agent", ua)]).await, 200).await;
    };
    for _ in 0..3 {
        sign("/auth/old", IOS, one).await;
    }
    sign("/auth/old", CHROME, one).await;
    sign("/auth/new", CHROME, one).await;
    sign("/auth/new", CHROME, "socket_id=1.1&channel_name[0]=private-a&channel_name[1]=private-b").await;
    sign("/auth/new", ANDROID, &format!("{one}&client_version=2.3.1")).await;
    // Refused requests are not counted.
    let refused = app
        .post_form_with("/auth/old", "socket_id=1.1:x&channel_name=private-a", &[("user-agent", IOS)])
        .await;
    assert_eq!(refused.status(), 400);

    let s: Value =
        app.client.get(format!("{}/status", app.admin)).send().await.unwrap().json().await.unwrap();
    let clients = s["clients"].as_array().unwrap();
    let groups: Vec<&str> = clients.iter().map(|c| c["group"].as_str().unwrap()).collect();
    assert_eq!(groups, ["iOS app MyShop 4.2.1", "Chrome 131", "Android 13 (Dalvik) · 2.3.1"], "{s}");
    assert_eq!(clients[0]["old_share_day"], 1.0);
    assert_eq!(clients[0]["apps"]["old"], json!({"last_hour": 3, "last_day": 3}));
    // The batch counts each signed channel: Chrome has 1 on old and 3 on new.
    assert_eq!(clients[1]["apps"]["new"]["last_day"], 3);
    assert_eq!(clients[1]["old_share_day"], 0.25);
    assert!(clients[2]["last_seen_ms"].as_u64().unwrap() > 0);
    // No raw User-Agent is kept.
    assert!(!s.to_string().contains("CFNetwork") && !s.to_string().contains("Mozilla"));
}

/// The review's attack: made-up builds with 120,000-digit versions. Fifty of them
/// made `/status` about 6 MB (the page reloads it every 2 s); a build group is
/// now at most 96 characters, so fifty are a few KB.
#[tokio::test]
async fn made_up_builds_with_huge_versions_keep_the_status_small() {
    let app = spawn_app().await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&app.host)
        .await;
    let digits = "7".repeat(120_000);
    for n in 0..50 {
        // Each one distinct, so none is folded into another's row.
        let ua = if n % 2 == 0 {
            format!("Mozilla/5.0 Chrome/{digits}{n}.0 Safari/537.36")
        } else {
            format!("Dalvik/2.1.0 (Linux; U; Android {digits}{n}; Pixel)")
        };
        let body = format!("socket_id=1.1&channel_name=private-a&client_version={}{n}", "v".repeat(5000));
        expect_status(app.post_form_with("/auth/old", &body, &[("user-agent", &ua)]).await, 200).await;
    }
    let status = app.client.get(format!("{}/status", app.admin)).send().await.unwrap().text().await.unwrap();
    assert!(status.len() < 64 * 1024, "/status is {} bytes", status.len());
    let s: Value = serde_json::from_str(&status).unwrap();
    for c in s["clients"].as_array().unwrap() {
        let group = c["group"].as_str().unwrap();
        assert!(group.chars().count() <= 96 && !group.contains("77777"), "{group}");
    }
}
