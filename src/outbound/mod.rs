//! Outbound HTTP to the Pusher apps' REST APIs and to the host: one client
//! builder (timeouts, never a redirect, no proxy from the environment) and one
//! way to sign a REST URL.

pub(crate) mod trigger;

use crate::config::AppSettings;
use secrecy::ExposeSecret;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every outbound client starts here: bounded in time, a 3xx is an answer and
/// never a hop (a redirect to a login page that answers 200 would otherwise
/// approve), and no proxy from the environment.
pub fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    // reqwest is built without a TLS provider: it takes rustls's process-wide one,
    // installed here for every client (a second install is a no-op).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .no_proxy()
        .user_agent(USER_AGENT)
}

/// The User-Agent of every outbound request.
pub const USER_AGENT: &str = concat!("pusher-dual-auth/", env!("CARGO_PKG_VERSION"));

/// A client from `client_builder` with nothing added.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    client_builder(timeout).build().expect("an HTTP client without custom TLS settings builds")
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

/// Unix time in seconds, as REST `auth_timestamp` wants it.
pub fn now_secs() -> i64 {
    (now_ms() / 1000) as i64
}

/// `app`'s REST URL for `path`, signed now (auth_key, auth_timestamp, body_md5, auth_signature).
/// The result is a credential for ten minutes: never log it or put it in an answer.
pub fn signed_url(
    app: &AppSettings,
    method: &str,
    path: &str,
    body: &[u8],
    extra: &[(String, String)],
) -> url::Url {
    signed_url_with_secret(app, app.credentials.secret.expose_secret(), method, path, body, extra)
}

/// As `signed_url`, signed with `secret` instead of the app's own (doctor's swap check).
pub fn signed_url_with_secret(
    app: &AppSettings,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    extra: &[(String, String)],
) -> url::Url {
    let query = crate::pusher::rest::signed_query(
        app.credentials.key.as_ref(),
        secret,
        method,
        path,
        (!body.is_empty()).then_some(body),
        now_secs(),
        extra,
    );
    let mut url = app.rest_url.clone();
    url.set_path(path);
    url.set_query(Some(&query));
    url
}

/// Pusher REST answers passed back to a publisher (event, batch, channel info).
pub const MAX_REST_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// A channel listing read to reconcile occupancy: 100,000 channels take about 4 MB.
pub const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;

/// Why a capped body read gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum CappedRead {
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    /// Without its URL (`without_url`): a signed URL is a credential.
    #[error("{0}")]
    Failed(reqwest::Error),
}

/// A response body of at most `limit` bytes, refused as soon as it is larger
/// (by Content-Length, or while reading): a broken or hostile server cannot make
/// this process hold more than `limit` for one answer.
pub async fn read_capped(mut res: reqwest::Response, limit: usize) -> Result<Vec<u8>, CappedRead> {
    if res.content_length().is_some_and(|len| len > limit as u64) {
        return Err(CappedRead::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| CappedRead::Failed(e.without_url()))? {
        if body.len() + chunk.len() > limit {
            return Err(CappedRead::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `limit` bytes of a body (for showing an error), the rest left unread.
pub async fn read_prefix(mut res: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match res.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            _ => break,
        }
    }
    body
}
