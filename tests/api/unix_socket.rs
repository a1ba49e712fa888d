//! The session check over a Unix domain socket (`session_check.unix_socket`),
//! against a real HTTP server listening on one: the same request (path and Host
//! from `url`, the header allowlist), the same fail-closed answers.
use crate::helpers::*;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/1.1 server on `path` answering every request with `status` and
/// `body`; the request heads it received are kept.
fn serve(path: std::path::PathBuf, status: u16, body: &'static str) -> Arc<Mutex<Vec<String>>> {
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request per connection read to its end (head + Content-Length body).
                    let n = match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    seen.lock().unwrap().push(text[..end].to_owned());
                    buf.drain(..end + 4 + len);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    heads
}

async fn app_on_socket(path: &std::path::Path) -> TestApp {
    let path = path.display().to_string();
    spawn_app_with(move |c| {
        let c = c.edit(
            "[session_check]\nurl = ",
            &format!("[session_check]\nunix_socket = \"{path}\"\nforward_headers = [\"x-tenant\"]\nurl = "),
        );
        assert!(c.contains("unix_socket"), "the socket was written into the config");
        // The URL gives the path and Host; its address is never dialled.
        c.edit(
            &c[c.find("url = \"").unwrap()..c.find("/check\"").unwrap() + 7],
            "url = \"http://app.internal/internal/pusher-session\"",
        )
    })
    .await
}

#[tokio::test]
async fn a_check_over_a_unix_socket_signs_and_its_refusals_fail_closed() {
    let dir = std::env::temp_dir().join(format!("dual-auth-uds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("session.sock");
    let heads = serve(sock.clone(), 200, r#"{"user_id":"u1"}"#);
    let app = app_on_socket(&sock).await;
    let res = app
        .post_form_with(
            "/auth/old",
            "socket_id=1234.1234&channel_name=private-foobar",
            &[("x-tenant", "t1"), ("x-other", "no")],
        )
        .await;
    let body = expect_status(res, 200).await;
    assert_eq!(body["auth"], format!("{OLD_KEY}:{}", sign(OLD_SECRET, "1234.1234:private-foobar")));
    let head = heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("post /internal/pusher-session http/1.1"), "{head}");
    assert!(head.contains("host: app.internal"), "{head}");
    assert!(head.contains("x-tenant: t1") && !head.contains("x-other"), "the allowlist applies: {head}");

    // The host refuses: 403, nothing signed.
    let denied = dir.join("deny.sock");
    serve(denied.clone(), 403, "{}");
    let app = app_on_socket(&denied).await;
    expect_status(app.post_form("/auth/old", "socket_id=1234.1234&channel_name=private-foobar").await, 403)
        .await;

    // No socket there: 502, nothing signed.
    let app = app_on_socket(&dir.join("missing.sock")).await;
    expect_status(app.post_form("/auth/old", "socket_id=1234.1234&channel_name=private-foobar").await, 502)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_relative_or_overlong_socket_path_is_refused_at_load() {
    for bad in ["run/session.sock", &format!("/{}", "x".repeat(120))] {
        let config = base_config("http://app.internal/check")
            .edit("[session_check]\n", &format!("[session_check]\nunix_socket = \"{bad}\"\n"));
        let err = pusher_dual_auth::config::Settings::from_toml(&config, None).unwrap_err().to_string();
        assert!(err.contains("session_check.unix_socket"), "{err}");
    }
}
