//! The session check's HTTP/1.1 client, for `http://` and `https://` URLs (over
//! TCP or `session_check.unix_socket`): hyper's connection API with a keep-alive
//! pool per worker thread, and rustls with the platform's roots for `https://`.
//!
//! Why not reqwest here (it serves the REST and webhook calls): per check it
//! re-parsed the URL (with IDNA) and went through a generic pool and a layer
//! of boxed services, about a quarter of the CPU of an authorization
//! (`bench/load.py`, docs/performance.md). Here the request line and Host are
//! built once, a check takes the most recently used idle connection of its
//! own thread (no lock contention, no cross-thread wake-up), and nothing else
//! changes: one total timeout and a connect timeout, never a redirect (a 3xx
//! is an answer), the capped read, the same headers.
//!
//! A connection is kept for the next check only after an answer tied to its
//! check by the `X-Check-Id` echo (`tie`); a host that does not echo gets a
//! new connection per check, asked to close it (TIME_WAIT stays on its side).

use super::tie::{Tie, X_CHECK_ID, check_id, tie};
use super::tls::Tls;
use super::{ForwardedHeaders, HostError};
use crate::telemetry::traces::Outgoing;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

type Sender = SendRequest<Full<Bytes>>;

/// An idle connection is closed after this long unused (as reqwest's pool did).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per worker thread.
const MAX_IDLE_PER_THREAD: usize = 256;
/// The largest answer head (status line and headers) taken, and the most a
/// connection's read buffer grows to. hyper's default buffer is ~400 KiB, which
/// 1,024 checks in flight to a broken host would make 400 MiB; an identity's
/// headers need a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;

enum Target {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

struct Idle {
    sender: Sender,
    since: Instant,
}

pub struct Http1Pool {
    target: Target,
    tls: Option<Tls>,
    /// Origin form: the URL's path and query.
    uri: hyper::Uri,
    host: HeaderValue,
    /// `Authorization: Basic` from the URL's userinfo (`http://user:pass@host/…`),
    /// as reqwest sent it for this client before; marked sensitive.
    basic: Option<HeaderValue>,
    connect_timeout: Duration,
    /// `session_check.require_check_id`: every answer must echo `X-Check-Id`.
    require_echo: bool,
    /// Whether the host's last answer echoed `X-Check-Id`. Until it does, each
    /// check asks the host to close the connection after answering.
    echoes: AtomicBool,
    /// The "host does not echo" warning, once per pool (a reload builds a new one).
    warned: AtomicBool,
    idle: thread_local::ThreadLocal<Mutex<Vec<Idle>>>,
}

/// A status and, for a 2xx, the body (read whole, at most the cap).
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// It echoed the check's `X-Check-Id` (so connections are kept alive).
    pub echoed: bool,
}

fn transport(e: impl std::error::Error) -> HostError {
    // The innermost cause is the useful part ("connection closed before message completed", ...).
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    HostError::Transport(cause.to_string())
}

impl Http1Pool {
    /// A pool for `url` (`http://` or `https://`), over `unix_socket` when given.
    pub fn new(
        url: &url::Url,
        unix_socket: Option<&PathBuf>,
        connect_timeout: Duration,
        require_echo: bool,
    ) -> anyhow::Result<Self> {
        let tls = match url.scheme() {
            "http" => None,
            "https" => Some(Tls::for_url(url)?),
            other => anyhow::bail!("session_check.url: {other}:// is not http:// or https://"),
        };
        let host_str = url.host_str().ok_or_else(|| anyhow::anyhow!("session_check.url has no host"))?;
        let host = match url.port() {
            Some(port) => format!("{host_str}:{port}"),
            None => host_str.to_owned(),
        };
        let target = match unix_socket {
            Some(path) => Target::Unix(path.clone()),
            None => Target::Tcp {
                // Without IPv6 brackets, as a socket address wants it.
                host: match url.host() {
                    Some(url::Host::Ipv6(ip)) => ip.to_string(),
                    _ => host_str.to_owned(),
                },
                port: url.port_or_known_default().unwrap_or(80),
            },
        };
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        Ok(Self {
            target,
            tls,
            uri: path_and_query.parse()?,
            host: HeaderValue::from_str(&host)?,
            basic: basic_auth(url)?,
            connect_timeout,
            require_echo,
            echoes: AtomicBool::new(true),
            warned: AtomicBool::new(false),
            idle: thread_local::ThreadLocal::new(),
        })
    }

    /// The check request: `body` with the forwarded headers, plus Host,
    /// Content-Type, Accept, User-Agent and `X-Check-Id` (and `Connection: close`
    /// while the host does not echo it), and with `[telemetry]` the check's own
    /// span as `traceparent` (never the browser's: `forward_headers` refuses it).
    fn request(
        &self,
        body: Bytes,
        forwarded: &ForwardedHeaders,
        id: &HeaderValue,
        trace: Option<&Outgoing>,
    ) -> Result<hyper::Request<Full<Bytes>>, HostError> {
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = self.uri.clone();
        // Room for all of them at once: growing the map past 8 rehashes it.
        *request.headers_mut() = hyper::HeaderMap::with_capacity(16);
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(crate::outbound::USER_AGENT));
        headers.insert(X_CHECK_ID, id.clone());
        if !self.echoes.load(Relaxed) {
            headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(basic) = &self.basic {
            headers.insert(AUTHORIZATION, basic.clone());
        }
        if let Some(trace) = trace {
            let value =
                |v: &str| HeaderValue::from_str(v).map_err(|_| HostError::Transport("trace context".into()));
            headers.insert(HeaderName::from_static("traceparent"), value(&trace.traceparent)?);
            if let Some(state) = &trace.tracestate {
                headers.insert(HeaderName::from_static("tracestate"), value(state)?);
            }
        }
        for (name, value) in forwarded.iter() {
            let value = HeaderValue::from_bytes(value)
                .map_err(|_| HostError::Transport("unforwardable header value".into()))?;
            headers.append(name.clone(), value);
        }
        Ok(request)
    }

    /// POSTs `body` with the `forwarded` headers and reads a 2xx answer's body up
    /// to `max_body` bytes. The caller bounds the whole exchange in time (a second
    /// attempt included); dropping it mid-way closes that connection.
    pub async fn post(
        &self,
        body: Vec<u8>,
        forwarded: &ForwardedHeaders,
        max_body: usize,
        trace: Option<&Outgoing>,
    ) -> Result<Answer, HostError> {
        let body = Bytes::from(body);
        let id = check_id();
        let request = self.request(body.clone(), forwarded, &id, trace)?;
        let mut reused = false;
        let (sender, response) = match self.checkout().await {
            Some(mut sender) => match sender.try_send_request(request).await {
                Ok(response) => {
                    reused = true;
                    (sender, response)
                }
                Err(mut e) => match e.take_message() {
                    // A kept-alive connection the host closed before this request
                    // went out: nothing was sent, so it goes out on a new connection.
                    Some(request) => self.send_on_new(request).await?,
                    // It went out, and the host closed (or reset) that kept-alive
                    // connection before a complete answer head: its idle timeout
                    // fired as the check arrived (Node's is 5 s, ours 60). A check
                    // is a question, so it is asked once more on a new connection,
                    // as curl does; never after a complete head, never twice, and
                    // never when the connection was new.
                    None if closed_unanswered(e.error()) => {
                        self.send_on_new(self.request(body.clone(), forwarded, &id, trace)?).await?
                    }
                    None => return Err(transport(e.into_error())),
                },
            },
            None => self.send_on_new(request).await?,
        };
        // A 408 without the echo on a kept-alive connection is the host timing it
        // out before this check (it took none of it): asked once more, as above.
        let (sender, response) = if reused
            && response.status() == hyper::StatusCode::REQUEST_TIMEOUT
            && tie(response.headers(), &id) == Tie::Absent
        {
            drop((sender, response));
            reused = false;
            self.send_on_new(self.request(body, forwarded, &id, trace)?).await?
        } else {
            (sender, response)
        };

        let status = response.status().as_u16();
        let success = (200..300).contains(&status);
        // Returning early drops `sender` and the body: that connection closes.
        let keep = match tie(response.headers(), &id) {
            Tie::Echoed => {
                // Written only on a change: every worker reads it on every check.
                if !self.echoes.load(Relaxed) {
                    self.echoes.store(true, Relaxed);
                }
                true
            }
            Tie::Other => return Err(HostError::Unmatched("it echoed another check's X-Check-Id")),
            Tie::Absent if self.require_echo => {
                return Err(HostError::Unmatched(
                    "it did not echo X-Check-Id (session_check.require_check_id)",
                ));
            }
            // On a reused connection the host has echoed before: an answer without
            // the echo may be a stray copy, a 2xx of another user or a denial
            // that would refuse (and, cached, keep refusing) this one.
            Tie::Absent if reused => {
                return Err(HostError::Unmatched(
                    "an answer on a kept-alive connection did not echo X-Check-Id",
                ));
            }
            Tie::Absent => {
                self.not_echoed();
                false
            }
        };
        let mut body = response.into_body();
        if !success {
            // 401/403 deny, anything else is an error: decided by the status alone,
            // never held up by a slow body. A body already here is read, so the
            // connection carries the next check; otherwise it closes with `sender`.
            if keep && drained_now(&mut body, max_body) {
                self.checkin(sender);
            }
            return Ok(Answer { status, body: Vec::new(), echoed: keep });
        }
        let declared = body.size_hint().exact();
        if declared.is_some_and(|len| len > max_body as u64) {
            return Err(HostError::BodyTooLarge(max_body)); // not read: closes with `sender`
        }
        let mut read = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(transport)?.into_data() {
                if read.len() + data.len() > max_body {
                    return Err(HostError::BodyTooLarge(max_body));
                }
                read.extend_from_slice(&data);
            }
        }
        // A body may carry the id too (`"check_id"`): then it must be this check's,
        // which ties the body as the header ties the head.
        if body_check_id(&read).is_some_and(|echoed| echoed.as_bytes() != id.as_bytes()) {
            return Err(HostError::Unmatched("its body carries another check's check_id"));
        }
        // Read to the end: a tied answer's connection can carry the next check.
        if keep {
            self.checkin(sender);
        }
        Ok(Answer { status, body: read, echoed: keep })
    }

    /// The host did not echo `X-Check-Id`: later checks ask it to close each
    /// connection, and the operator is told once why there is no keep-alive.
    fn not_echoed(&self) {
        self.echoes.store(false, Relaxed);
        if !self.warned.swap(true, Relaxed) {
            tracing::warn!(
                "the session check does not echo X-Check-Id: each check opens a new connection, and an answer \
                 is tied to its check only if no proxy between pools connections (echo it from the application, \
                 then set session_check.require_check_id; see docs/session-check.md)"
            );
        }
    }

    fn idle(&self) -> &Mutex<Vec<Idle>> {
        self.idle.get_or_default()
    }

    /// The most recently used idle connection of this thread that is still open.
    async fn checkout(&self) -> Option<Sender> {
        loop {
            let Idle { mut sender, since } = self.idle().lock().unwrap().pop()?;
            if since.elapsed() >= IDLE_TIMEOUT || sender.is_closed() {
                continue; // dropped: its connection task ends
            }
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, sender: Sender) {
        let now = Instant::now();
        let mut idle = self.idle().lock().unwrap();
        // Oldest first: the ones unused for IDLE_TIMEOUT go.
        let expired = idle.iter().take_while(|i| now.duration_since(i.since) >= IDLE_TIMEOUT).count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE_PER_THREAD {
            idle.push(Idle { sender, since: now });
        }
    }

    async fn send_on_new(
        &self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(Sender, hyper::Response<hyper::body::Incoming>), HostError> {
        // Boxed: connecting (with TLS) is ~3.5 KiB of future state. Inline, every
        // check's future would carry it, and move it through each await above,
        // though a check on a kept-alive connection never connects.
        let mut sender = Box::pin(self.connect()).await?;
        let response = sender.send_request(request).await.map_err(transport)?;
        Ok((sender, response))
    }

    async fn connect(&self) -> Result<Sender, HostError> {
        let connected = tokio::time::timeout(self.connect_timeout, async {
            match &self.target {
                Target::Tcp { host, port } => {
                    let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    stream.set_nodelay(true)?;
                    self.open(stream).await
                }
                Target::Unix(path) => self.open(tokio::net::UnixStream::connect(path).await?).await,
            }
        })
        .await;
        match connected {
            Err(_) => Err(HostError::Timeout),
            Ok(Err(e)) => Err(HostError::Connect(e.to_string())),
            Ok(Ok(handshake)) => handshake.map_err(transport),
        }
    }

    /// HTTP/1.1 on `io`, inside TLS for `https://` (the handshake is part of connecting).
    async fn open<T>(&self, io: T) -> std::io::Result<Result<Sender, hyper::Error>>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Ok(match &self.tls {
            None => start(io).await,
            Some(tls) => start(tls.connector.connect(tls.name.clone(), io).await?).await,
        })
    }
}

/// `Basic base64(user:password)` when `url` has userinfo (percent-decoded).
fn basic_auth(url: &url::Url) -> anyhow::Result<Option<HeaderValue>> {
    use base64::Engine;
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().map(|c| c.into_owned());
    let user = decode(url.username())?;
    let password = url.password().map(decode).transpose()?.unwrap_or_default();
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// The `check_id` of a JSON object body, if it has one (looked for only when
/// the bytes name it, so hosts that do not send it pay nothing).
fn body_check_id(body: &[u8]) -> Option<String> {
    // Built once: `memmem::find` builds its searcher on every call.
    static NAME: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"check_id\""));
    NAME.find(body)?;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.get("check_id") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
        None => None,
    }
}

/// Whether the host closed (or reset) the connection before an answer's head.
fn closed_unanswered(e: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    let io_kind = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    e.is_incomplete_message() || matches!(io_kind, Some(ConnectionReset | BrokenPipe | ConnectionAborted))
}

/// Whether `body` (at most `max` bytes) was read to its end without waiting.
fn drained_now(body: &mut hyper::body::Incoming, max: usize) -> bool {
    use futures_util::FutureExt;
    let mut seen = 0;
    loop {
        match body.frame().now_or_never() {
            Some(None) => return true,
            Some(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > max {
                    return false;
                }
            }
            Some(Some(Err(_))) | None => return false,
        }
    }
}

/// Starts HTTP/1.1 on `io`; the connection runs as a task of the current runtime
/// until the host closes it or its sender is dropped.
async fn start<T>(io: T) -> Result<Sender, hyper::Error>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_header_size(MAX_HEAD)
        .max_buf_size(MAX_HEAD)
        .handshake(hyper_util::rt::TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        // A connection error surfaces on the request that was using it.
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every check's future is moved through each await above it (the handler's,
    /// the storm protection's, the timeout's) and boxed per request by actix-web,
    /// so connect-only state (TCP, TLS handshake) inside it costs every check.
    #[test]
    fn a_checks_future_does_not_carry_the_connect_state() {
        let url = url::Url::parse("https://host.example/check").unwrap();
        let pool = Http1Pool::new(&url, None, Duration::from_secs(1), false).unwrap();
        let forwarded = ForwardedHeaders::default();
        let post = pool.post(Vec::new(), &forwarded, 1024, None);
        let connect = pool.connect();
        assert!(std::mem::size_of_val(&post) < std::mem::size_of_val(&connect));
    }
}
