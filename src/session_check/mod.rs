//! The HTTP client that asks the host app "who is this, and may they join?".
//!
//! Fail-closed by construction: redirects are never followed, every call has a
//! connect and a total timeout, the answer body is capped, and anything but a
//! 2xx with a valid JSON object (or a plain 401/403 denial) is an error.

mod headers;
mod http1_pool;
mod response;
mod shared;
mod tie;
mod tls;

pub use headers::{ForwardedHeaders, HeaderError, client_ip, forwarded_headers, is_trusted};
pub use http1_pool::Answer;
pub use response::{HostAnswer, HostError, HostIdentity, interpret};
pub use shared::{CachePolicy, SharedChecks, Source};

use crate::config::SessionCheckSettings;
use opentelemetry::trace::SpanKind;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Channel,
    User,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Channel => "channel",
            Self::User => "user",
        }
    }
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

pub struct SessionCheckClient {
    /// HTTP/1.1 with a keep-alive pool per worker thread, TLS for `https://`.
    http: http1_pool::Http1Pool,
    settings: SessionCheckSettings,
    shared: SharedChecks,
    /// Bounds the host calls in flight, in all and per client
    /// (`max_in_flight`, `max_in_flight_per_client`).
    permits: crate::fair_share::FairShare,
}

impl SessionCheckClient {
    pub fn new(settings: &SessionCheckSettings) -> anyhow::Result<Self> {
        let http = http1_pool::Http1Pool::new(
            &settings.url,
            settings.unix_socket.as_ref(),
            settings.connect_timeout,
            settings.require_check_id,
        )?;
        Ok(Self {
            http,
            settings: settings.clone(),
            shared: SharedChecks::new(settings.cache),
            permits: crate::fair_share::FairShare::new(
                settings.max_in_flight,
                settings.max_in_flight_per_client,
            ),
        })
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
    /// pusher-js lets the app retry. (A check sent on a kept-alive connection the
    /// host closed before answering is sent once on a new one, within the same
    /// timeout: `http1_pool`.)
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
        let mut body = Vec::with_capacity(256); // about 120 bytes without params
        serde_json::to_writer(&mut body, request).expect("check request serializes");
        if crate::telemetry::traces::on() {
            // Boxed: an untraced check's future carries none of it.
            return Box::pin(self.check_traced(request, body, headers)).await;
        }
        let answer = self.exchange(body, headers).await?;
        interpret(answer.status, &answer.body)
    }

    /// A check in a child span of the request's, whose context goes to the host
    /// as `traceparent`: the host's own spans join the trace under this one.
    async fn check_traced(
        &self,
        request: &CheckRequest<'_>,
        body: Vec<u8>,
        headers: &ForwardedHeaders,
    ) -> Result<HostAnswer, HostError> {
        // The request's child (its attributes made only if it is sampled).
        let mut span = crate::telemetry::traces::Span::child("session_check", SpanKind::Client, |a| {
            a.add("app", request.app);
            a.add("kind", request.kind.as_str());
        });
        let trace = span.outgoing();
        let result = async {
            let answer = self.exchange_with(body, headers, trace.as_ref()).await?;
            span.set("http.response.status_code", || i64::from(answer.status));
            interpret(answer.status, &answer.body)
        }
        .await;
        let outcome = match &result {
            Ok(HostAnswer::Allowed(_)) => "allowed",
            Ok(HostAnswer::Denied) => "denied",
            Err(HostError::Timeout) => "timeout",
            Err(HostError::Connect(_)) => "connect_error",
            Err(HostError::Status(_)) => "status",
            Err(_) => "error",
        };
        span.set("outcome", || outcome);
        result
    }

    /// POSTs `body` to the host as a check does (same transport, timeouts, cap and
    /// headers) and returns its status, with the body of a 2xx. doctor's probe uses
    /// it directly, so it reaches the host exactly as the service does.
    pub async fn exchange(&self, body: Vec<u8>, headers: &ForwardedHeaders) -> Result<Answer, HostError> {
        self.exchange_with(body, headers, None).await
    }

    /// `exchange`, with the `traceparent` (and `tracestate`) of the check's span.
    async fn exchange_with(
        &self,
        body: Vec<u8>,
        headers: &ForwardedHeaders,
        trace: Option<&crate::telemetry::traces::Outgoing>,
    ) -> Result<Answer, HostError> {
        let exchange = self.http.post(body, headers, self.settings.max_response_bytes, trace);
        tokio::time::timeout(self.settings.timeout, exchange).await.map_err(|_| HostError::Timeout)?
    }
}
