//! The protocol's floor, for `bench/load.py`: the floor (`floor_proxy.rs`: the
//! same crates, one kept-alive pool per worker, two exchanges) plus the
//! protocol's own work and nothing else. The form read, the check's JSON body
//! with the browser's Cookie, the host's JSON answer read, the presence
//! `channel_data`, the HMAC-SHA256 keyed once and the answer's JSON, each the
//! cheapest way these crates allow. No timeouts, limits, caps, coalescing,
//! answer tie, forwarded address, request id, CORS, metrics or logs.
//!
//! What any implementation of channel authorization pays on these crates
//! before it keeps any promise: a target below this is out of reach of the
//! service whatever its code, and the service's cost over it is what its
//! safety and operations cost.
//!
//! NOT a server to deploy: it trusts any 2xx, holds any body, waits forever.
//!
//!     PORT=8080 CHECK=127.0.0.1:9000 WORKERS=2 cargo run --release --example protocol_floor

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use sha2::Sha256;
use std::borrow::Cow;

#[path = "shared/check_pool.rs"]
mod check_pool;
use check_pool::{POOL, connect};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The bench's app (`bench/load.py`'s `new`).
const KEY: &str = "new-app-key";
const SECRET: &[u8] = b"new-app-secret";

/// The check's address and the app's HMAC key.
struct Floor {
    addr: String,
    key: Hmac<Sha256>,
}

#[derive(serde::Serialize)]
struct Check<'a> {
    app: &'a str,
    kind: &'a str,
    socket_id: &'a str,
    channel_name: &'a str,
}

/// The host's answer, and (serialized) a presence channel's `channel_data`.
#[derive(serde::Deserialize, serde::Serialize)]
struct Identity<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_info: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(serde::Serialize)]
struct Answer<'a> {
    auth: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_data: Option<&'a str>,
}

/// POSTs `body` with the browser's `cookie` to the check on a pooled connection:
/// whether it answered 2xx, and its body.
async fn check(
    addr: &str,
    body: Bytes,
    cookie: Option<&[u8]>,
) -> Result<(bool, Bytes), Box<dyn std::error::Error>> {
    let mut sender = match POOL.with(|p| p.borrow_mut().pop()) {
        Some(sender) => sender,
        None => connect(addr).await?,
    };
    let mut request = hyper::Request::post("/check")
        .header(hyper::header::HOST, addr)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(cookie) = cookie {
        request = request.header(hyper::header::COOKIE, cookie);
    }
    let response = sender.send_request(request.body(Full::new(body))?).await?;
    let ok = response.status().is_success();
    let answer = response.into_body().collect().await?.to_bytes();
    POOL.with(|p| p.borrow_mut().push(sender));
    Ok((ok, answer))
}

/// pusher-js's socket id: digits, a dot, digits.
fn socket_id_ok(s: &str) -> bool {
    s.split_once('.')
        .is_some_and(|(a, b)| [a, b].iter().all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit())))
}

/// A private or presence channel's name: Pusher's characters, at most 164 of them.
fn channel_ok(s: &str) -> bool {
    (1..=164).contains(&s.len())
        && (s.starts_with("private-") || s.starts_with("presence-"))
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_=@,.;".contains(&c))
}

async fn auth(req: HttpRequest, form: Bytes, floor: web::Data<Floor>) -> HttpResponse {
    let bad = || HttpResponse::BadRequest().finish();
    let (mut socket_id, mut channel) = (None, None);
    for (name, value) in form_urlencoded::parse(&form) {
        match &*name {
            "socket_id" => socket_id = Some(value),
            "channel_name" => channel = Some(value),
            _ => {}
        }
    }
    let (Some(socket_id), Some(channel)) = (socket_id, channel) else { return bad() };
    if !socket_id_ok(&socket_id) || !channel_ok(&channel) {
        return bad();
    }
    let body = Check { app: "new", kind: "channel", socket_id: &socket_id, channel_name: &channel };
    let body = Bytes::from(serde_json::to_vec(&body).expect("serializes"));
    let cookie = req.headers().get(actix_web::http::header::COOKIE).map(|v| v.as_bytes());
    let answer = match check(&floor.addr, body, cookie).await {
        Ok((true, answer)) => answer,
        Ok((false, _)) => return HttpResponse::Forbidden().finish(),
        Err(_) => return HttpResponse::BadGateway().finish(),
    };
    let Ok(identity) = serde_json::from_slice::<Identity>(&answer) else {
        return HttpResponse::BadGateway().finish();
    };
    let channel_data =
        channel.starts_with("presence-").then(|| serde_json::to_string(&identity).expect("serializes"));
    let mut mac = floor.key.clone();
    mac.update(socket_id.as_bytes());
    mac.update(b":");
    mac.update(channel.as_bytes());
    if let Some(data) = &channel_data {
        mac.update(b":");
        mac.update(data.as_bytes());
    }
    let mut sig = [0u8; 64];
    hex::encode_to_slice(mac.finalize().into_bytes(), &mut sig).expect("32 bytes are 64 hex digits");
    let mut auth = String::with_capacity(KEY.len() + 1 + sig.len());
    auth.push_str(KEY);
    auth.push(':');
    auth.push_str(std::str::from_utf8(&sig).expect("hex is ASCII"));
    let answer = Answer { auth: &auth, channel_data: channel_data.as_deref() };
    HttpResponse::Ok().content_type("application/json").body(serde_json::to_vec(&answer).expect("serializes"))
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() -> std::io::Result<()> {
    let port: u16 = var("PORT").and_then(|p| p.parse().ok()).expect("PORT: the port to listen on");
    let addr = var("CHECK").expect("CHECK: host:port answering POST /check");
    let mut server = HttpServer::new(move || {
        let floor =
            Floor { addr: addr.clone(), key: Hmac::new_from_slice(SECRET).expect("HMAC takes any key") };
        App::new()
            .app_data(web::Data::new(floor))
            // A prefix scope, as the service routes /auth.
            .service(web::scope("/auth").default_service(web::to(auth)))
    });
    // Unset: actix-web's default, as the service's (one worker per core).
    if let Some(workers) = var("WORKERS").and_then(|w| w.parse().ok()) {
        server = server.workers(workers);
    }
    actix_web::rt::System::new().block_on(server.bind(("127.0.0.1", port))?.run())
}
