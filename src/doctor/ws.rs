//! One Pusher protocol 7 connection, as a client makes it: a real WebSocket
//! (tokio-tungstenite), JSON events whose `data` is often a JSON string.

use super::verdict::{Failure, said};
use crate::pusher::SocketId;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{net::TcpStream, time::Instant};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};

/// A Pusher frame; `data` decoded when it was a JSON string.
#[derive(Debug, Clone)]
pub struct Frame {
    pub event: String,
    pub channel: Option<String>,
    pub data: Value,
}

pub struct Session {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Checked once, here: every signature is made for it.
    pub socket_id: SocketId,
}

impl Session {
    /// Connects and waits for `pusher:connection_established`.
    pub async fn connect(url: &url::Url, until: Instant) -> Result<Self, Failure> {
        let shown = crate::config::redact_url(url);
        let unreachable = |error: String| Failure::Unreachable { url: shown.clone(), error };
        // Frames from a Pusher server are small; a hostile endpoint gets 1 MiB.
        let config = WebSocketConfig::default().max_message_size(Some(1 << 20)).max_frame_size(Some(1 << 20));
        let connecting = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let (ws, _) = tokio::time::timeout_at(until, connecting)
            .await
            .map_err(|_| Failure::Timeout(format!("connecting to {shown}")))?
            .map_err(|e| unreachable(said(&e.to_string())))?;
        let mut session = Self { ws, socket_id: SocketId::parse("0.0").expect("a valid placeholder") };
        let established = session.wait_for(until, "the connection to be established", |f| {
            f.event == "pusher:connection_established"
        });
        // A drop before this frame, with no code, is how sockudo refuses an unknown key.
        let frame = established.await.map_err(|f| match f {
            Failure::Wrong(_) | Failure::Closed { code: 1005 | 1006, .. } => Failure::DroppedAtConnect,
            other => other,
        })?;
        let given = frame.data["socket_id"].as_str().unwrap_or_default();
        session.socket_id = SocketId::parse(given)
            .map_err(|_| Failure::Wrong(format!("the server gave an invalid socket_id {}", said(given))))?;
        Ok(session)
    }

    /// Sends an event, by `until`: a server that stops reading cannot hold doctor.
    pub async fn send(&mut self, event: &str, data: Value, until: Instant) -> Result<(), Failure> {
        self.send_text(event, json!({"event": event, "data": data}).to_string(), until).await
    }

    /// Sends a client event (its `channel` sits beside `data`).
    pub async fn send_on(
        &mut self,
        channel: &str,
        event: &str,
        data: Value,
        until: Instant,
    ) -> Result<(), Failure> {
        let text = json!({"event": event, "channel": channel, "data": data}).to_string();
        self.send_text(event, text, until).await
    }

    async fn send_text(&mut self, event: &str, text: String, until: Instant) -> Result<(), Failure> {
        tokio::time::timeout_at(until, self.ws.send(Message::text(text)))
            .await
            .map_err(|_| Failure::Timeout(format!("sending {event}: the server does not read")))?
            .map_err(|e| Failure::Wrong(format!("sending {event}: {}", said(&e.to_string()))))
    }

    /// The next frame `wanted` accepts; a `pusher:error` or a close on the
    /// way is the answer instead. Frames neither wants are skipped.
    pub async fn wait_for(
        &mut self,
        until: Instant,
        what: &str,
        wanted: impl Fn(&Frame) -> bool,
    ) -> Result<Frame, Failure> {
        loop {
            let frame = self.next(until).await.map_err(|f| match f {
                Failure::Timeout(_) => Failure::Timeout(what.to_owned()),
                other => other,
            })?;
            if wanted(&frame) {
                return Ok(frame);
            }
            if frame.event == "pusher:error" {
                let code = frame.data["code"].as_u64();
                let message = frame.data["message"].as_str().unwrap_or_default().to_owned();
                return Err(Failure::Refused { code, message });
            }
        }
    }

    /// The next Pusher frame; pings answered on the way.
    async fn next(&mut self, until: Instant) -> Result<Frame, Failure> {
        loop {
            // Checked on every turn: `timeout_at` polls the stream first, and a
            // server flooding frames would otherwise keep it ready forever.
            if Instant::now() >= until {
                return Err(Failure::Timeout(String::new()));
            }
            let message = tokio::time::timeout_at(until, self.ws.next())
                .await
                .map_err(|_| Failure::Timeout(String::new()))?;
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Err(Failure::Closed { code, reason });
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return Err(Failure::Wrong(format!("the connection failed: {}", said(&e.to_string()))));
                }
                None => return Err(Failure::Closed { code: 1006, reason: String::new() }),
            };
            let Ok(mut v) = serde_json::from_str::<Value>(&text) else { continue };
            if v["event"] == "pusher:ping" {
                let _ = self.send("pusher:pong", json!({}), until).await;
                continue;
            }
            let data = match v["data"].take() {
                Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                other => other,
            };
            return Ok(Frame {
                event: v["event"].as_str().unwrap_or_default().to_owned(),
                channel: v["channel"].as_str().map(str::to_owned),
                data,
            });
        }
    }

    /// Closes politely if the server takes it by `until`; dropped either way.
    pub async fn close(mut self, until: Instant) {
        let _ = tokio::time::timeout_at(until, self.ws.close(None)).await;
    }
}
