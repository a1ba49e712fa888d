//! `pusher-dual-auth demo`: the service on two throwaway demo apps, with a
//! built-in demo session check, so a newcomer sees real signatures, a 403 and
//! a 400 with nothing else installed. Loopback only: the demo secrets are public.

use crate::{config::Settings, startup::Application, telemetry};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use std::net::{SocketAddr, TcpListener};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where the auth service listens (loopback addresses only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// Demo users of the built-in session check: (bearer token / cookie value, id, name).
const USERS: &[(&str, &str, &str)] = &[("alice", "1", "Alice"), ("bob", "2", "Bob")];

/// The public demo master key: 32 bytes of 0x2a.
pub const DEMO_MASTER_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

pub fn demo_config(listen: SocketAddr, session_check_url: &str) -> String {
    // Any free port: the demo must not collide with a real instance's 9090.
    let admin = SocketAddr::new(listen.ip(), 0);
    format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
[session_check]
url = "{session_check_url}"
[apps.old]
app_id = "100001"
key = "demo-old-key"
secret = "demo-old-secret"
cluster = "mt1"
[apps.new]
app_id = "200002"
key = "demo-new-key"
secret = "demo-new-secret"
cluster = "eu"
encryption_master_key_base64 = "{DEMO_MASTER_KEY}"
[rollout]
from = "old"
to = "new"
percent = 50
force_to = ["alice"]
[log]
format = "pretty"
"#
    )
}

/// The demo host's rule: a bearer token or `demo_session` cookie names a
/// user; `private-admin-*` is Alice's only; `*-user-<id>` only that user's.
async fn demo_session_check(req: HttpRequest, body: web::Json<serde_json::Value>) -> HttpResponse {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = req
        .headers()
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').filter_map(|p| p.trim().strip_prefix("demo_session=")).next());
    let Some(&(token, id, name)) = bearer.or(cookie).and_then(|t| USERS.iter().find(|u| u.0 == t)) else {
        return HttpResponse::Unauthorized().finish();
    };
    let channel = body.get("channel_name").and_then(|c| c.as_str()).unwrap_or("");
    let bare = channel
        .trim_start_matches("private-encrypted-")
        .trim_start_matches("private-")
        .trim_start_matches("presence-");
    let forbidden = (bare.starts_with("admin-") && token != "alice")
        || bare.strip_prefix("user-").is_some_and(|owner| owner != id);
    if forbidden {
        return HttpResponse::Forbidden().finish();
    }
    HttpResponse::Ok().json(serde_json::json!({"user_id": id, "user_info": {"name": name}}))
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "the demo listens on loopback only (its secrets are public); got {}",
        args.listen
    );
    let host_listener = TcpListener::bind("127.0.0.1:0")?;
    let host_url = format!("http://{}/internal/pusher-session", host_listener.local_addr()?);
    let host =
        HttpServer::new(|| App::new().route("/internal/pusher-session", web::post().to(demo_session_check)))
            .workers(1)
            .listen(host_listener)?
            .run();
    let settings = Settings::from_toml(&demo_config(args.listen, &host_url), None)?;
    let _traces = telemetry::init(&settings.log, settings.telemetry.as_ref());
    let app = Application::build(settings)?;
    let base = format!("http://{}:{}", args.listen.ip(), app.port());
    let admin = format!("http://{}:{}", args.listen.ip(), app.admin_port());
    println!(
        r#"pusher-dual-auth demo: two demo Pusher apps, "old" and "new" (public demo secrets: never use them for real).
Auth routes: {base}/auth/old  {base}/auth/new  (+ /user for sign-in).  Session check: built-in demo at {host_url}
Migration status: {admin}/status.html  Metrics: {admin}/metrics  (the admin listener)
Demo users: Bearer token or cookie demo_session = alice | bob. Try:

  # 200, signed with the NEW app's key and secret:
  curl -s -X POST {base}/auth/new -H 'Authorization: Bearer alice' -d socket_id=1234.1234 -d channel_name=private-foobar
  # 200, the same request for the OLD app carries a different key and signature:
  curl -s -X POST {base}/auth/old -H 'Authorization: Bearer alice' -d socket_id=1234.1234 -d channel_name=private-foobar
  # 200, presence: channel_data is built from the session check's answer, not the client:
  curl -s -X POST {base}/auth/new --cookie demo_session=bob -d socket_id=1234.1234 -d channel_name=presence-lobby
  # 200, private-encrypted: adds the shared_secret:
  curl -s -X POST {base}/auth/new -H 'Authorization: Bearer alice' -d socket_id=1234.1234 -d channel_name=private-encrypted-chat
  # 403, the session check denies bob the admin channel (and anyone without a session):
  curl -s -i -X POST {base}/auth/new -H 'Authorization: Bearer bob' -d socket_id=1234.1234 -d channel_name=private-admin-ops
  # 400, a socket_id carrying an injection attempt never reaches the session check:
  curl -s -i -X POST {base}/auth/new -H 'Authorization: Bearer alice' --data-urlencode 'socket_id=1.1:private-admin-ops' -d channel_name=private-x
  # which app a client should use during the rollout (50 % here; alice is forced onto "new"):
  curl -s '{base}/client-config?uid=bob'
  curl -s '{base}/client-config?uid=alice'
  # 400, public channels need no auth:
  curl -s -i -X POST {base}/auth/new -H 'Authorization: Bearer alice' -d socket_id=1234.1234 -d channel_name=lobby

Press Ctrl-C to stop."#
    );
    let (a, b) = tokio::join!(app.run_until_stopped(), host);
    a?;
    b?;
    Ok(())
}
