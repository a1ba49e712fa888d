//! The OTLP/HTTP request body for a batch of spans (`ExportTraceServiceRequest`,
//! protobuf), written straight from the SDK's `SpanData` with prost's wire
//! primitives. opentelemetry-otlp first builds the `opentelemetry-proto`
//! structs (grouping spans in a hash map, a `String` or `Vec` for every id,
//! name and attribute value) and then encodes them: most of what a sampled
//! authorization cost (docs/performance.md, tracing). The fields and their
//! numbers are opentelemetry-proto's `trace/v1/trace.proto`,
//! `common/v1/common.proto` and `resource/v1/resource.proto`; the test below
//! holds the output equal to opentelemetry-proto's own conversion, decoded.
//!
//! Pure: bytes in, bytes out; the exporter (`export.rs`) sends them.

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use std::time::SystemTime;

/// `ResourceSpans.resource` (field 1) and its `schema_url` (field 3), written
/// once when the SDK hands the exporter its resource.
#[derive(Debug, Default, Clone)]
pub struct EncodedResource {
    resource: Vec<u8>,
    schema_url: Vec<u8>,
}

impl EncodedResource {
    pub fn new(resource: &opentelemetry_sdk::Resource) -> Self {
        let mut head = Vec::new();
        nested(&mut head, 1, |b| {
            for (key, value) in resource.iter() {
                nested(b, 1, |b| key_value(b, key.as_str(), value));
            }
        });
        let mut schema_url = Vec::new();
        string(&mut schema_url, 3, resource.schema_url().unwrap_or_default());
        Self { resource: head, schema_url }
    }
}

/// The request body: one `ResourceSpans`, a `ScopeSpans` per instrumentation
/// scope (in the order each first appears), each span in the batch's order.
pub fn export_request(resource: &EncodedResource, spans: &[SpanData]) -> Vec<u8> {
    let mut scopes: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
    for span in spans {
        match scopes.iter_mut().find(|(scope, _)| **scope == span.instrumentation_scope) {
            Some((_, list)) => list.push(span),
            None => scopes.push((&span.instrumentation_scope, vec![span])),
        }
    }
    let mut body = Vec::with_capacity(64 + spans.len() * 256);
    nested(&mut body, 1, |b| {
        b.extend_from_slice(&resource.resource);
        for (scope, list) in &scopes {
            nested(b, 2, |b| {
                nested(b, 1, |b| instrumentation_scope(b, scope));
                for span in list {
                    nested(b, 2, |b| self::span(b, span));
                }
                string(b, 3, scope.schema_url().unwrap_or_default());
            });
        }
        b.extend_from_slice(&resource.schema_url);
    });
    body
}

fn instrumentation_scope(b: &mut Vec<u8>, scope: &InstrumentationScope) {
    string(b, 1, scope.name());
    string(b, 2, scope.version().unwrap_or_default());
    for kv in scope.attributes() {
        nested(b, 3, |b| key_value(b, kv.key.as_str(), &kv.value));
    }
}

fn span(b: &mut Vec<u8>, s: &SpanData) {
    let context = &s.span_context;
    bytes(b, 1, &context.trace_id().to_bytes());
    bytes(b, 2, &context.span_id().to_bytes());
    trace_state(b, 3, context);
    if s.parent_span_id != SpanId::INVALID {
        bytes(b, 4, &s.parent_span_id.to_bytes());
    }
    string(b, 5, &s.name);
    varint(b, 6, kind(&s.span_kind));
    fixed64(b, 7, nanos(s.start_time));
    fixed64(b, 8, nanos(s.end_time));
    attributes(b, 9, &s.attributes);
    varint(b, 10, s.dropped_attributes_count.into());
    for event in s.events.iter() {
        nested(b, 11, |b| {
            fixed64(b, 1, nanos(event.timestamp));
            string(b, 2, &event.name);
            attributes(b, 3, &event.attributes);
            varint(b, 4, event.dropped_attributes_count.into());
        });
    }
    varint(b, 12, s.events.dropped_count.into());
    for link in s.links.iter() {
        let linked = &link.span_context;
        nested(b, 13, |b| {
            bytes(b, 1, &linked.trace_id().to_bytes());
            bytes(b, 2, &linked.span_id().to_bytes());
            trace_state(b, 3, linked);
            attributes(b, 4, &link.attributes);
            varint(b, 5, link.dropped_attributes_count.into());
            fixed32(b, 6, flags(linked.is_remote(), linked));
        });
    }
    varint(b, 14, s.links.dropped_count.into());
    // Always present, as opentelemetry-proto writes it (an Unset status is empty).
    nested(b, 15, |b| {
        let (message, code) = match &s.status {
            Status::Unset => ("", 0),
            Status::Ok => ("", 1),
            Status::Error { description } => (description.as_ref(), 2),
        };
        string(b, 2, message);
        varint(b, 3, code);
    });
    fixed32(b, 16, flags(s.parent_span_is_remote, context));
}

/// `SpanFlags`: the W3C trace flags, and that whether the parent is remote is known (0x100) and its answer (0x200).
fn flags(remote: bool, context: &SpanContext) -> u32 {
    u32::from(context.trace_flags().to_u8()) | 0x100 | if remote { 0x200 } else { 0 }
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

fn trace_state(b: &mut Vec<u8>, tag: u32, context: &SpanContext) {
    let header = context.trace_state().header();
    string(b, tag, &header);
}

fn attributes(b: &mut Vec<u8>, tag: u32, list: &[KeyValue]) {
    for kv in list {
        nested(b, tag, |b| key_value(b, kv.key.as_str(), &kv.value));
    }
}

/// `KeyValue { key = 1; AnyValue value = 2 }`.
fn key_value(b: &mut Vec<u8>, key: &str, value: &Value) {
    string(b, 1, key);
    nested(b, 2, |b| any_value(b, value));
}

/// `AnyValue`: a oneof, so its field is written even when it holds the default
/// (false, 0, ""): present is what says which it is.
fn any_value(b: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => string_value(b, s.as_str()),
        Value::Bool(v) => bool_value(b, *v),
        Value::I64(v) => int_value(b, *v),
        Value::F64(v) => double_value(b, *v),
        // ArrayValue { repeated AnyValue values = 1 }
        Value::Array(array) => nested(b, 5, |b| match array {
            Array::Bool(list) => list.iter().for_each(|v| nested(b, 1, |b| bool_value(b, *v))),
            Array::I64(list) => list.iter().for_each(|v| nested(b, 1, |b| int_value(b, *v))),
            Array::F64(list) => list.iter().for_each(|v| nested(b, 1, |b| double_value(b, *v))),
            Array::String(list) => list.iter().for_each(|v| nested(b, 1, |b| string_value(b, v.as_str()))),
            // A kind added to the SDK later: an empty value, as if unset.
            _ => {}
        }),
        _ => {}
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
        b.splice(at + 1..at + 1, std::iter::repeat_n(0, width - 1));
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
    use opentelemetry::trace::{Event, Link, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;
    use std::time::Duration;

    fn context(trace: u128, span: u64, sampled: bool, remote: bool, state: &str) -> SpanContext {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            flags,
            remote,
            state.parse::<TraceState>().unwrap(),
        )
    }

    fn at(nanos: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    /// Spans of every shape the SDK makes: each value kind (defaults, negatives,
    /// arrays, empty strings), events, links, each status and kind, a remote
    /// parent, a trace state, long names (a length of two bytes), two scopes.
    fn spans() -> Vec<SpanData> {
        let ours = InstrumentationScope::builder("pusher-dual-auth").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2")
            .with_schema_url("https://opentelemetry.io/schemas/1.21.0")
            .with_attributes([KeyValue::new("scope.attr", true)])
            .build();
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
        let statuses = [Status::Unset, Status::Ok, Status::error("host answered 500")];
        (0..9_u64)
            .map(|i| {
                let mut events = SpanEvents::default();
                let mut links = SpanLinks::default();
                if i % 3 == 1 {
                    events.events.push(Event::new("retry", at(5 + i), vec![KeyValue::new("n", i as i64)], 2));
                    events.events.push(Event::new("plain", at(0), vec![], 0));
                    events.dropped_count = 1;
                    links.links.push(Link::new(
                        context(99, 98, true, true, "k=v"),
                        vec![KeyValue::new("l", "x")],
                        1,
                    ));
                    links.dropped_count = 3;
                }
                SpanData {
                    span_context: context(
                        1 + u128::from(i),
                        10 + i,
                        i % 4 != 3,
                        false,
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
                    events,
                    links,
                    status: statuses[i as usize % statuses.len()].clone(),
                    instrumentation_scope: if i % 3 == 2 { other.clone() } else { ours.clone() },
                }
            })
            .collect()
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
            let ours = export_request(&EncodedResource::new(&resource), &spans());
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
            for (a, b) in ours.scope_spans.iter().zip(&theirs.scope_spans) {
                for (x, y) in a.spans.iter().zip(&b.spans) {
                    assert_eq!(x, y);
                }
            }
            assert_eq!(decoded, reference);
            assert_eq!(decoded.resource_spans[0].scope_spans.len(), 2, "two scopes, each once");
        }
    }

    #[test]
    fn an_empty_batch_is_a_resource_with_no_spans() {
        let resource = resource(false);
        let decoded = ExportTraceServiceRequest::decode(
            export_request(&EncodedResource::new(&resource), &[]).as_slice(),
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
