//! OpenTelemetry traces (`[telemetry]`): spans made with `tracing` under the
//! target `otel`, turned into OpenTelemetry spans by `tracing-opentelemetry`,
//! sampled (parent-based: a caller's decision stands, a trace started here is
//! sampled by `sample_ratio`) and, with `otlp_endpoint`, exported in batches
//! over OTLP/HTTP (protobuf) from a thread of their own.
//!
//! Off (no `[telemetry]`): `on()` is false, every span site makes
//! `Span::none()` after that one load, and the subscriber is the logging one
//! alone, as before.
//!
//! What a span carries is named at each site, never a header or a body: the
//! app, the kind of request, the outcome, a status. No secret, cookie, token
//! or signature.

use crate::config::TelemetrySettings;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{Bytes, HttpError, Request, Response};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use tracing::{Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::Targets,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

/// The `tracing` target of every span that becomes an OpenTelemetry span.
pub const TARGET: &str = "otel";

static ON: AtomicBool = AtomicBool::new(false);

/// Whether `[telemetry]` is on: the one thing a span site checks when it is off.
#[inline]
pub fn on() -> bool {
    ON.load(Relaxed)
}

/// Flushes and stops the exporter when dropped (at the end of `serve`).
pub struct Traces(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Traces {
    pub fn off() -> Self {
        Self(None)
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            // Bounded by the export timeout; nothing is waiting for requests then.
            let _ = provider.shutdown();
        }
    }
}

/// The subscriber with traces: the logs as `telemetry::init` makes them (each
/// JSON line inside a traced request with its `trace_id`), and the OpenTelemetry
/// layer, which sees only the `otel` spans.
pub(super) fn init<W>(
    settings: &TelemetrySettings,
    filter: EnvFilter,
    json: bool,
    writer: W,
    terminal: bool,
) -> Traces
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let provider = provider(settings);
    let tracer = provider.tracer("pusher-dual-auth");
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        // Nothing here reads OpenTelemetry's current context: spans find their
        // parent in the span tree, so entering one (each poll) attaches nothing.
        .with_context_activation(false)
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE));
    // The log layer never sees the `otel` spans: its JSON fields re-parse a span's
    // fields at each `record`, more than the tracing itself costs. The trace id
    // reaches the lines through `with_trace`.
    let filter = filter.add_directive(format!("{TARGET}=off").parse().expect("a directive"));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = if json {
        let format = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .event_format(WithTraceId(format))
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .compact()
            .with_ansi(terminal)
            .with_filter(filter)
            .boxed()
    };
    let installed = tracing_subscriber::registry().with(logs).with(otel).try_init().is_ok();
    ON.store(installed, Relaxed);
    Traces(Some(provider))
}

fn provider(settings: &TelemetrySettings) -> opentelemetry_sdk::trace::SdkTracerProvider {
    use opentelemetry::KeyValue;
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", settings.replica()),
        ])
        .build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
    let mut builder = SdkTracerProvider::builder().with_sampler(sampler).with_resource(resource);
    if let Some(endpoint) = &settings.otlp_endpoint {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.as_str())
            .with_timeout(settings.export_timeout)
            .with_http_client(Exporting::new(settings.export_timeout))
            .build();
        match exporter {
            Ok(exporter) => {
                // Bounded: a span that finds the queue full is dropped, never waited for.
                let batch = BatchConfigBuilder::default()
                    .with_max_queue_size(settings.max_queue_spans)
                    .with_max_export_batch_size(512.min(settings.max_queue_spans))
                    .with_scheduled_delay(Duration::from_secs(1))
                    .build();
                builder = builder.with_span_processor(
                    BatchSpanProcessor::builder(exporter).with_batch_config(batch).build(),
                );
            }
            // The endpoint was validated; a failure here is the exporter's own.
            Err(e) => eprintln!("telemetry: the OTLP exporter did not start: {e}"),
        }
    }
    builder.build()
}

/// The exporter's HTTP client: the service's reqwest client (rustls, no
/// proxy, no redirect), driven by a runtime on a thread of its own, so an
/// export never runs on a worker that answers requests.
#[derive(Debug)]
struct Exporting {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl Exporting {
    fn new(timeout: Duration) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                let runtime = runtime.expect("a current-thread runtime builds");
                let _ = tx.send(runtime.handle().clone());
                runtime.block_on(std::future::pending::<()>());
            })
            .expect("the export thread starts");
        let runtime = rx.recv().expect("the export thread sends its runtime");
        Self { client: crate::outbound::http_client(timeout), runtime }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Exporting {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let call = async move {
            let (head, body) = request.into_parts();
            let answer = client
                .request(head.method, head.uri.to_string())
                .headers(head.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            let (status, headers) = (answer.status(), answer.headers().clone());
            // A collector answers a few bytes (a partial-success message at most).
            let body = crate::outbound::read_capped(answer, 64 * 1024).await.map_err(|e| e.to_string())?;
            let mut response = Response::new(Bytes::from(body));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok::<_, String>(response)
        };
        match self.runtime.spawn(call).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(message)) => Err(message.into()),
            Err(e) => Err(Box::new(e)),
        }
    }
}

// ---- incoming and outgoing context --------------------------------------------------------

/// A request's headers as the propagator reads them.
struct Incoming<'a>(&'a actix_web::http::header::HeaderMap);

impl opentelemetry::propagation::Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let mut values = self.0.get_all(key);
        match (values.next(), values.next()) {
            // Two `traceparent`s are no trace context at all (W3C): a new trace.
            (Some(one), None) => one.to_str().ok(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Continues the caller's trace (`traceparent`, `tracestate`) on `span`, or
/// starts one.
pub fn continue_trace(span: &Span, headers: &actix_web::http::header::HeaderMap) {
    use opentelemetry::propagation::TextMapPropagator;
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Incoming(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// What an outgoing call sends so that the callee's spans join the trace.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// `traceparent` (and `tracestate`) naming `span`, the caller's side of an
/// outgoing call. Sent unsampled too (flags `00`): the callee can still log
/// the trace id, and it samples nothing either.
pub fn outgoing(span: &Span) -> Option<Outgoing> {
    if span.is_none() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return None;
    }
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    );
    let state = span_context.trace_state().header();
    Some(Outgoing { traceparent, tracestate: (!state.is_empty()).then_some(state) })
}

// ---- trace ids in the log lines -------------------------------------------------------------

/// The trace id of a request (32 lowercase hex digits).
#[derive(Clone, Copy)]
struct TraceId([u8; 32]);

/// The request being polled on this thread: its trace id (for the log lines),
/// its span's id (the parent of the spans it makes) and fields (to record on).
#[derive(Clone)]
struct Frame {
    trace_id: TraceId,
    span: tracing::span::Id,
    metadata: &'static tracing::Metadata<'static>,
}

thread_local! {
    /// The trace ids of the request spans this thread is in, innermost last.
    static CURRENT: std::cell::RefCell<Vec<Frame>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Pops the thread's trace id stack, also when a poll panics.
struct PopOnDrop;

impl Drop for PopOnDrop {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().pop());
    }
}

/// Runs the request's `future` with `span` as this thread's current request
/// while it is polled. The span is never entered: entering and leaving a span
/// at each poll (`Instrument`) cost a fifth of the tracing. Its children name
/// it as their parent (`parent`), the handlers record on it (`record`), and the
/// log lines find its trace id here (the log layer never sees the `otel`
/// spans: formatting their fields for it cost more than the tracing itself).
pub async fn with_trace<F: std::future::Future>(span: &Span, future: F) -> F::Output {
    use std::io::Write;
    let trace_id = span.context().span().span_context().trace_id();
    let mut hex = [0u8; 32];
    let (Some(id), Some(metadata), Ok(())) = (span.id(), span.metadata(), write!(&mut hex[..], "{trace_id}"))
    else {
        return future.await;
    };
    let frame = Frame { trace_id: TraceId(hex), span: id, metadata };
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        CURRENT.with(|c| c.borrow_mut().push(frame.clone()));
        let _pop = PopOnDrop;
        future.as_mut().poll(cx)
    })
    .await
}

/// The current request's span, as the parent of a span made for it (None
/// outside a traced request: a root).
pub fn parent() -> Option<tracing::span::Id> {
    CURRENT.with(|c| c.borrow().last().map(|f| f.span.clone()))
}

/// Records `values` (name, value) on the current request's span, at once.
pub fn record(values: [(&str, &str); 3]) {
    let Some(frame) = CURRENT.with(|c| c.borrow().last().cloned()) else { return };
    let fields = frame.metadata.fields();
    let mut found = values.map(|(name, _)| fields.field(name));
    if found.iter().any(Option::is_none) {
        return;
    }
    let [a, b, c] = std::array::from_fn(|i| found[i].take().expect("checked"));
    let [(_, va), (_, vb), (_, vc)] = values;
    let values = [
        (&a, Some(&va as &dyn tracing::Value)),
        (&b, Some(&vb as &dyn tracing::Value)),
        (&c, Some(&vc as &dyn tracing::Value)),
    ];
    let set = fields.value_set(&values);
    tracing::dispatcher::get_default(|d| d.record(&frame.span, &tracing::span::Record::new(&set)));
}

/// The JSON line, with `"trace_id"` first when it is written inside a traced request.
struct WithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some(TraceId(hex)) = CURRENT.with(|c| c.borrow().last().map(|f| f.trace_id)) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match (line.strip_prefix('{'), std::str::from_utf8(&hex)) {
            // Hex digits: nothing to escape.
            (Some(rest), Ok(trace_id)) => write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            _ => writer.write_str(&line),
        }
    }
}
