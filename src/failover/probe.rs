//! One probe of one app, as its clients use it: `pusher:ping` on a WebSocket
//! kept open between probes (so a drop is seen at once, and a probe costs one
//! frame, not a handshake), and a signed REST call, concurrently.

use crate::{config::AppSettings, doctor::ws::Session};
use serde_json::json;
use tokio::time::Instant;

/// Probes `app` by `until`; the WebSocket to keep for the next probe (none
/// after a failure: the next one connects again).
pub async fn probe(
    app: &AppSettings,
    http: &reqwest::Client,
    session: Option<Session>,
    until: Instant,
) -> (Result<(), String>, Option<Session>) {
    let ws = async {
        let mut session = match session {
            Some(s) => s,
            None => {
                let url = crate::doctor::websocket_url(app).map_err(|f| f.plain())?;
                Session::connect(&url, until).await.map_err(|f| format!("WebSocket: {}", f.plain()))?
            }
        };
        session
            .send("pusher:ping", json!({}), until)
            .await
            .map_err(|f| format!("WebSocket: {}", f.plain()))?;
        session
            .wait_for(until, "pusher:pong", |f| f.event == "pusher:pong")
            .await
            .map_err(|f| format!("WebSocket: {}", f.plain()))?;
        Ok::<_, String>(session)
    };
    let rest = async {
        crate::doctor::rest_check(app, http, until).await.map_err(|f| format!("REST: {}", f.plain()))
    };
    let (ws, rest) = tokio::join!(ws, rest);
    match (ws, rest) {
        (Ok(session), Ok(())) => (Ok(()), Some(session)),
        (Ok(session), Err(e)) => (Err(e), Some(session)),
        (Err(e), Ok(())) => (Err(e), None),
        (Err(ws), Err(rest)) => (Err(format!("{ws}; {rest}")), None),
    }
}
