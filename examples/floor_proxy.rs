//! The floor of the service's design, for `bench/load.py`: the same crates
//! (actix-web in, hyper's HTTP/1 client out, one kept-alive pool per worker)
//! doing no work at all. Each POST is answered with a fixed auth-shaped body once
//! the check URL has answered 2xx to a fixed POST. No parsing, forwarding, limits,
//! coalescing, signing, metrics or logs: what is left is two HTTP exchanges on
//! these crates. The service's CPU over this floor is the part its own code
//! controls; a target below the floor is out of reach of any change to that code.
//! Without `CHECK` it answers at once: actix-web's own cost for one exchange, to
//! set beside nginx's. `GET /client-config` answers the file `CLIENT_CONFIG`
//! names, read once at start (for `bench/client_config.py`): the same crates
//! answering a GET with no work, beside nginx serving that file.
//!
//! NOT a server to deploy: it signs nothing and checks nothing.
//!
//!     PORT=8080 CHECK=127.0.0.1:9000 WORKERS=2 cargo run --release --example floor_proxy

use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

#[path = "shared/check_pool.rs"]
mod check_pool;
use check_pool::{POOL, Sender, connect};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ANSWER: &str =
    r#"{"auth":"new-app-key:0c9a7a2c1e6f5b3d8e4a0f1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"}"#;
const CHECK_BODY: &str = r#"{"app":"new","kind":"channel","channel_name":"private-floor","socket_id":"1.1"}"#;

async fn check(addr: &str) -> Result<(bool, Sender), Box<dyn std::error::Error>> {
    let mut sender = match POOL.with(|p| p.borrow_mut().pop()) {
        Some(sender) => sender,
        None => connect(addr).await?,
    };
    let request = hyper::Request::post("/check")
        .header(hyper::header::HOST, addr)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(CHECK_BODY.as_bytes())))?;
    let response = sender.send_request(request).await?;
    let ok = response.status().is_success();
    response.into_body().collect().await?;
    Ok((ok, sender))
}

async fn auth(_form: Bytes, addr: web::Data<Option<String>>) -> HttpResponse {
    let Some(addr) = addr.as_ref() else {
        return HttpResponse::Ok().content_type("application/json").body(ANSWER);
    };
    match check(addr).await {
        Ok((ok, sender)) => {
            POOL.with(|p| p.borrow_mut().push(sender));
            if ok {
                HttpResponse::Ok().content_type("application/json").body(ANSWER)
            } else {
                HttpResponse::Forbidden().finish()
            }
        }
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

async fn client_config(answer: web::Data<Bytes>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("cache-control", "no-store"))
        .body(answer.get_ref().clone())
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() -> std::io::Result<()> {
    let port: u16 = var("PORT").and_then(|p| p.parse().ok()).expect("PORT: the port to listen on");
    let addr = var("CHECK"); // host:port answering POST /check; unset: no check
    let answer = Bytes::from(match var("CLIENT_CONFIG") {
        Some(path) => std::fs::read(path)?,
        None => b"{}".to_vec(),
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(addr.clone()))
            .app_data(web::Data::new(answer.clone()))
            // A prefix scope, as the service routes /auth: a `{app}` pattern runs a regex per request.
            .service(web::scope("/auth").default_service(web::to(auth)))
            .route("/client-config", web::get().to(client_config))
    });
    // Unset: actix-web's default, as the service's (one worker per core).
    if let Some(workers) = var("WORKERS").and_then(|w| w.parse().ok()) {
        server = server.workers(workers);
    }
    actix_web::rt::System::new().block_on(server.bind(("127.0.0.1", port))?.run())
}
