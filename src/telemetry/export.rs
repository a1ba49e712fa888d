//! The span exporter: a thread of its own (`otlp-export`) with its own runtime,
//! never a worker that answers requests. It sends each thread's batch of
//! ended spans (`batches`) when the batch is full, and every thread's at least
//! once a second and at shutdown, as one OTLP/HTTP protobuf body
//! (`otlp_body::export_request`) POSTed to `otlp_endpoint` by the service's
//! reqwest client. What opentelemetry-otlp's HTTP exporter does around the
//! body is kept: `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (or
//! `OTEL_EXPORTER_OTLP_HEADERS`) as request headers, and a retry, within the
//! export timeout, of what a collector says is passing (429, 502, 503, 504,
//! `Retry-After` heeded) or a connection that failed.

use super::batches::{Batch, Batches};
use super::otlp_body::{Envelope, export_request};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The running exporter, as the rest of the service holds it.
pub struct Exporter {
    pub batches: Arc<Batches>,
    flush: UnboundedSender<std::sync::mpsc::SyncSender<()>>,
    timeout: Duration,
}

/// Where and how the exporter sends.
struct Sender {
    client: reqwest::Client,
    endpoint: url::Url,
    headers: HeaderMap,
    timeout: Duration,
    envelope: Envelope,
    /// Whether the last export failed (its failure is logged once, and its end).
    failing: bool,
}

impl Exporter {
    pub fn start(
        endpoint: url::Url,
        timeout: Duration,
        envelope: Envelope,
        (max_queue, max_batch): (usize, usize),
        every: Duration,
    ) -> Self {
        let (batches, full) = Batches::new(max_queue, max_batch);
        let (flush, flushes) = unbounded_channel();
        let variable = ["OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"]
            .into_iter()
            .find_map(|name| std::env::var(name).ok());
        let mut headers = variable.as_deref().map(headers_from_env).unwrap_or_default();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        let sender = Sender {
            client: crate::outbound::http_client(timeout),
            endpoint,
            headers,
            timeout,
            envelope,
            failing: false,
        };
        let shared = batches.clone();
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                let runtime = runtime.expect("a current-thread runtime builds");
                runtime.block_on(run(sender, shared, full, flushes, every));
            })
            .expect("the export thread starts");
        Self { batches, flush, timeout }
    }

    /// Sends what waits (bounded by twice the export timeout; at shutdown, when no request is waiting).
    pub fn flush(&self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if self.flush.send(done).is_ok() {
            // An export already under way may take its whole timeout, then the flush's own.
            let _ = wait.recv_timeout(self.timeout * 2 + Duration::from_secs(1));
        }
    }
}

/// The export thread: a full batch as it comes, every thread's batch each `every`
/// and when asked to flush, one export at a time (what waits meanwhile is bounded by `max_queue`).
async fn run(
    mut sender: Sender,
    batches: Arc<Batches>,
    mut full: UnboundedReceiver<Batch>,
    mut flushes: UnboundedReceiver<std::sync::mpsc::SyncSender<()>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let done = tokio::select! {
            Some(batch) = full.recv() => {
                sender.send(&batches, vec![batch]).await;
                continue;
            }
            done = flushes.recv() => match done {
                Some(done) => Some(done),
                None => return,
            },
            _ = tick.tick() => None,
        };
        // Full batches handed over before a flush was asked are sent first.
        while let Ok(batch) = full.try_recv() {
            sender.send(&batches, vec![batch]).await;
        }
        sender.send(&batches, batches.sweep()).await;
        let dropped = batches.take_dropped();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "telemetry: spans dropped, more were waiting for export than max_queue_spans"
            );
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

impl Sender {
    /// `parts` in bodies of at most `max_batch` spans each.
    async fn send(&mut self, batches: &Batches, parts: Vec<Batch>) {
        let mut parts = parts.into_iter().peekable();
        while parts.peek().is_some() {
            let mut body: Vec<Batch> = Vec::new();
            let mut spans = 0;
            while let Some(next) =
                parts.next_if(|p| body.is_empty() || spans + p.spans <= batches.max_batch())
            {
                spans += next.spans;
                body.push(next);
            }
            let slices: Vec<&[u8]> = body.iter().map(|b| b.bytes.as_slice()).collect();
            let request = bytes::Bytes::from(export_request(&self.envelope, &slices));
            drop(body);
            let sent = post(&self.client, &self.endpoint, &self.headers, request, self.timeout).await;
            batches.sent(spans);
            match sent {
                Ok(()) if self.failing => {
                    self.failing = false;
                    tracing::info!("telemetry: spans are exported again");
                }
                Err(error) if !self.failing => {
                    self.failing = true;
                    tracing::warn!(%error, spans, "telemetry: an export failed, its spans are lost (logged once until one succeeds)");
                }
                _ => {}
            }
        }
    }
}

/// One export: sent, and sent again while the collector says it is passing and time remains.
async fn post(
    client: &reqwest::Client,
    url: &url::Url,
    headers: &HeaderMap,
    body: bytes::Bytes,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let sent = client.post(url.clone()).headers(headers.clone()).body(body.clone()).send().await;
        let (failure, retry_after) = match sent {
            Ok(answer) if answer.status().is_success() => {
                // A collector answers a few bytes (a partial-success message at most); read, so the connection is kept.
                let _ = crate::outbound::read_capped(answer, 64 * 1024).await;
                return Ok(());
            }
            Ok(answer) => {
                let status = answer.status();
                if !matches!(status.as_u16(), 429 | 502 | 503 | 504) {
                    return Err(format!("the collector answered {status}"));
                }
                let after =
                    answer.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()?.trim().parse().ok());
                (format!("the collector answered {status}"), after.map(Duration::from_secs))
            }
            Err(e) => (e.without_url().to_string(), None),
        };
        let wait = retry_after.unwrap_or(delay.mul_f64(0.5 + fastrand::f64() / 2.0));
        // Compared as what is left: a collector's Retry-After may be any number (no Instant overflow).
        if wait >= deadline.saturating_duration_since(Instant::now()) {
            return Err(failure);
        }
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(Duration::from_millis(1600));
    }
}

/// `key1=value1,key2=value2`, values URL-decoded (the OTLP exporter
/// specification); a pair that is not a valid header is left out, named on
/// stderr by its key alone (a value may be a token).
fn headers_from_env(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else { continue };
        let (key, value) = (key.trim(), value.trim());
        let decoded = percent_encoding::percent_decode_str(value).decode_utf8().map_or(value.into(), |v| v);
        match (HeaderName::try_from(key), HeaderValue::try_from(decoded.as_ref())) {
            (Ok(name), Ok(value)) if !value.is_empty() => {
                headers.append(name, value);
            }
            _ => eprintln!(
                "telemetry: OTEL_EXPORTER_OTLP_HEADERS: {key:?} is not a header this exporter can send"
            ),
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_retry_after_past_any_deadline_ends_the_export_not_the_thread() {
        use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "18446744073709551615"))
            .mount(&server)
            .await;
        let url: url::Url = server.uri().parse().unwrap();
        let client = crate::outbound::http_client(Duration::from_secs(1));
        let sent = tokio::spawn(async move {
            post(&client, &url, &HeaderMap::new(), bytes::Bytes::new(), Duration::from_secs(1)).await
        })
        .await
        .expect("no panic");
        assert_eq!(sent, Err("the collector answered 429 Too Many Requests".to_owned()));
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "not waited for, not sent again");
    }

    #[test]
    fn headers_from_the_environment_are_url_decoded_and_bad_pairs_left_out() {
        let h = headers_from_env(" api-key = a%20b%2Cc ,x-tenant=t1,,novalue=,=v,bad name=1,plain");
        assert_eq!(h.get("api-key").unwrap(), "a b,c");
        assert_eq!(h.get("x-tenant").unwrap(), "t1");
        assert_eq!(h.len(), 2, "{h:?}");
    }
}
