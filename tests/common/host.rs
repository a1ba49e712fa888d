//! The host app as the binary tests need it, on wiremock: a session check that
//! signs everyone in as `u1`, each app's REST channel list (empty, for the
//! start-up reconcile), and a webhook handler taking every forwarded webhook.

use serde_json::json;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

/// The host at `check` (the session check's path) and `hook` (the webhooks' forward path).
pub async fn start(check: &str, hook: &str) -> MockServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let host = MockServer::start().await;
    Mock::given(matchers::path(check))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"user_id": "u1"})))
        .mount(&host)
        .await;
    Mock::given(matchers::path_regex("^/apps/[0-9]+/channels$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"channels": {}})))
        .mount(&host)
        .await;
    Mock::given(matchers::path(hook)).respond_with(ResponseTemplate::new(200)).mount(&host).await;
    host
}
