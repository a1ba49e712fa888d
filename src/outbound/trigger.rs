//! The one way an event reaches an app: a signed POST to its REST API's
//! `/events` (one event) or `/batch_events` (up to 10), retried with doubling
//! delays. Used by every sender of our own events: the rollout's
//! announcements, the presence bridge, and doctor's probe.

use crate::config::AppSettings;
use std::time::Duration;

#[derive(Clone, Copy)]
pub enum Endpoint {
    Events,
    BatchEvents,
}

/// The signed request carrying `body` to `app`'s `endpoint`, ready to send.
pub fn request(
    http: &reqwest::Client,
    app: &AppSettings,
    endpoint: Endpoint,
    body: &str,
) -> reqwest::RequestBuilder {
    let path = match endpoint {
        Endpoint::Events => format!("/apps/{}/events", app.app_id),
        Endpoint::BatchEvents => format!("/apps/{}/batch_events", app.app_id),
    };
    let url = super::signed_url(app, "POST", &path, body.as_bytes(), &[]);
    http.post(url).header("content-type", "application/json").body(body.to_owned())
}

/// How often to try, and the first delay between tries (doubled after each).
#[derive(Clone, Copy)]
pub struct Retry {
    pub tries: u32,
    pub delay: Duration,
}

/// Sends until the app answers 2xx, at most `retry.tries` times. The request
/// is made again before each try (`make`: from the live config, None when a
/// reload removed the app), so a rotated secret is used at once and the
/// signature's timestamp is fresh; `refused(status, attempt)` hears of each
/// failed try (status 0: no answer). Whether it was accepted.
pub async fn send(
    retry: Retry,
    make: impl Fn() -> Option<reqwest::RequestBuilder>,
    mut refused: impl FnMut(u16, u32),
) -> bool {
    let mut delay = retry.delay;
    for attempt in 1..=retry.tries {
        let Some(request) = make() else { return false };
        let sent = request.send().await;
        let status = sent.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
        if (200..300).contains(&status) {
            return true;
        }
        refused(status, attempt);
        if attempt < retry.tries {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    false
}
