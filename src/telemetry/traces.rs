//! OpenTelemetry traces (`[telemetry]`): whether a trace is sampled is decided
//! before any span is made. A trace that is not sampled (started here and left
//! out by `sample_ratio`, or a caller's with flags `00`) costs its ids and the
//! `traceparent` sent on: no span, nothing recorded. A sampled one's spans are
//! recorded here (`Open`, its attributes written as protobuf as they are set)
//! and, as each ends, written whole into its thread's batch (`batches`),
//! exported over OTLP/HTTP from a thread of its own (`export`).
//! (Spans through `tracing` and `tracing-opentelemetry` cost ~29k instructions
//! an authorization even when nothing was sampled: docs/performance.md.)
//!
//! Off (no `[telemetry]`): `on()` is false, every span site stops at that one
//! load, and the subscriber is the logging one alone, as before.
//!
//! What a span carries is named at each site, never a header or a body: the
//! app, the kind of request, the outcome, a status. No secret, cookie, token
//! or signature.

use super::export::Exporter;
use super::otlp_body::{self, AnyValue, EndedSpan};
use crate::config::TelemetrySettings;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use std::borrow::Cow;
use std::sync::{
    Arc, Mutex, OnceLock,
    atomic::{AtomicBool, Ordering::Relaxed},
};
use std::time::{Duration, SystemTime};
use tracing::Subscriber;
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// Where ended spans go, and the ratio of the traces started here that are sampled.
struct Tracing {
    /// The exporter (bounded batches, export thread); None without
    /// `otlp_endpoint` (sampled traces are continued, nothing is recorded).
    exporter: Option<Exporter>,
    ratio: f64,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

static ON: AtomicBool = AtomicBool::new(false);

/// Whether `[telemetry]` is on: the one thing a span site checks when it is off.
#[inline]
pub fn on() -> bool {
    ON.load(Relaxed)
}

/// Flushes and stops the exporter when dropped (at the end of `serve`).
pub struct Traces(bool);

impl Traces {
    pub fn off() -> Self {
        Self(false)
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let (true, Some(Tracing { exporter: Some(exporter), .. })) = (self.0, TRACING.get()) {
            // Bounded by twice the export timeout; nothing is waiting for requests then.
            exporter.flush();
        }
    }
}

/// The subscriber with traces: the logs as `telemetry::init` makes them, each
/// line written inside a request with its `trace_id` (`with_trace`).
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
    let exporter = exporter(settings);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let installed = if json {
        let format = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        builder.json().event_format(WithTraceId(format)).try_init().is_ok()
    } else {
        builder
            .compact()
            .with_ansi(terminal)
            .event_format(WithTraceId(tracing_subscriber::fmt::format().compact().with_ansi(terminal)))
            .try_init()
            .is_ok()
    };
    if installed {
        let _ = TRACING.set(Tracing { exporter, ratio: settings.sample_ratio });
        ON.store(true, Relaxed);
    }
    Traces(installed)
}

/// The exporter for `otlp_endpoint`, told the resource (who sends).
fn exporter(settings: &TelemetrySettings) -> Option<Exporter> {
    let endpoint = settings.otlp_endpoint.as_ref()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", settings.replica()),
        ])
        .build();
    let scope = InstrumentationScope::builder("pusher-dual-auth").build();
    // Bounded: a span that finds the queue full is dropped, never waited for.
    Some(Exporter::start(
        endpoint.clone(),
        settings.export_timeout,
        otlp_body::Envelope::new(&resource, &scope),
        (settings.max_queue_spans, 512.min(settings.max_queue_spans)),
        Duration::from_secs(1),
    ))
}

// ---- spans ---------------------------------------------------------------------------------

/// A span as a span site holds it: nothing (tracing off), a trace's ids alone
/// (not sampled, or nowhere to export: nothing is recorded, the ids still
/// propagate), or a sampled span being recorded (ended, and written into its
/// thread's batch for export, when dropped).
pub struct Span(Inner);

enum Inner {
    None,
    Ids(SpanContext),
    Recording(Box<Open>),
}

/// What a sampled span records until it ends, its attributes already written
/// as the export writes them (the SDK's own span, built and moved through the
/// tracer, then its `SpanData`, cost more than its export: docs/performance.md).
struct Open {
    context: SpanContext,
    parent: Option<(SpanId, bool)>,
    kind: SpanKind,
    name: Cow<'static, str>,
    start: SystemTime,
    attributes: Attributes,
}

/// A span's attributes, written as protobuf (`otlp_body::attribute`) as they are set.
pub struct Attributes {
    bytes: Vec<u8>,
    count: usize,
    dropped: u32,
}

impl Attributes {
    /// Adds one; past `MAX_ATTRIBUTES` it is counted, not kept.
    pub fn add<V: AnyValue + ?Sized>(&mut self, key: &str, value: &V) {
        if self.count < MAX_ATTRIBUTES {
            otlp_body::attribute(&mut self.bytes, key, value);
            self.count += 1;
        } else {
            self.dropped += 1;
        }
    }
}

/// As the SDK's default span limit: attributes past it are counted, not kept.
const MAX_ATTRIBUTES: usize = 128;

impl Drop for Span {
    fn drop(&mut self) {
        let Inner::Recording(open) = std::mem::replace(&mut self.0, Inner::None) else { return };
        let Some(Tracing { exporter: Some(exporter), .. }) = TRACING.get() else { return };
        let end = SystemTime::now();
        exporter.batches.push(|b| {
            otlp_body::span(
                b,
                &EndedSpan {
                    context: &open.context,
                    parent: open.parent,
                    kind: &open.kind,
                    name: &open.name,
                    start: open.start,
                    end,
                    attributes: &open.attributes.bytes,
                    dropped_attributes: open.attributes.dropped,
                },
            )
        });
    }
}

impl Span {
    pub const fn none() -> Self {
        Self(Inner::None)
    }

    /// A span of the current request (`with_trace`): its child, in its trace and
    /// sampled as it is. Outside a request, a trace of its own (`root`).
    /// `attributes` are made only if the span is sampled.
    pub fn child(name: &'static str, kind: SpanKind, attributes: impl FnOnce(&mut Attributes)) -> Self {
        let Some(tracing) = TRACING.get() else { return Self::none() };
        let parent = CURRENT.with(|c| c.borrow().last().map(|t| t.context.clone()));
        tracing.start(|| name.into(), kind, parent.as_ref(), attributes)
    }

    /// A span starting a trace of its own, sampled by `sample_ratio`.
    pub fn root(name: &'static str, kind: SpanKind, attributes: impl FnOnce(&mut Attributes)) -> Self {
        let Some(tracing) = TRACING.get() else { return Self::none() };
        tracing.start(|| name.into(), kind, None, attributes)
    }

    /// Sets an attribute, if the span is sampled (`value` is made only then).
    pub fn set<V: AnyValue>(&mut self, key: &'static str, value: impl FnOnce() -> V) {
        if let Inner::Recording(open) = &mut self.0 {
            open.attributes.add(key, &value());
        }
    }

    fn context(&self) -> Option<&SpanContext> {
        match &self.0 {
            Inner::None => None,
            Inner::Ids(context) => Some(context),
            Inner::Recording(open) => Some(&open.context),
        }
    }

    /// `traceparent` (and `tracestate`) naming this span, the caller's side of an
    /// outgoing call. Sent unsampled too (flags `00`): the callee can still log
    /// the trace id, and it samples nothing either.
    pub fn outgoing(&self) -> Option<Outgoing> {
        let context = self.context()?;
        let mut traceparent = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&mut traceparent[3..35], &context.trace_id().to_bytes());
        hex_into(&mut traceparent[36..52], &context.span_id().to_bytes());
        if context.is_sampled() {
            traceparent[54] = b'1';
        }
        let traceparent = String::from_utf8(traceparent.to_vec()).expect("ASCII hex and dashes");
        let state = context.trace_state().header();
        Some(Outgoing { traceparent, tracestate: (!state.is_empty()).then_some(state) })
    }
}

impl Tracing {
    /// Sampled or not, decided before any span is made: a parent's flag stands
    /// (parent-based sampling), a trace started here is sampled by `sample_ratio`.
    fn sampled(&self, parent: Option<&SpanContext>) -> bool {
        match parent {
            Some(parent) => parent.is_sampled(),
            None => self.ratio >= 1.0 || (self.ratio > 0.0 && fastrand::f64() < self.ratio),
        }
    }

    fn start(
        &self,
        name: impl FnOnce() -> Cow<'static, str>,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: impl FnOnce(&mut Attributes),
    ) -> Span {
        self.make(self.sampled(parent), name, kind, parent, attributes)
    }

    /// The one place a span is made: its ids (the parent's trace id or a new one,
    /// a new span id, the parent's trace state). Sampled and exported, it is
    /// recorded too; `name` and `attributes` are made only then.
    fn make(
        &self,
        sampled: bool,
        name: impl FnOnce() -> Cow<'static, str>,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: impl FnOnce(&mut Attributes),
    ) -> Span {
        let trace_id = parent.map_or_else(new_trace_id, SpanContext::trace_id);
        let state = parent.map(|p| p.trace_state().clone()).unwrap_or_default();
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let context = SpanContext::new(trace_id, new_span_id(), flags, false, state);
        if !sampled || self.exporter.is_none() {
            return Span(Inner::Ids(context));
        }
        let mut open = Box::new(Open {
            context,
            parent: parent.map(|p| (p.span_id(), p.is_remote())),
            kind,
            name: name(),
            start: SystemTime::now(),
            attributes: Attributes { bytes: Vec::with_capacity(256), count: 0, dropped: 0 },
        });
        attributes(&mut open.attributes);
        Span(Inner::Recording(open))
    }
}

fn new_trace_id() -> TraceId {
    TraceId::from(fastrand::u128(1..))
}

fn new_span_id() -> SpanId {
    SpanId::from(fastrand::u64(1..))
}

/// `bytes` in lowercase hex into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[(b >> 4) as usize];
        pair[1] = HEX[(b & 15) as usize];
    }
}

// ---- incoming and outgoing context --------------------------------------------------------

/// The caller's trace context (`traceparent`, `tracestate`), as the W3C Trace
/// Context propagator reads it; None if there is none, or two, or it is malformed.
fn incoming(headers: &actix_web::http::header::HeaderMap) -> Option<SpanContext> {
    let one = |name: &str| {
        let mut values = headers.get_all(name);
        match (values.next(), values.next()) {
            // Two `traceparent`s are no trace context at all (W3C): a new trace.
            (Some(one), None) => one.to_str().ok(),
            _ => None,
        }
    };
    let mut parts = one("traceparent")?.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Exactly 2, 32, 16 and 2 lowercase hex digits (the SDK's parser also took shorter ids).
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !(hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2)) {
        return None;
    }
    // Version 0 has exactly four parts; 0xff is invalid.
    let version = u8::from_str_radix(version, 16).ok()?;
    if version == 0xff || version == 0 && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    // Unknown flags are accepted and cleared (W3C): only "sampled" is kept.
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?) & TraceFlags::SAMPLED;
    let state = one("tracestate").and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
    let context = SpanContext::new(trace_id, span_id, flags, true, state);
    context.is_valid().then_some(context)
}

/// What an outgoing call sends so that the callee's spans join the trace.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

// ---- the request's trace --------------------------------------------------------------------

/// A request's trace: its span's context (the parent of the spans made for it),
/// the span if it is sampled (recorded on by the handlers), the trace id in hex
/// (for the log lines).
pub struct RequestTrace {
    context: SpanContext,
    trace_id: [u8; 32],
    span: Mutex<Span>,
}

impl RequestTrace {
    /// The request's span (`kind` server), continuing the caller's trace from
    /// `headers`, or starting one. None with tracing off.
    pub fn start(
        name: impl FnOnce() -> Cow<'static, str>,
        headers: &actix_web::http::header::HeaderMap,
        attributes: impl FnOnce(&mut Attributes),
    ) -> Option<Arc<Self>> {
        let tracing = TRACING.get()?;
        let parent = incoming(headers);
        let span = tracing.start(name, SpanKind::Server, parent.as_ref(), attributes);
        let context = span.context()?.clone();
        let mut trace_id = [0; 32];
        hex_into(&mut trace_id, &context.trace_id().to_bytes());
        Some(Arc::new(Self { context, trace_id, span: Mutex::new(span) }))
    }

    /// Sets an attribute on the request's span, if it is sampled.
    pub fn set<V: AnyValue>(&self, key: &'static str, value: impl FnOnce() -> V) {
        if self.context.is_sampled() {
            self.span.lock().unwrap_or_else(|e| e.into_inner()).set(key, value);
        }
    }

    /// Ends the request's span (now, not when the last reference goes).
    pub fn end(&self) {
        if self.context.is_sampled() {
            *self.span.lock().unwrap_or_else(|e| e.into_inner()) = Span::none();
        }
    }
}

thread_local! {
    /// The traces of the requests this thread is polling, innermost last.
    static CURRENT: std::cell::RefCell<Vec<Arc<RequestTrace>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Pops the thread's stack, also when a poll panics.
struct PopOnDrop;

impl Drop for PopOnDrop {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().pop());
    }
}

/// Runs the request's `future` with `trace` as this thread's current request
/// while it is polled: the spans made for it are its children (`Span::child`),
/// the handlers record on it (`record`), and the log lines carry its trace id.
pub async fn with_trace<F: std::future::Future>(trace: Arc<RequestTrace>, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    // The trace itself moves onto the stack for the poll and back (no count kept per poll).
    let mut trace = Some(trace);
    std::future::poll_fn(move |cx| {
        let Some(this) = trace.take() else { return future.as_mut().poll(cx) };
        CURRENT.with(|c| c.borrow_mut().push(this));
        let pop = PopOnDrop;
        let poll = future.as_mut().poll(cx);
        std::mem::forget(pop);
        trace = CURRENT.with(|c| c.borrow_mut().pop());
        poll
    })
    .await
}

/// Records the app, kind and outcome on the current request's span, if it is
/// sampled (the fixed labels without an allocation).
pub fn record(app: &str, kind: &'static str, outcome: &'static str) {
    CURRENT.with(|c| {
        let current = c.borrow();
        let Some(trace) = current.last() else { return };
        if trace.context.is_sampled() {
            let mut span = trace.span.lock().unwrap_or_else(|e| e.into_inner());
            span.set("app", || app);
            span.set("kind", || kind);
            span.set("outcome", || outcome);
        }
    })
}

// ---- trace ids in the log lines -------------------------------------------------------------

/// The log line, with the trace id when it is written inside a traced request:
/// first in a JSON line (`"trace_id"`), last in a plain one (`trace_id=`).
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
        let Some(hex) = CURRENT.with(|c| c.borrow().last().map(|t| t.trace_id)) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // Hex digits: nothing to escape.
        let trace_id = std::str::from_utf8(&hex).unwrap_or_default();
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            None => match line.strip_suffix('\n') {
                Some(rest) => writeln!(writer, "{rest} trace_id={trace_id}"),
                None => write!(writer, "{line} trace_id={trace_id}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    fn parsed(values: &[(&str, &str)]) -> Option<SpanContext> {
        let mut h = HeaderMap::new();
        for (k, v) in values {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        incoming(&h)
    }

    const GOOD: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_w3c_traceparent_is_continued_sampled_flag_and_state_kept() {
        let c = parsed(&[("traceparent", GOOD), ("tracestate", "congo=t61rcWkgMzE")]).unwrap();
        assert_eq!(format!("{}", c.trace_id()), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(format!("{}", c.span_id()), "b7ad6b7169203331");
        assert!(c.is_sampled() && c.is_remote());
        assert_eq!(c.trace_state().header(), "congo=t61rcWkgMzE");
        let unsampled = parsed(&[("traceparent", &GOOD.replace("-01", "-00"))]).unwrap();
        assert!(!unsampled.is_sampled());
        // Unknown flags are cleared, "sampled" kept.
        assert!(parsed(&[("traceparent", &GOOD.replace("-01", "-03"))]).unwrap().is_sampled());
    }

    #[test]
    fn anything_else_is_no_trace_context_at_all() {
        let bad = [
            GOOD.to_uppercase(),
            GOOD.replace("00-", "ff-"),
            GOOD.replace("00-", "0-"),
            format!("{GOOD}-"),
            format!("{GOOD}-extra"),
            GOOD.replace("0af7651916cd43dd8448eb211c80319c", "0af7651916cd43dd"),
            GOOD.replace("b7ad6b7169203331", "b7ad6b71"),
            GOOD.replace("0af7651916cd43dd8448eb211c80319c", &"0".repeat(32)),
            GOOD.replace("b7ad6b7169203331", &"0".repeat(16)),
            GOOD.replace("-01", "-1"),
            GOOD.replace("-01", "-zz"),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331".to_owned(),
            String::new(),
        ];
        for b in &bad {
            assert!(parsed(&[("traceparent", b)]).is_none(), "{b:?}");
        }
        // A later version may carry more fields; its first four are read.
        assert!(parsed(&[("traceparent", &format!("{}-more", GOOD.replacen("00", "01", 1)))]).is_some());
        // Two traceparents: none (W3C).
        assert!(parsed(&[("traceparent", GOOD), ("traceparent", GOOD)]).is_none());
    }
}
