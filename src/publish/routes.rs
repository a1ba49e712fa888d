//! The publish routes: verify, check, fan out, answer.

use super::{
    PublishError,
    forward::{Forwarded, Outgoing, Wait, fan_out, not_delivered, write_answer},
    merge,
    verify::{self, MAX_BATCH, MAX_BATCH_BODY, MAX_EMPTY_BODY, MAX_EVENT_BODY, check_event, path_segment},
};
use crate::{config::PublishSettings, state::AppState};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

/// A verified write: its config, body (read within the server's body deadline)
/// and params to forward.
async fn verified_write<'a>(
    req: &HttpRequest,
    live: &'a crate::state::Live,
    app_id: &str,
    payload: web::Payload,
    limit: usize,
) -> Result<((&'a PublishSettings, &'a reqwest::Client), web::Bytes, Vec<(String, String)>), PublishError> {
    let target = publishing(live)?;
    let deadline = live.settings.server.body_timeout;
    let (body, extra) = verify::verified(req, target.0, app_id, payload, limit, deadline).await?;
    Ok((target, body, extra))
}

/// A write waits for every target with `success = "all"`, for the first that takes it with "any".
fn write_wait(publish: &PublishSettings) -> Wait {
    match publish.success {
        crate::config::PublishSuccess::All => Wait::All,
        crate::config::PublishSuccess::Any => Wait::FirstSuccess,
    }
}

/// `[publish]` and its client; `NotConfigured` if a reload removed it since routing.
fn publishing(live: &crate::state::Live) -> Result<(&PublishSettings, &reqwest::Client), PublishError> {
    live.publishing().ok_or(PublishError::NotConfigured)
}

async fn events(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PublishError> {
    let live = state.live();
    let (target, body, extra) = verified_write(&req, &live, &path, payload, MAX_EVENT_BODY).await?;
    let event: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err(PublishError::Invalid("body must be a JSON object".into())),
    };
    check_event(&event)?;
    let out = Outgoing { method: reqwest::Method::POST, suffix: "/events".into(), extra, body };
    let keeping = crate::recovery::record::before(&state, &live, &[&event]).await;
    let results = fan_out(live.clone(), state.clone().into_inner(), out, write_wait(target.0)).await;
    crate::recovery::record::after(&state, keeping, results.iter().any(Forwarded::ok)).await;
    Ok(write_answer(target.0, &results))
}

async fn batch_events(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PublishError> {
    let live = state.live();
    let (target, body, extra) = verified_write(&req, &live, &path, payload, MAX_BATCH_BODY).await?;
    let bad = |m: &str| PublishError::Invalid(m.into());
    let Some(Value::Array(batch)) =
        serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("batch").cloned())
    else {
        return Err(bad("body must be {\"batch\": [...]}"));
    };
    if batch.is_empty() || batch.len() > MAX_BATCH {
        return Err(bad("a batch holds 1-10 events"));
    }
    for event in &batch {
        if event.get("channels").is_some() {
            return Err(bad("batch events take one channel each"));
        }
        check_event(event)?;
    }
    let out = Outgoing { method: reqwest::Method::POST, suffix: "/batch_events".into(), extra, body };
    let events: Vec<&Value> = batch.iter().collect();
    let keeping = crate::recovery::record::before(&state, &live, &events).await;
    let results = fan_out(live.clone(), state.clone().into_inner(), out, write_wait(target.0)).await;
    crate::recovery::record::after(&state, keeping, results.iter().any(Forwarded::ok)).await;
    let answer = write_answer(target.0, &results);
    // batch_events answers {} or, with info, {"batch":[…]}: pass the first target's body on.
    Ok(match results.iter().find_map(Forwarded::parsed) {
        Some(v) if answer.status().is_success() => HttpResponse::Ok().json(v),
        _ => answer,
    })
}

async fn terminate(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PublishError> {
    let live = state.live();
    let (app_id, user_id) = path.into_inner();
    path_segment(&user_id, "user id")?;
    let (target, _, extra) = verified_write(&req, &live, &app_id, payload, MAX_EMPTY_BODY).await?;
    let suffix = format!("/users/{user_id}/terminate_connections");
    let out = Outgoing { method: reqwest::Method::POST, suffix, extra, body: web::Bytes::new() };
    let results = fan_out(live.clone(), state.clone().into_inner(), out, write_wait(target.0)).await;
    Ok(write_answer(target.0, &results))
}

/// GET queries, merged: channel lists united (counts summed), a channel
/// occupied if it is on any app, presence users united by id.
async fn query(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, PublishError> {
    let live = state.live();
    let target = publishing(&live)?;
    let app_id = req.match_info().get("app_id").unwrap_or_default().to_owned();
    if let Some(channel) = req.match_info().get("channel") {
        path_segment(channel, "channel name")?;
    }
    let extra = verify::forwardable(verify::verify(&req, target.0, &app_id)?);
    let suffix = req.path().trim_start_matches(&format!("/apps/{app_id}")).to_owned();
    let out =
        Outgoing { method: reqwest::Method::GET, suffix: suffix.clone(), extra, body: web::Bytes::new() };
    let results = fan_out(live.clone(), state.clone().into_inner(), out, Wait::All).await;
    if let Some(bad) = results.iter().find(|r| !r.ok()) {
        tracing::warn!(target_app = %bad.app, "publish query: a target failed");
        return Ok(not_delivered(&results, "a target app did not answer"));
    }
    let bodies: Vec<Value> = results.iter().filter_map(Forwarded::parsed).collect();
    let merged = if suffix.ends_with("/users") {
        merge::users(&bodies)
    } else {
        merge::channels(&bodies).unwrap_or_else(|| merge::one_channel(&bodies))
    };
    Ok(HttpResponse::Ok().json(merged))
}

/// The routes; `configured` keeps them unmatched while `[publish]` is not set.
pub fn configure(cfg: &mut web::ServiceConfig, configured: impl actix_web::guard::Guard + 'static) {
    cfg.service(
        web::scope("/apps/{app_id}")
            .guard(configured)
            .route("/events", web::post().to(events))
            .route("/batch_events", web::post().to(batch_events))
            .route("/channels", web::get().to(query))
            .route("/channels/{channel}", web::get().to(query))
            .route("/channels/{channel}/users", web::get().to(query))
            .route("/users/{user_id}/terminate_connections", web::post().to(terminate))
            // Its own: the application's default gives a request its id again.
            .default_service(crate::routes::not_found()),
    );
}
