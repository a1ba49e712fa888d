//! `pusher-dual-auth doctor`: checks every configured app against its real
//! Pusher server, as a client would, before any traffic moves. Per app: the
//! REST API takes a signed request; a WebSocket connects (protocol 7);
//! private, presence and (with a master key) encrypted channels subscribe with
//! this service's own signatures, and an event published through REST arrives
//! on each (the encrypted one opens); a client event and a sign-in show what
//! the app allows. Then the apps are compared. Bounded in time; exit 0 only
//! when everything passed.

mod report;
mod service;
mod verdict;
pub(crate) mod ws;

use crate::{
    config::{AppSettings, Settings},
    pusher::{
        ChannelAuth, ChannelName, PresenceMember, UserData, UserId, authenticate_user, authorize_channel,
    },
};
use report::{AppReport, Check, Features, Report};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;
use verdict::{Failure, said};
use ws::Session;

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print the report as JSON (for scripts); the exit status is the same.
    #[arg(long)]
    pub json: bool,
    /// Stop waiting after this many seconds; whatever is unanswered by then fails.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout_secs: u64,
}

/// Longest wait for any one answer, so one silent step leaves time for the rest.
const STEP: Duration = Duration::from_secs(5);
/// How long a client event may take to reach the other connection.
const CLIENT_EVENT_WAIT: Duration = Duration::from_secs(3);
const EVENT: &str = "pusher-dual-auth-doctor";
const USER: &str = "pusher-dual-auth-doctor";

/// Runs every check; prints the report; true when all passed.
pub async fn run(settings: &Settings, args: &DoctorArgs) -> anyhow::Result<bool> {
    // The WebSocket probe's TLS (tokio-tungstenite) takes rustls's process-wide
    // provider too; the HTTP clients install it in `outbound::client_builder`.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let until = Instant::now() + Duration::from_secs(args.timeout_secs);
    let http = crate::outbound::http_client(STEP);
    // Channels of their own, so a run never mixes with real traffic or another run.
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let control = settings.rollout.as_ref().map(|r| r.control_channel.as_ref());
    let probes = in_migration_order(settings).into_iter().map(|app| {
        let (http, run_id) = (&http, &run_id);
        async move {
            // Every step is bounded by `until`; this bounds whatever a later change leaves unbounded.
            let probe = probe(app, http, (run_id, control), until);
            tokio::time::timeout_at(until + Duration::from_secs(1), probe)
                .await
                .unwrap_or_else(|_| out_of_time(app))
        }
    });
    let (apps, session_check) =
        tokio::join!(futures_util::future::join_all(probes), service::session_check(settings, until));
    let mut checks = vec![session_check];
    checks.extend(service::swapped_secrets(settings, &apps, &http, until).await);
    let mut report = Report::new(checks, apps);
    if settings.failover.is_some() {
        report = report.with_failover_readiness();
    }
    let out = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { report.text() };
    // A closed pipe (`doctor | head`) is not worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    Ok(report.ok)
}

/// The app being left first, then the one moved to (from `[rollout]`, else
/// `[status] old_app`), then the rest by name: the order a reader compares in.
fn in_migration_order(settings: &Settings) -> Vec<&AppSettings> {
    let (from, to) = match &settings.rollout {
        Some(r) => (Some(r.from.as_str()), Some(r.to.as_str())),
        None => (settings.status.old_app.as_deref(), None),
    };
    let mut apps: Vec<&AppSettings> = settings.apps.values().collect();
    apps.sort_by_key(|a| (Some(a.name.as_str()) != from, Some(a.name.as_str()) != to, a.name.to_string()));
    apps
}

/// Where a client of this app connects: `client_options` (wsHost, wsPort,
/// wssPort, forceTLS, wsPath, as pusher-js reads them) or the cluster's host.
pub fn websocket_url(app: &AppSettings) -> Result<url::Url, Failure> {
    let o = &app.client_options;
    let port = |name: &str| o.get(name).and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    let tls = o.get("forceTLS").and_then(Value::as_bool).unwrap_or(true);
    let host = match o.get("wsHost").and_then(Value::as_str) {
        Some(h) => h.to_owned(),
        None => format!("ws-{}.pusher.com", app.cluster.as_deref().unwrap_or("mt1")),
    };
    let (scheme, port) =
        if tls { ("wss", port("wssPort").unwrap_or(443)) } else { ("ws", port("wsPort").unwrap_or(80)) };
    let path = o.get("wsPath").and_then(Value::as_str).unwrap_or_default();
    let key = app.credentials.key.as_ref();
    let url = format!(
        "{scheme}://{host}:{port}{path}/app/{key}?protocol=7&client=pusher-dual-auth-doctor&version={}&flash=false",
        env!("CARGO_PKG_VERSION")
    );
    url::Url::parse(&url)
        .map_err(|e| Failure::Wrong(format!("client_options give no usable WebSocket URL ({e}): {url}")))
}

pub(crate) fn step(until: Instant) -> Instant {
    until.min(Instant::now() + STEP)
}

/// `control`: the rollout's control channel, checked too (announcements go there).
async fn probe(
    app: &AppSettings,
    http: &reqwest::Client,
    (run_id, control): (&str, Option<&str>),
    until: Instant,
) -> AppReport {
    let master_key_digest = app.credentials.master_key.as_ref().map(|k| {
        use sha2::Digest;
        sha2::Sha256::digest(k.bytes()).into()
    });
    let mut report = AppReport {
        app: app.name.to_string(),
        websocket: String::new(),
        rest: crate::config::redact_url(&app.rest_url),
        checks: Vec::new(),
        features: Features { master_key_digest, ..Features::default() },
    };
    report.checks.push(match rest_check(app, http, until).await {
        Ok(()) => Check::pass("REST API", format!("signed GET /apps/{}/channels accepted", app.app_id)),
        Err(f) => Check::fail("REST API", &f),
    });
    let url = match websocket_url(app) {
        Ok(url) => url,
        Err(f) => {
            report.checks.push(Check::fail("connect", &f));
            return report;
        }
    };
    report.websocket = url[..url::Position::AfterPath].to_owned();
    let mut a = match Session::connect(&url, step(until)).await {
        Ok(a) => a,
        Err(f) => {
            report.checks.push(Check::fail("connect", &f));
            let why = Failure::NotRun("no connection");
            let names =
                ["private channel", "presence channel", "encrypted channel", "client events", "user sign-in"];
            for name in names.into_iter().chain(control.map(|_| "control channel")) {
                report.checks.push(Check::fail(name, &why));
            }
            return report;
        }
    };
    report.checks.push(Check::pass("connect", format!("socket {} (protocol 7)", a.socket_id.as_ref())));
    let private = format!("private-{EVENT}-{run_id}");

    report.checks.push(to_check("private channel", round_trip(&mut a, app, http, &private, until).await));
    let presence = format!("presence-{EVENT}-{run_id}");
    report.checks.push(to_check("presence channel", round_trip(&mut a, app, http, &presence, until).await));
    report.checks.push(match app.credentials.master_key {
        Some(_) => {
            let encrypted = format!("private-encrypted-{EVENT}-{run_id}");
            to_check("encrypted channel", round_trip(&mut a, app, http, &encrypted, until).await)
        }
        None => Check::skip("encrypted channel", "no encryption master key configured for this app"),
    });

    let (allowed, check) = client_events(&url, app, &format!("private-{EVENT}-client-{run_id}"), until).await;
    report.features.client_events = allowed;
    report.checks.push(check);
    let (accepted, check) = sign_in(&mut a, app, until).await;
    report.features.user_authentication = accepted;
    report.checks.push(check);
    if let Some(control) = control {
        report
            .checks
            .push(to_check("control channel", control_channel(&mut a, app, http, control, until).await));
    }
    a.close(until).await;
    report
}

/// An app whose checks did not finish by the deadline.
fn out_of_time(app: &AppSettings) -> AppReport {
    AppReport {
        app: app.name.to_string(),
        websocket: String::new(),
        rest: crate::config::redact_url(&app.rest_url),
        checks: vec![Check::fail(
            "checks",
            &Failure::Timeout("the checks did not finish by --timeout-secs".into()),
        )],
        features: Features::default(),
    }
}

fn to_check(name: &'static str, result: Result<String, Failure>) -> Check {
    match result {
        Ok(detail) => Check::pass(name, detail),
        Err(f) => Check::fail(name, &f),
    }
}

/// A signed GET of the app's channel list: app_id, key and secret agree for REST.
pub(crate) async fn rest_check(
    app: &AppSettings,
    http: &reqwest::Client,
    until: Instant,
) -> Result<(), Failure> {
    let path = format!("/apps/{}/channels", app.app_id);
    let url = crate::outbound::signed_url(app, "GET", &path, b"", &[]);
    send_rest(app, http.get(url), until).await
}

/// The signed request's outcome. Its URL is a credential: errors are
/// reported with the app's plain REST base instead.
async fn send_rest(
    app: &AppSettings,
    request: reqwest::RequestBuilder,
    until: Instant,
) -> Result<(), Failure> {
    let unreachable =
        |error: String| Failure::Unreachable { url: crate::config::redact_url(&app.rest_url), error };
    let response = tokio::time::timeout_at(step(until), request.send())
        .await
        .map_err(|_| {
            Failure::Timeout(format!("the REST API at {}", crate::config::redact_url(&app.rest_url)))
        })?
        .map_err(|e| unreachable(error_chain(&e.without_url())))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    // Only the start is shown: a hostile or broken server's huge body is never read whole.
    let body = tokio::time::timeout_at(step(until), crate::outbound::read_prefix(response, 4096)).await;
    let body = String::from_utf8_lossy(&body.unwrap_or_default()).chars().take(200).collect();
    Err(Failure::Rest { status, body })
}

/// "connection refused" sits at the bottom of reqwest's error chain.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out = format!("{out}: {s}");
        source = s.source();
    }
    out
}

/// The server's `subscription_succeeded` frame for `channel`.
async fn subscribed(session: &mut Session, channel: &str, until: Instant) -> Result<ws::Frame, Failure> {
    session
        .wait_for(step(until), "the subscription to succeed", |f| {
            f.event == "pusher_internal:subscription_succeeded" && f.channel.as_deref() == Some(channel)
        })
        .await
}

/// Subscribes with this service's signature (as a member, on a presence
/// channel); the server's `subscription_succeeded` frame and the signed answer.
async fn subscribe(
    session: &mut Session,
    app: &AppSettings,
    channel: &str,
    until: Instant,
) -> Result<(ChannelAuth, ws::Frame), Failure> {
    let name = ChannelName::parse(channel).map_err(|e| Failure::Wrong(e.to_string()))?;
    let user = UserId::parse(USER).expect("a valid id");
    let member = PresenceMember { user_id: &user, user_info: None };
    let auth = authorize_channel(&app.credentials, &session.socket_id, &name, Some(&member))
        .map_err(|e| Failure::Wrong(e.to_string()))?;
    let mut subscribe = json!({"channel": channel, "auth": auth.auth});
    if let Some(data) = &auth.channel_data {
        subscribe["channel_data"] = json!(data);
    }
    session.send("pusher:subscribe", subscribe, until).await?;
    Ok((auth, subscribed(session, channel, until).await?))
}

/// Subscribes with this service's signature, publishes one event through
/// REST and waits for it (opening it on an encrypted channel).
async fn round_trip(
    session: &mut Session,
    app: &AppSettings,
    http: &reqwest::Client,
    channel: &str,
    until: Instant,
) -> Result<String, Failure> {
    let name = ChannelName::parse(channel).map_err(|e| Failure::Wrong(e.to_string()))?;
    let (auth, ok) = subscribe(session, app, channel, until).await?;
    let mut detail = "subscribed".to_owned();
    if auth.channel_data.is_some() {
        let ids = &ok.data["presence"]["ids"];
        if !ids.as_array().is_some_and(|ids| ids.iter().any(|id| id == USER)) {
            let ids = said(&ids.to_string());
            return Err(Failure::Wrong(format!("subscribed, but the member list lacks {USER}: {ids}")));
        }
        detail = format!("subscribed as member {USER}");
    }

    let sent = json!({"run": channel});
    let payload = sent.to_string();
    let data = match (&auth.shared_secret, &app.credentials.master_key) {
        (Some(_), Some(key)) => {
            let nonce = crate::pusher::encryption::random_nonce();
            crate::pusher::encryption::seal(&name, key, &nonce, payload.as_bytes())
        }
        _ => payload.clone(),
    };
    let body = json!({"name": EVENT, "channels": [channel], "data": data}).to_string();
    let request =
        crate::outbound::trigger::request(http, app, crate::outbound::trigger::Endpoint::Events, &body);
    send_rest(app, request, until).await.map_err(|f| {
        Failure::Wrong(format!("{detail}, but publishing through REST failed: {}", f.plain()))
    })?;
    let got = session
        .wait_for(step(until), "the event published through REST to arrive", |f| {
            f.event == EVENT && f.channel.as_deref() == Some(channel)
        })
        .await?;
    match &auth.shared_secret {
        Some(secret) => {
            let sealed = got.data.to_string();
            let opened = crate::pusher::encryption::open(secret, &sealed);
            if opened.as_deref() != Some(payload.as_bytes()) {
                return Err(Failure::Wrong(
                    "the encrypted event arrived but did not open with the shared secret".into(),
                ));
            }
            Ok(format!("{detail}; an event sealed with the master key arrived through REST and opened"))
        }
        None if got.data == sent => Ok(format!("{detail}; an event published through REST arrived")),
        None => {
            let got = said(&got.data.to_string());
            Err(Failure::Wrong(format!("an event arrived with other data than was published: {got}")))
        }
    }
}

/// The rollout's control channel (public): subscribed as the JS helper does,
/// an event of doctor's own (not `rollout-changed`, which clients act on)
/// published through REST arrives.
async fn control_channel(
    session: &mut Session,
    app: &AppSettings,
    http: &reqwest::Client,
    channel: &str,
    until: Instant,
) -> Result<String, Failure> {
    session.send("pusher:subscribe", json!({"channel": channel}), until).await?;
    subscribed(session, channel, until).await?;
    let body = json!({"name": EVENT, "channels": [channel], "data": "{}"}).to_string();
    let request =
        crate::outbound::trigger::request(http, app, crate::outbound::trigger::Endpoint::Events, &body);
    send_rest(app, request, until).await?;
    session
        .wait_for(step(until), "the event published through REST to arrive", |f| {
            f.event == EVENT && f.channel.as_deref() == Some(channel)
        })
        .await?;
    Ok(format!("{channel}: subscribed; an event published through REST arrived (announcements will)"))
}

/// Two more connections join a private channel of their own; a client event
/// sent on one reaches the other (allowed) or draws a `pusher:error` (refused).
async fn client_events(
    url: &url::Url,
    app: &AppSettings,
    channel: &str,
    until: Instant,
) -> (Option<bool>, Check) {
    const NAME: &str = "client events";
    let (mut a, mut b) =
        match tokio::join!(Session::connect(url, step(until)), Session::connect(url, step(until))) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(f), _) | (_, Err(f)) => return (None, Check::fail(NAME, &f)),
        };
    let joined = async {
        subscribe(&mut a, app, channel, until).await?;
        subscribe(&mut b, app, channel, until).await
    };
    if let Err(f) = joined.await {
        tokio::join!(a.close(until), b.close(until));
        return (None, Check::fail(NAME, &f));
    }
    // Only an answer to the client event itself says whether they are allowed.
    let result = async {
        let event = format!("client-{EVENT}");
        a.send_on(channel, &event, json!({"from": a.socket_id.as_ref()}), until).await?;
        let wait = until.min(Instant::now() + CLIENT_EVENT_WAIT);
        tokio::select! {
            biased;
            got = b.wait_for(wait, "the client event, or a refusal", |f| f.event == event) => got.map(|_| true),
            // Never Ok: it ends with a pusher:error, a close or the deadline.
            refused = a.wait_for(wait, "the client event, or a refusal", |_| false) => refused.map(|_| false),
        }
    }
    .await;
    tokio::join!(a.close(until), b.close(until));
    match result {
        Ok(_) => {
            (Some(true), Check::info(NAME, "allowed: a client event sent on one connection reached another"))
        }
        Err(f @ Failure::Refused { .. }) => (Some(false), Check::info(NAME, f.plain())),
        Err(f) => (None, Check::fail(NAME, &f)),
    }
}

/// `pusher:signin` with this service's signature: accepted, or refused.
async fn sign_in(a: &mut Session, app: &AppSettings, until: Instant) -> (Option<bool>, Check) {
    const NAME: &str = "user sign-in";
    let result = async {
        let user = UserData {
            id: UserId::parse_for_signin(USER).expect("a valid id"),
            user_info: None,
            watchlist: None,
        };
        let signed = authenticate_user(&app.credentials, &a.socket_id, &user);
        a.send("pusher:signin", json!({"auth": signed.auth, "user_data": signed.user_data}), until).await?;
        a.wait_for(step(until), "the sign-in to be answered", |f| f.event == "pusher:signin_success").await
    }
    .await;
    match result {
        Ok(_) => (Some(true), Check::info(NAME, "accepted (pusher:signin_success)")),
        Err(f @ (Failure::Refused { .. } | Failure::Closed { .. })) => {
            (Some(false), Check::info(NAME, f.plain()))
        }
        Err(f) => (None, Check::fail(NAME, &f)),
    }
}
