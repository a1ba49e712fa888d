//! `GET /client-config[?uid=ID]`: which app this client should use during a
//! rollout, in the shape pusher-js options take. Not a security decision (either
//! app's auth route still asks the host), so no session check is made.

use crate::{
    error::{Refusal, refusal_response_error},
    pusher::UserId,
    rollout::assign::assign,
    state::AppState,
};
use actix_web::{
    HttpRequest, HttpResponse,
    cookie::{Cookie, SameSite},
    http::{StatusCode, header},
    web,
};
use serde_json::json;

/// A random per-browser id, for clients the app does not name with `uid`.
const COOKIE: &str = "pusher_dual_auth_rid";

#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    /// Unmounted without `[rollout]`; a reload may race the route guard.
    #[error("no [rollout] is configured")]
    NotConfigured,
    /// Given twice, a uid is refused rather than guessed (as the auth routes do with their fields).
    #[error("uid is given more than once")]
    DuplicateUid,
    #[error("{}", concat!("uid must be 1-128 of ", crate::name_chars!()))]
    InvalidUid,
}

refusal_response_error!(ClientConfigError);

impl Refusal for ClientConfigError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotConfigured => (StatusCode::NOT_FOUND, "not_configured"),
            Self::DuplicateUid => (StatusCode::BAD_REQUEST, "duplicate_field"),
            Self::InvalidUid => (StatusCode::BAD_REQUEST, "invalid_uid"),
        }
    }
}

pub async fn client_config(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ClientConfigError> {
    let no_store = (header::CACHE_CONTROL, "no-store");
    let live = state.live();
    let rollout = live.settings.rollout.as_ref().ok_or(ClientConfigError::NotConfigured)?;
    let uids: Vec<_> = form_urlencoded::parse(req.query_string().as_bytes())
        .filter(|(k, _)| k == "uid")
        .map(|(_, v)| v)
        .collect();
    let uid = match uids.as_slice() {
        [] => None,
        [one] => Some(one),
        _ => return Err(ClientConfigError::DuplicateUid),
    };
    let (id, new_cookie) = match uid.map(|u| u.as_ref()) {
        Some(uid) if UserId::parse_for_signin(uid).is_ok() => (uid.to_owned(), None),
        Some(_) => return Err(ClientConfigError::InvalidUid),
        None => match req
            .cookie(COOKIE)
            .map(|c| c.value().to_owned())
            .filter(|v| UserId::parse_for_signin(v).is_ok())
        {
            Some(id) => (id, None),
            None => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                (id.clone(), Some(id))
            }
        },
    };
    let assignment = assign(rollout, &id, uid.is_some());
    // While an app is failed over, everyone assigned to it (force lists too) goes to the other.
    let failover = state.failover.in_force(&live.settings);
    let name = match failover.as_deref() {
        Some(f) if f.from == assignment.app => {
            state.metrics.failover_redirected(&f.from, &f.to);
            f.to.as_str()
        }
        _ => assignment.app,
    };
    let app = live.settings.app(name).expect("rollout apps are checked at load");
    let prefix = forwarded_prefix(&req, &live.settings.server.trusted_proxies);
    let (channel_endpoint, user_endpoint) = endpoints(app, prefix);
    let mut body = json!({
        "app": name,
        "key": app.credentials.key.as_ref(),
        "cluster": app.cluster.as_deref().unwrap_or("mt1"),
        "client_options": app.client_options,
        "channelAuthorization": {"endpoint": channel_endpoint},
        "userAuthentication": {"endpoint": user_endpoint},
        // Neither the bucket nor whether the uid is on a force list: anyone may ask
        // about any uid, and a bucket beside the percent would tell the lists apart.
        "percent": rollout.percent,
        "control_channel": rollout.control_channel,
        "version": crate::failover::decide::client_version(rollout.version, failover.as_deref()),
    });
    // Only with [failover]: a client then watches its connection and re-reads when it fails.
    if live.settings.failover.is_some() {
        body["failover"] = json!(failover.as_deref().map(crate::failover::decide::Failed::told));
    }
    let mut res = HttpResponse::Ok();
    res.insert_header(no_store);
    if let Some(id) = new_cookie {
        let cookie = Cookie::build(COOKIE, id)
            .path("/")
            .http_only(true)
            .secure(behind_https(&req, &live.settings.server.trusted_proxies))
            .same_site(SameSite::Lax)
            .max_age(actix_web::cookie::time::Duration::days(365))
            .finish();
        res.cookie(cookie);
    }
    Ok(res.json(body))
}

/// Where clients reach `app`'s auth routes: its configured `auth_endpoint` and
/// `user_auth_endpoint` (the user one defaults to the channel one + `/user`), or
/// the service's own routes under the prefix a proxy mounts it at.
fn endpoints(app: &crate::config::AppSettings, prefix: &str) -> (String, String) {
    let channel = match &app.auth_endpoint {
        Some(e) => e.clone(),
        None => format!("{prefix}/auth/{}", app.name),
    };
    let user = match &app.user_auth_endpoint {
        Some(e) => e.clone(),
        None => format!("{}/user", channel.trim_end_matches('/')),
    };
    (channel, user)
}

/// The path a trusted proxy mounts the whole service at (`X-Forwarded-Prefix`,
/// as nginx, Traefik and Spring use it; the nginx recipe sets it), or "" — from
/// anyone else it is not believed, and only a plain path is taken.
fn forwarded_prefix<'a>(req: &'a HttpRequest, trusted: &[ipnet::IpNet]) -> &'a str {
    let prefix = req.headers().get("x-forwarded-prefix").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let plain = prefix.len() <= 200
        && prefix.starts_with('/')
        && !prefix.contains("//")
        && !prefix.split('/').any(|seg| seg == "..")
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b));
    if plain && from_trusted_proxy(req, trusted) { prefix.trim_end_matches('/') } else { "" }
}

/// Whether the peer is one of `server.trusted_proxies`, whose X-Forwarded-* headers are believed.
fn from_trusted_proxy(req: &HttpRequest, trusted: &[ipnet::IpNet]) -> bool {
    req.peer_addr().is_some_and(|a| crate::session_check::is_trusted(a.ip(), trusted))
}

/// Whether the browser reached the service over HTTPS, as a trusted proxy says
/// (`X-Forwarded-Proto`, its first value: the client-facing hop): the cookie is
/// then `Secure`. The service speaks plain HTTP behind that proxy; from anyone
/// else the header is not believed.
fn behind_https(req: &HttpRequest, trusted: &[ipnet::IpNet]) -> bool {
    let proto = req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok());
    from_trusted_proxy(req, trusted)
        && proto.and_then(|p| p.split(',').next()).is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}
