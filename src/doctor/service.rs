//! What doctor checks of this service's own setup beyond each app: the host's
//! session check (reachable, and refusing a request that carries no
//! credentials: a host answering 2xx to that is fail-open), and whether two
//! apps' secrets are swapped in the config.

use super::{
    report::{AppReport, Check, Status},
    step,
    verdict::Failure,
};
use crate::config::{AppSettings, Settings, redact_url};
use crate::session_check::HostError;
use secrecy::ExposeSecret;
use tokio::time::Instant;

/// Asks the session check about a private channel with no cookie and no
/// Authorization, as a stranger's request would reach it.
pub async fn session_check(settings: &Settings, until: Instant) -> Check {
    const NAME: &str = "session check";
    let sc = &settings.session_check;
    let url = redact_url(&sc.url);
    // The service's own client: the same transport (a Unix socket too), timeouts and cap.
    let client = match crate::session_check::SessionCheckClient::new(sc) {
        Ok(client) => client,
        Err(e) => {
            return Check::fail(NAME, &Failure::Wrong(format!("cannot build the session check client: {e}")));
        }
    };
    let app = settings.apps.keys().next().map(String::as_str).unwrap_or_default();
    let body = serde_json::json!({
        "app": app, "kind": "channel", "socket_id": "1234.1234",
        "channel_name": "private-pusher-dual-auth-doctor-anonymous", "params": {},
    });
    let no_credentials = crate::session_check::ForwardedHeaders::default();
    let sent =
        tokio::time::timeout_at(step(until), client.exchange(body.to_string().into_bytes(), &no_credentials))
            .await;
    let failure = match sent {
        Err(_) => Failure::Timeout(format!("the session check at {url}")),
        Ok(Err(HostError::Timeout)) => Failure::Timeout(format!(
            "the session check at {url} within session_check.timeout_ms ({} ms)",
            sc.timeout.as_millis()
        )),
        // A 2xx whose body is past the cap is still a 2xx to a stranger.
        Ok(Err(HostError::BodyTooLarge(_))) => fail_open(&url, 200),
        Ok(Err(HostError::Connect(error) | HostError::Transport(error))) => {
            Failure::Unreachable { url: url.clone(), error }
        }
        Ok(Err(other)) => Failure::Wrong(other.to_string()),
        Ok(Ok(answer)) => match answer.status {
            status @ (401 | 403) => {
                let keep_alive = if answer.echoed {
                    "it echoes X-Check-Id, so connections are kept alive"
                } else {
                    "it does not echo X-Check-Id, so each check opens a new connection and its answers are tied to \
                     their checks only while no proxy in between pools connections (echo it from the application, \
                     then set session_check.require_check_id; see docs/session-check.md)"
                };
                return Check::pass(
                    NAME,
                    format!("{url} refuses a request without credentials ({status}); {keep_alive}"),
                );
            }
            status @ 200..=299 => fail_open(&url, status),
            status @ 300..=399 => Failure::Wrong(format!(
                "{url} answered a redirect ({status}) to a request without credentials: redirects are never \
                 followed, so such requests fail with 502; answer 401 or 403 instead"
            )),
            status => Failure::Wrong(format!(
                "{url} answered HTTP {status} to a request without credentials (expected 401 or 403): \
                 is session_check.url the session-check route?"
            )),
        },
    };
    Check::fail(NAME, &failure)
}

fn fail_open(url: &str, status: u16) -> Failure {
    Failure::Wrong(format!(
        "FAIL-OPEN: {url} answered {status} to a request with no cookie and no Authorization: \
         anyone could join private and presence channels. It must answer 401 or 403 when there is \
         no session"
    ))
}

/// For apps whose signed REST request was refused (401): does their key and
/// app_id work with another app's secret? Then the config has them swapped.
pub async fn swapped_secrets(
    settings: &Settings,
    reports: &[AppReport],
    http: &reqwest::Client,
    until: Instant,
) -> Option<Check> {
    let refused = |name: &str| {
        reports.iter().any(|r| {
            r.app == name
                && r.checks.iter().any(|c| {
                    c.name == "REST API" && c.status == Status::Fail && c.detail.starts_with("REST 401")
                })
        })
    };
    let apps: Vec<&AppSettings> = settings.apps.values().filter(|a| refused(&a.name)).collect();
    let mut found = Vec::new();
    for app in &apps {
        for other in settings.apps.values().filter(|o| o.name != app.name) {
            if rest_accepts(app, other.credentials.secret.expose_secret(), http, until).await {
                found.push((app.name.to_string(), other.name.to_string()));
            }
        }
    }
    let [(a, b), ..] = found.as_slice() else { return None };
    let both = found.contains(&(b.clone(), a.clone()));
    let detail = if both {
        format!(
            "swapped: [apps.{a}] and [apps.{b}] each hold the other's secret (each key and app_id is \
             accepted with the other section's secret): exchange their secret (or secret_file)"
        )
    } else {
        format!(
            "[apps.{a}]'s key and app_id are accepted with the secret configured for [apps.{b}]: \
             [apps.{a}] holds the wrong secret (its own is the one in [apps.{b}])"
        )
    };
    Some(Check::fail("secrets", &Failure::Wrong(detail)))
}

/// Whether a GET of `app`'s channel list signed with `secret` is accepted.
async fn rest_accepts(app: &AppSettings, secret: &str, http: &reqwest::Client, until: Instant) -> bool {
    let path = format!("/apps/{}/channels", app.app_id);
    let url = crate::outbound::signed_url_with_secret(app, secret, "GET", &path, b"", &[]);
    let sent = tokio::time::timeout_at(step(until), http.get(url).send()).await;
    matches!(sent, Ok(Ok(res)) if res.status().is_success())
}
