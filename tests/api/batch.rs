//! pusher-js-auth 4.0 batch format: one 200 answer keyed by channel, a status per entry.
use crate::helpers::*;
use serde_json::json;
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{body_partial_json, path},
};

#[tokio::test]
async fn a_batch_fails_and_succeeds_per_channel() {
    let app = spawn_app().await;
    let ok = ResponseTemplate::new(200).set_body_json(json!({"user_id": "7", "user_info": {"name": "Ada"}}));
    Mock::given(path("/check"))
        .and(body_partial_json(json!({"channel_name": "private-b"})))
        .respond_with(ResponseTemplate::new(403))
        .mount(&app.host)
        .await;
    Mock::given(path("/check")).respond_with(ok).mount(&app.host).await;

    let body = "&socket_id=9.9&channel_name[0]=private-a&channel_name[1]=private-b&channel_name[2]=presence-c&channel_name[3]=lobby&x=y";
    let res = expect_status(app.post_form("/auth/new", body).await, 200).await;

    assert_eq!(res["private-a"]["status"], 200);
    assert_eq!(res["private-a"]["data"]["auth"], format!("{NEW_KEY}:{}", sign(NEW_SECRET, "9.9:private-a")));
    assert_eq!(res["private-b"]["status"], 403);
    assert!(res["private-b"].get("data").is_none());
    let data = &res["presence-c"]["data"];
    let channel_data = data["channel_data"].as_str().unwrap();
    assert_eq!(channel_data, r#"{"user_id":"7","user_info":{"name":"Ada"}}"#);
    assert_eq!(
        data["auth"],
        format!("{NEW_KEY}:{}", sign(NEW_SECRET, &format!("9.9:presence-c:{channel_data}")))
    );
    assert_eq!(res["lobby"]["status"], 400);
    assert_no_signature(&res["private-b"].to_string());
    assert_no_signature(&res["lobby"].to_string());

    // One host call per valid channel; the public channel never reached it.
    let calls = app.host_bodies().await;
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c["params"] == json!({"x": "y"}) && c["socket_id"] == "9.9"));
}

#[tokio::test]
async fn a_bad_socket_id_fails_the_whole_batch() {
    let app = spawn_app().await;
    Mock::given(path("/check")).respond_with(ResponseTemplate::new(200)).expect(0).mount(&app.host).await;
    let body = "socket_id=1.1:x&channel_name[0]=private-a&channel_name[1]=private-b";
    expect_status(app.post_form("/auth/new", body).await, 400).await;
}

#[tokio::test]
async fn json_batches_use_an_array() {
    let app = spawn_app().await;
    Mock::given(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&app.host)
        .await;
    let res = app
        .client
        .post(format!("{}/auth/old", app.address))
        .json(&json!({"socket_id": "1.1", "channel_name": ["private-a", "private-b"]}))
        .send()
        .await
        .unwrap();
    let res = expect_status(res, 200).await;
    assert_eq!(res["private-b"]["data"]["auth"], format!("{OLD_KEY}:{}", sign(OLD_SECRET, "1.1:private-b")));
}
