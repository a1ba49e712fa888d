//! `https://` session checks against a real TLS server (nginx with a fresh
//! self-signed certificate for `localhost`, answering the check itself), through
//! the real binary: the platform's roots decide (here `SSL_CERT_FILE`), the name
//! must match, and the TLS connection is kept alive between checks.

mod common;

use serde_json::Value;

/// nginx serving TLS: `/check` answers an identity whose user id is the number
/// of requests its connection has carried (`u-1`, `u-2`, ...), echoing the
/// check's `X-Check-Id` so the connection is kept.
struct TlsHost(common::nginx_tls::NginxTls);

impl TlsHost {
    fn start() -> Self {
        Self(common::nginx_tls::NginxTls::start(
            "    location = /check {\n      default_type application/json;\n\
             add_header X-Check-Id $http_x_check_id always;\n\
             return 200 '{\"user_id\":\"u-$connection_requests\"}';\n    }",
        ))
    }

    /// The service checking at `https://{host}:{port}/check`; with `trusted`, the
    /// certificate is among its roots. The directory holds its config and log.
    fn service(&self, host: &str, trusted: bool) -> (common::Service, common::TempDir) {
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:{{port}}"
admin_listen = "127.0.0.1:{{admin}}"
workers = 1
[session_check]
url = "https://{host}:{port}/check"
[apps.old]
app_id = "1111"
key = "old-key"
secret = "old-secret"
[apps.new]
app_id = "2222"
key = "new-key"
secret = "new-secret"
"#,
            port = self.0.port
        );
        let dir = common::TempDir::new("https-check-service");
        let cert = self.0.cert.to_str().unwrap().to_owned();
        let env: &[(&str, &str)] = if trusted { &[("SSL_CERT_FILE", &cert)] } else { &[] };
        (common::Service::start_with_env(&dir, &config, env), dir)
    }
}

async fn auth(service: &common::Service, channel: &str) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default(); // reqwest's, for plain http here
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/auth/new", service.port))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("socket_id=1234.5678&channel_name={channel}"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_trusted_certificate_signs_and_the_tls_connection_is_kept() {
    let host = TlsHost::start();
    let (service, _dir) = host.service("localhost", true);
    for n in 1..=3 {
        let (status, body) = auth(&service, "presence-room").await;
        assert_eq!(status, 200, "{body}");
        assert!(body["auth"].as_str().unwrap().starts_with("new-key:"), "{body}");
        let data: Value = serde_json::from_str(body["channel_data"].as_str().unwrap()).unwrap();
        // nginx's $connection_requests: the n-th check on one TLS connection.
        assert_eq!(data["user_id"], format!("u-{n}"), "check {n}: {body}");
    }
}

/// A check that must be refused: 502, nothing signed, and the log says `why`.
async fn refused(service: &common::Service, why: &str) {
    let (status, body) = auth(service, "private-room").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.get("auth").is_none(), "{body}");
    let log = service.log_text();
    assert!(log.contains(why), "the log says why ({why}): {log}");
}

#[tokio::test]
async fn an_untrusted_certificate_signs_nothing() {
    let host = TlsHost::start();
    let (service, _dir) = host.service("localhost", false);
    refused(&service, "certificate").await;
}

#[tokio::test]
async fn a_certificate_for_another_name_signs_nothing() {
    let host = TlsHost::start();
    // Trusted, but issued to `localhost`, not `127.0.0.1`.
    let (service, _dir) = host.service("127.0.0.1", true);
    refused(&service, "not valid for name").await;
}
