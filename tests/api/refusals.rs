//! One refusal shape: auth, webhooks, `/client-config` and unmatched routes all
//! answer `{"error":{"code","message"}}` with `Cache-Control: no-store`.
//! (Publishing answers in Pusher REST's own shape, tested in `publish`.)
use crate::helpers::*;
use serde_json::Value;

#[tokio::test]
async fn every_public_refusal_has_the_one_shape() {
    let app = spawn_app_with(|c| {
        format!(
            "{c}\n[webhooks]\nforward_url = \"http://127.0.0.1:9/hook\"\nkey = \"k\"\nsecret = \"s\"\n\
             [rollout]\nfrom = \"old\"\nto = \"new\"\npercent = 50\n"
        )
    })
    .await;
    let unknown_key = app
        .client
        .post(format!("{}/webhooks", app.address))
        .header("content-type", "application/json")
        .header("x-pusher-key", "nobody")
        .header("x-pusher-signature", "00")
        .body("{}")
        .send()
        .await
        .unwrap();
    let cases = [
        (app.post_form("/auth/new", "socket_id=nope&channel_name=private-a").await, 400, "invalid_socket_id"),
        (unknown_key, 401, "unknown_key"),
        (
            app.client.get(format!("{}/client-config?uid=a%20b", app.address)).send().await.unwrap(),
            400,
            "invalid_uid",
        ),
        (
            app.client.get(format!("{}/client-config?uid=a&uid=b", app.address)).send().await.unwrap(),
            400,
            "duplicate_field",
        ),
        (app.client.get(format!("{}/nowhere", app.address)).send().await.unwrap(), 404, "not_found"),
    ];
    for (res, status, code) in cases {
        assert_eq!(res.status().as_u16(), status, "{code}");
        if code != "not_found" {
            assert_eq!(res.headers()["cache-control"], "no-store", "{code}");
        }
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
}
