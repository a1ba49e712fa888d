//! The HTTP client that asks the host app "who is this, and may they join?".
//!
//! Fail-closed by construction: redirects are never followed, every call has a
//! connect and a total timeout, the answer body is capped, and anything but a
//! 2xx with a valid JSON object (or a plain 401/403 denial) is an error.

mod headers;
mod http1_pool;
mod response;
mod shared;

pub use headers::{ForwardedHeaders, HeaderError, client_ip, forwarded_headers, is_trusted};
pub use http1_pool::Answer;
pub use response::{HostAnswer, HostError, HostIdentity, interpret};
pub use shared::{CachePolicy, SharedChecks, Source};

use crate::config::SessionCheckSettings;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Channel,
    User,
}

/// The JSON body POSTed to `session_check.url`.
#[derive(Debug, serde::Serialize)]
pub struct CheckRequest<'a> {
    pub app: &'a str,
    pub kind: CheckKind,
    pub socket_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_name: Option<&'a str>,
    pub params: &'a Map<String, Value>,
}

/// How checks reach the host: `http://` and Unix sockets through the lean
/// HTTP/1.1 pool, `https://` through reqwest (rustls, the platform's roots).
enum Transport {
    Http1(http1_pool::Http1Pool),
    /// One client (and so one keep-alive pool) per worker thread: a pooled
    /// connection's task then lives on the runtime that uses it, instead of
    /// waking another worker's thread for every request.
    Reqwest(thread_local::ThreadLocal<reqwest::Client>),
}

pub struct SessionCheckClient {
    transport: Transport,
    settings: SessionCheckSettings,
    url: url::Url,
    max_response_bytes: usize,
    shared: SharedChecks,
    /// Bounds the host calls in flight, in all and per client
    /// (`max_in_flight`, `max_in_flight_per_client`).
    permits: crate::fair_share::FairShare,
}

impl SessionCheckClient {
    pub fn new(settings: &SessionCheckSettings) -> anyhow::Result<Self> {
        // rustls needs one process-wide crypto provider; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let transport = if settings.url.scheme() == "http" {
            Transport::Http1(http1_pool::Http1Pool::new(
                &settings.url,
                settings.unix_socket.as_ref(),
                settings.connect_timeout,
            )?)
        } else {
            let first = Self::build_http(settings)?; // fail at start, not on the first request
            let http = thread_local::ThreadLocal::new();
            let _ = http.get_or(|| first);
            Transport::Reqwest(http)
        };
        Ok(Self {
            transport,
            settings: settings.clone(),
            url: settings.url.clone(),
            max_response_bytes: settings.max_response_bytes,
            shared: SharedChecks::new(settings.cache),
            permits: crate::fair_share::FairShare::new(
                settings.max_in_flight,
                settings.max_in_flight_per_client,
            ),
        })
    }

    fn build_http(settings: &SessionCheckSettings) -> reqwest::Result<reqwest::Client> {
        let builder = crate::outbound::client_builder(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true);
        match &settings.unix_socket {
            // The same client otherwise: timeouts, no redirects, the capped read, the header allowlist.
            Some(path) => builder.unix_socket(path.as_path()).build(),
            None => builder.build(),
        }
    }

    /// Distinct checks in flight right now (coalescing entries).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// A session check through the storm protection (coalescing, optional cache)
    /// for `client` (who is charged a slot of the in-flight cap if a call is made).
    pub async fn check_shared(
        &self,
        request: &CheckRequest<'_>,
        headers: &ForwardedHeaders,
        client: std::net::IpAddr,
    ) -> (Result<HostAnswer, HostError>, Source) {
        self.shared
            .run(shared::key(request, headers, self.settings.cache.across_addresses), || {
                self.check(request, headers, client)
            })
            .await
    }

    /// One session check. Never retried after an answer, nor after a timeout: a
    /// retry would double the host's load exactly when it is struggling, and
    /// pusher-js lets the app retry. (Over `http://`, a check sent on a kept-alive
    /// connection the host closed before answering is sent once on a new one,
    /// within the same timeout: `http1_pool`.)
    pub async fn check(
        &self,
        request: &CheckRequest<'_>,
        headers: &ForwardedHeaders,
        client: std::net::IpAddr,
    ) -> Result<HostAnswer, HostError> {
        // Refused at once past the cap: a flood (or a host that stopped answering)
        // cannot pile up host connections and memory behind it, and past the
        // client's share, so one source cannot take the cap from everyone else.
        // Held until the answer is read or the request is dropped.
        use crate::fair_share::Refused;
        let _slot = self.permits.try_acquire(client).map_err(|refused| match refused {
            Refused::Full => HostError::Busy(self.permits.total()),
            Refused::ClientShare => HostError::ClientBusy(self.permits.per_client()),
        })?;
        let body = serde_json::to_vec(request).expect("check request serializes");
        let answer = self.exchange(body, headers).await?;
        interpret(answer.status, &answer.body)
    }

    /// POSTs `body` to the host as a check does (same transport, timeouts, cap and
    /// headers) and returns its status, with the body of a 2xx. doctor's probe uses
    /// it directly, so it reaches the host exactly as the service does.
    pub async fn exchange(&self, body: Vec<u8>, headers: &ForwardedHeaders) -> Result<Answer, HostError> {
        let http = match &self.transport {
            Transport::Http1(pool) => {
                let exchange = pool.post(body, headers, self.max_response_bytes);
                return tokio::time::timeout(self.settings.timeout, exchange)
                    .await
                    .map_err(|_| HostError::Timeout)?;
            }
            // The builder only fails on TLS setup, which `new` already did once.
            Transport::Reqwest(http) => {
                http.get_or(|| Self::build_http(&self.settings).expect("client built at start"))
            }
        };
        let mut builder = http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body);
        for (name, value) in headers.iter() {
            let value = reqwest::header::HeaderValue::from_bytes(value)
                .map_err(|_| HostError::Transport("unforwardable header value".into()))?;
            builder = builder.header(name, value);
        }
        let mut response = builder.send().await.map_err(HostError::from_reqwest)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            // 401/403 deny; anything else is an error. The body is not needed.
            return Ok(Answer { status, body: Vec::new() });
        }
        if response.content_length().is_some_and(|len| len > self.max_response_bytes as u64) {
            return Err(HostError::BodyTooLarge(self.max_response_bytes));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(HostError::from_reqwest)? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(HostError::BodyTooLarge(self.max_response_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, body })
    }
}
