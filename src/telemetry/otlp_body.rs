//! The OTLP/HTTP request body for a batch of spans (`ExportTraceServiceRequest`,
//! protobuf), written with prost's wire primitives: each span as it ends, on the
//! thread that ends it (`span`, its attributes as they are set: `attribute`), and
//! a batch of such spans wrapped once in the resource and scope (`export_request`).
//! opentelemetry-otlp first builds the `opentelemetry-proto` structs (grouping
//! spans in a hash map, a `String` or `Vec` for every id, name and attribute
//! value) and then encodes them: most of what a sampled authorization cost
//! (docs/performance.md, tracing). The fields and their numbers are
//! opentelemetry-proto's `trace/v1/trace.proto`, `common/v1/common.proto` and
//! `resource/v1/resource.proto`; the test below holds the output equal to
//! opentelemetry-proto's own conversion of the same spans, decoded.
//!
//! Pure: bytes in, bytes out; the exporter (`export.rs`) sends them.

use opentelemetry::trace::{SpanContext, SpanId, SpanKind};
use opentelemetry::{Array, InstrumentationScope, Value};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use std::borrow::Cow;
use std::time::SystemTime;

/// What every batch is wrapped in, written once: `ResourceSpans.resource`
/// (field 1), `ScopeSpans.scope` (field 1) and the schema URLs (field 3 of each).
#[derive(Debug, Default, Clone)]
pub struct Envelope {
    resource: Vec<u8>,
    scope: Vec<u8>,
    scope_schema_url: Vec<u8>,
    schema_url: Vec<u8>,
}

impl Envelope {
    pub fn new(resource: &opentelemetry_sdk::Resource, scope: &InstrumentationScope) -> Self {
        let mut head = Vec::new();
        nested(&mut head, 1, |b| {
            for (key, value) in resource.iter() {
                key_value(b, 1, key.as_str(), value);
            }
        });
        let mut scope_field = Vec::new();
        nested(&mut scope_field, 1, |b| {
            string(b, 1, scope.name());
            string(b, 2, scope.version().unwrap_or_default());
            for kv in scope.attributes() {
                key_value(b, 3, kv.key.as_str(), &kv.value);
            }
        });
        let mut scope_schema_url = Vec::new();
        string(&mut scope_schema_url, 3, scope.schema_url().unwrap_or_default());
        let mut schema_url = Vec::new();
        string(&mut schema_url, 3, resource.schema_url().unwrap_or_default());
        Self { resource: head, scope: scope_field, scope_schema_url, schema_url }
    }
}

/// The request body: one `ResourceSpans` with one `ScopeSpans` holding `spans`,
/// each part a run of spans as `span` wrote them, in order.
pub fn export_request(envelope: &Envelope, spans: &[&[u8]]) -> Vec<u8> {
    let len = spans.iter().map(|s| s.len()).sum::<usize>();
    let mut body = Vec::with_capacity(64 + envelope.resource.len() + envelope.scope.len() + len);
    nested(&mut body, 1, |b| {
        b.extend_from_slice(&envelope.resource);
        if len > 0 {
            nested(b, 2, |b| {
                b.extend_from_slice(&envelope.scope);
                spans.iter().for_each(|s| b.extend_from_slice(s));
                b.extend_from_slice(&envelope.scope_schema_url);
            });
        }
        b.extend_from_slice(&envelope.schema_url);
    });
    body
}

/// A span of ours as it ends: no events or links, status unset.
pub struct EndedSpan<'a> {
    pub context: &'a SpanContext,
    /// The parent's id, and whether it is remote (another process's).
    pub parent: Option<(SpanId, bool)>,
    pub kind: &'a SpanKind,
    pub name: &'a str,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Its attributes as `attribute` wrote them.
    pub attributes: &'a [u8],
    pub dropped_attributes: u32,
}

/// One span as an entry of `ScopeSpans.spans` (field 2): a batch is these, one
/// after another. Its length is counted first and written before it (a span is
/// longer than 127 bytes: written in place, it would be moved along).
pub fn span(b: &mut Vec<u8>, s: &EndedSpan<'_>) {
    let context = s.context;
    let state = context.trace_state().header();
    let (start, end) = (nanos(s.start), nanos(s.end));
    let remote = s.parent.is_some_and(|(_, remote)| remote);
    // `SpanFlags`: the W3C trace flags, and that whether the parent is remote is known (0x100) and its answer (0x200).
    let flags = u32::from(context.trace_flags().to_u8()) | 0x100 | if remote { 0x200 } else { 0 };
    let len = delimited_len(1, 16)
        + delimited_len(2, 8)
        + delimited_len(3, state.len())
        + if s.parent.is_some() { delimited_len(4, 8) } else { 0 }
        + delimited_len(5, s.name.len())
        + key_len(6)
        + encoded_len_varint(kind(s.kind))
        + if start != 0 { key_len(7) + 8 } else { 0 }
        + if end != 0 { key_len(8) + 8 } else { 0 }
        + s.attributes.len()
        + if s.dropped_attributes != 0 {
            key_len(10) + encoded_len_varint(s.dropped_attributes.into())
        } else {
            0
        }
        + key_len(15)
        + 1
        + key_len(16)
        + 4;
    encode_key(2, WireType::LengthDelimited, b);
    encode_varint(len as u64, b);
    b.reserve(len);
    let at = b.len();
    bytes(b, 1, &context.trace_id().to_bytes());
    bytes(b, 2, &context.span_id().to_bytes());
    string(b, 3, &state);
    if let Some((parent, _)) = s.parent {
        bytes(b, 4, &parent.to_bytes());
    }
    string(b, 5, s.name);
    varint(b, 6, kind(s.kind));
    fixed64(b, 7, start);
    fixed64(b, 8, end);
    b.extend_from_slice(s.attributes);
    varint(b, 10, s.dropped_attributes.into());
    // The status, always present, as opentelemetry-proto writes it (unset is empty).
    length_delimited(b, 15, &[]);
    fixed32(b, 16, flags);
    debug_assert_eq!(b.len() - at, len, "the span's length as counted");
}

/// One attribute as an entry of `Span.attributes` (field 9).
pub fn attribute<V: AnyValue + ?Sized>(b: &mut Vec<u8>, key: &str, value: &V) {
    key_value(b, 9, key, value);
}

/// A `KeyValue { key = 1; AnyValue value = 2 }` as field `tag` (a span's
/// attributes, a resource's, a scope's), its lengths counted before it is
/// written (an attribute is written for every span).
fn key_value<V: AnyValue + ?Sized>(b: &mut Vec<u8>, tag: u32, key: &str, value: &V) {
    let value_len = value.encoded_len();
    let len = delimited_len(1, key.len()) + key_len(2) + encoded_len_varint(value_len as u64) + value_len;
    encode_key(tag, WireType::LengthDelimited, b);
    encode_varint(len as u64, b);
    string(b, 1, key);
    encode_key(2, WireType::LengthDelimited, b);
    encode_varint(value_len as u64, b);
    value.any_value(b);
}

/// The length of a length-delimited field of `len` bytes: 0 when empty (left out).
fn delimited_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { key_len(tag) + encoded_len_varint(len as u64) + len }
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A value an attribute can hold, written as an `AnyValue`: a oneof, so its
/// field is written even when it holds the default (false, 0, ""): present is
/// what says which it is.
pub trait AnyValue {
    fn any_value(&self, b: &mut Vec<u8>);
    /// The length `any_value` writes.
    fn encoded_len(&self) -> usize;
}

fn string_len(v: &str) -> usize {
    1 + encoded_len_varint(v.len() as u64) + v.len()
}

/// Each kind's `AnyValue` field (`write`) and its length, once per kind.
macro_rules! any_value {
    ($($kind:ty: $v:ident => $write:ident($arg:expr), $len:expr;)*) => {$(
        impl AnyValue for $kind {
            fn any_value(&self, b: &mut Vec<u8>) {
                let $v = self;
                $write(b, $arg);
            }
            fn encoded_len(&self) -> usize {
                #[allow(unused_variables)]
                let $v = self;
                $len
            }
        }
    )*};
}

any_value! {
    str: v => string_value(v), string_len(v);
    String: v => string_value(v), string_len(v);
    Cow<'_, str>: v => string_value(v), string_len(v);
    bool: v => bool_value(*v), 2;
    i64: v => int_value(*v), 1 + encoded_len_varint(*v as u64);
    f64: v => double_value(*v), 9;
}

impl<T: AnyValue + ?Sized> AnyValue for &T {
    fn any_value(&self, b: &mut Vec<u8>) {
        (**self).any_value(b);
    }
    fn encoded_len(&self) -> usize {
        (**self).encoded_len()
    }
}

impl AnyValue for Value {
    fn any_value(&self, b: &mut Vec<u8>) {
        match self {
            Value::String(s) => string_value(b, s.as_str()),
            Value::Bool(v) => bool_value(b, *v),
            Value::I64(v) => int_value(b, *v),
            Value::F64(v) => double_value(b, *v),
            // ArrayValue { repeated AnyValue values = 1 }
            Value::Array(array) => nested(b, 5, |b| match array {
                Array::Bool(list) => list.iter().for_each(|v| nested(b, 1, |b| bool_value(b, *v))),
                Array::I64(list) => list.iter().for_each(|v| nested(b, 1, |b| int_value(b, *v))),
                Array::F64(list) => list.iter().for_each(|v| nested(b, 1, |b| double_value(b, *v))),
                Array::String(list) => {
                    list.iter().for_each(|v| nested(b, 1, |b| string_value(b, v.as_str())))
                }
                // A kind added to the SDK later: an empty value, as if unset.
                _ => {}
            }),
            _ => {}
        }
    }
    fn encoded_len(&self) -> usize {
        // Not on a request's path (the resource, once): counted by writing it.
        let mut b = Vec::new();
        self.any_value(&mut b);
        b.len()
    }
}

// AnyValue's fields, one per kind.
fn string_value(b: &mut Vec<u8>, v: &str) {
    length_delimited(b, 1, v.as_bytes());
}

fn bool_value(b: &mut Vec<u8>, v: bool) {
    varint_always(b, 2, u64::from(v));
}

fn int_value(b: &mut Vec<u8>, v: i64) {
    varint_always(b, 3, v as u64);
}

fn double_value(b: &mut Vec<u8>, v: f64) {
    encode_key(4, WireType::SixtyFourBit, b);
    b.extend_from_slice(&v.to_bits().to_le_bytes());
}

// ---- wire primitives: a field is left out when it holds its default (proto3) ----

/// A length-delimited field written in place: one byte is kept for the length
/// (most messages here are shorter than 128 bytes), and the content is moved
/// along when its length needs more.
fn nested(b: &mut Vec<u8>, tag: u32, write: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, b);
    let at = b.len();
    b.push(0);
    write(b);
    let len = b.len() - at - 1;
    let width = encoded_len_varint(len as u64);
    if width > 1 {
        let end = b.len();
        b.resize(end + width - 1, 0);
        b.copy_within(at + 1..end, at + width);
    }
    encode_varint(len as u64, &mut &mut b[at..at + width]);
}

fn bytes(b: &mut Vec<u8>, tag: u32, value: &[u8]) {
    if !value.is_empty() {
        length_delimited(b, tag, value);
    }
}

fn string(b: &mut Vec<u8>, tag: u32, value: &str) {
    bytes(b, tag, value.as_bytes());
}

fn length_delimited(b: &mut Vec<u8>, tag: u32, value: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, b);
    encode_varint(value.len() as u64, b);
    b.extend_from_slice(value);
}

fn varint(b: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        varint_always(b, tag, value);
    }
}

fn varint_always(b: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::Varint, b);
    encode_varint(value, b);
}

fn fixed64(b: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, b);
        b.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32(b: &mut Vec<u8>, tag: u32, value: u32) {
    if value != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, b);
        b.extend_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Status, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
    use prost::Message;
    use std::time::Duration;

    fn context(trace: u128, span: u64, sampled: bool, state: &str) -> SpanContext {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            flags,
            false,
            state.parse::<TraceState>().unwrap(),
        )
    }

    fn at(nanos: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    fn scope() -> InstrumentationScope {
        InstrumentationScope::builder("pusher-dual-auth").build()
    }

    /// Spans of every shape ours take, as the SDK's `SpanData`: each value kind
    /// (defaults, negatives, arrays, empty strings), each kind, a local and a
    /// remote parent and none, a trace state, long names and values (a length
    /// of two bytes), dropped attributes.
    fn spans() -> Vec<SpanData> {
        let values = vec![
            KeyValue::new("s", "auth"),
            KeyValue::new("empty", ""),
            KeyValue::new("long", "x".repeat(300)),
            KeyValue::new("t", true),
            KeyValue::new("f", false),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("neg", -7_i64),
            KeyValue::new("pi", 3.5_f64),
            KeyValue::new("fzero", 0.0_f64),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![0, -1, i64::MAX]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![0.0, -2.5]))),
            KeyValue::new("strings", Value::Array(Array::String(vec!["a".into(), "".into()]))),
            KeyValue::new("none", Value::Array(Array::I64(vec![]))),
        ];
        let kinds =
            [SpanKind::Server, SpanKind::Client, SpanKind::Internal, SpanKind::Producer, SpanKind::Consumer];
        (0..9_u64)
            .map(|i| SpanData {
                span_context: context(
                    1 + u128::from(i),
                    10 + i,
                    i % 4 != 3,
                    if i == 2 { "a=1,b=2" } else { "" },
                ),
                parent_span_id: if i % 2 == 0 { SpanId::from(500 + i) } else { SpanId::INVALID },
                parent_span_is_remote: i == 0,
                span_kind: kinds[i as usize % kinds.len()].clone(),
                name: if i == 4 { "n".repeat(200).into() } else { format!("span {i}").into() },
                start_time: at(1_700_000_000_000_000_000 + i),
                end_time: at(1_700_000_000_000_500_000 + i),
                attributes: if i == 5 { vec![] } else { values.clone() },
                dropped_attributes_count: (i % 2) as u32,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: Status::Unset,
                instrumentation_scope: scope(),
            })
            .collect()
    }

    /// A `SpanData` written as ours are: its attributes one by one, then the span.
    fn encoded(s: &SpanData) -> Vec<u8> {
        let mut attributes = Vec::new();
        for kv in &s.attributes {
            attribute(&mut attributes, kv.key.as_str(), &kv.value);
        }
        let parent =
            (s.parent_span_id != SpanId::INVALID).then_some((s.parent_span_id, s.parent_span_is_remote));
        let mut b = Vec::new();
        span(
            &mut b,
            &EndedSpan {
                context: &s.span_context,
                parent,
                kind: &s.span_kind,
                name: &s.name,
                start: s.start_time,
                end: s.end_time,
                attributes: &attributes,
                dropped_attributes: s.dropped_attributes_count,
            },
        );
        b
    }

    fn resource(schema: bool) -> opentelemetry_sdk::Resource {
        let builder = if schema {
            opentelemetry_sdk::Resource::builder_empty()
                .with_schema_url([KeyValue::new("service.name", "svc")], "https://example.com/schema")
        } else {
            opentelemetry_sdk::Resource::builder_empty()
                .with_attributes([KeyValue::new("service.name", "svc")])
        };
        builder.with_attributes([KeyValue::new("service.instance.id", "replica-1")]).build()
    }

    #[test]
    fn the_body_decodes_to_what_opentelemetry_proto_makes_of_the_same_spans() {
        for schema in [false, true] {
            let resource = resource(schema);
            // Two runs of spans (two threads' batches), as the exporter joins them.
            let (first, second): (Vec<u8>, Vec<u8>) = {
                let all = spans();
                (all[..4].iter().flat_map(encoded).collect(), all[4..].iter().flat_map(encoded).collect())
            };
            let ours = export_request(&Envelope::new(&resource, &scope()), &[&first, &second]);
            let decoded =
                ExportTraceServiceRequest::decode(ours.as_slice()).expect("a valid protobuf message");
            let reference = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(
                    spans(),
                    &ResourceAttributesWithSchema::from(&resource),
                ),
            };
            // Span by span first: a difference is then shown in one span, not the whole batch.
            let (ours, theirs) = (&decoded.resource_spans[0], &reference.resource_spans[0]);
            assert_eq!(ours.scope_spans[0].spans.len(), 9);
            for (x, y) in ours.scope_spans[0].spans.iter().zip(&theirs.scope_spans[0].spans) {
                assert_eq!(x, y);
            }
            assert_eq!(decoded, reference);
        }
    }

    #[test]
    fn a_scope_with_a_version_attributes_and_schema_is_written_as_opentelemetry_proto_writes_it() {
        let other = InstrumentationScope::builder("other")
            .with_version("1.2")
            .with_schema_url("https://opentelemetry.io/schemas/1.21.0")
            .with_attributes([KeyValue::new("scope.attr", true)])
            .build();
        let mut one = spans().remove(1);
        one.instrumentation_scope = other.clone();
        let resource = resource(true);
        let ours = export_request(&Envelope::new(&resource, &other), &[&encoded(&one)]);
        let reference = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                vec![one],
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(ExportTraceServiceRequest::decode(ours.as_slice()).unwrap(), reference);
    }

    #[test]
    fn a_typed_attribute_is_written_as_the_same_value_of_the_sdk_is() {
        fn same<V: AnyValue + Into<Value> + Clone + std::fmt::Debug>(key: &str, v: V) {
            let (mut typed, mut sdk) = (Vec::new(), Vec::new());
            attribute(&mut typed, key, &v);
            attribute(&mut sdk, key, &v.clone().into());
            assert_eq!(typed, sdk, "{key:?} = {v:?}");
        }
        let long = "y".repeat(300);
        for key in ["", "app", &"k".repeat(200)] {
            same(key, "");
            same(key, "auth");
            same(key, long.clone());
            same(key, Cow::<str>::Borrowed("c"));
            same(key, true);
            same(key, false);
            for n in [0_i64, 1, -1, 127, 128, i64::MAX, i64::MIN] {
                same(key, n);
            }
            same(key, 0.0_f64);
            same(key, -2.5_f64);
        }
        // And a borrowed str, as the span sites pass it.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        attribute(&mut a, "app", "new");
        attribute(&mut b, "app", &Value::from("new"));
        assert_eq!(a, b);
    }

    #[test]
    fn an_empty_batch_is_a_resource_with_no_spans() {
        let resource = resource(false);
        let decoded = ExportTraceServiceRequest::decode(
            export_request(&Envelope::new(&resource, &scope()), &[]).as_slice(),
        )
        .unwrap();
        assert_eq!(decoded.resource_spans.len(), 1);
        assert!(decoded.resource_spans[0].scope_spans.is_empty());
        assert!(decoded.resource_spans[0].resource.is_some());
    }

    #[test]
    fn a_length_of_any_width_is_written_minimally() {
        for n in [0, 1, 127, 128, 16_383, 16_384, 70_000] {
            let mut b = Vec::new();
            nested(&mut b, 1, |b| b.extend(std::iter::repeat_n(7_u8, n)));
            let mut expected = Vec::new();
            length_delimited(&mut expected, 1, &vec![7_u8; n]);
            assert_eq!(b, expected, "{n} bytes");
        }
    }
}
