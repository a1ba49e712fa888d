//! The floors' way to the check (`floor_proxy.rs`, `protocol_floor.rs`): hyper's
//! HTTP/1 client over TCP with no delay, one kept-alive pool per worker thread,
//! as the service keeps one per worker.

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;

pub type Sender = SendRequest<Full<Bytes>>;

thread_local! {
    pub static POOL: RefCell<Vec<Sender>> = const { RefCell::new(Vec::new()) };
}

pub async fn connect(addr: &str) -> std::io::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    actix_web::rt::spawn(connection);
    Ok(sender)
}
