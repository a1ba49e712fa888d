//! `[telemetry]` with the real binary: an OTLP/HTTP receiver decodes what the
//! service exports (`ExportTraceServiceRequest`, the OpenTelemetry protobuf
//! definitions), and a session-check host records the `traceparent` it gets.
//! A browser's `traceparent` is continued: the request span's parent is the
//! browser's span, the host's `traceparent` names the session check's span,
//! whose parent is the request span; nothing secret is exported; the JSON log
//! lines of a traced request carry its `trace_id`. A trace started here at
//! `sample_ratio = 0` exports nothing, and the host still gets a (not
//! sampled) `traceparent`, so it can log the trace id. Exports carry the
//! headers `OTEL_EXPORTER_OTLP_HEADERS` names, and one answered 503 is sent again.
//! A thread's full batch is sent at once; a stalled collector costs dropped
//! spans (counted in a warning), never a request that waits.
mod common;
use common::{Service, TempDir};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value, trace::v1::Span,
};
use prost::Message;
use std::time::{Duration, Instant};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_string_contains, method, path},
};

const SECRET: &str = "tel-s3cr3t-app-secret";
const COOKIE: &str = "session=C00KIE-TRACE-4242";
const TOKEN: &str = "Bearer T0KEN-TRACE-9191";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const BROWSER_SPAN: &str = "00f067aa0ba902b7";

fn config(host: &str, otlp: &str, ratio: f64) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{{port}}"
admin_listen = "127.0.0.1:{{admin}}"
workers = 1
[session_check]
url = "{host}/check"
[apps.old]
app_id = "1"
key = "old-key"
secret = "old-{SECRET}"
[apps.new]
app_id = "2"
key = "new-key"
secret = "{SECRET}"
[log]
format = "json"
level = "info"
[telemetry]
otlp_endpoint = "{otlp}"
sample_ratio = {ratio}
replica_id = "replica-under-test"
"#
    )
}

/// A session-check host: 403 for `private-denied`, 200 otherwise.
async fn host() -> MockServer {
    let host = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/check"))
        .and(body_string_contains("private-denied"))
        .respond_with(ResponseTemplate::new(403))
        .with_priority(1)
        .mount(&host)
        .await;
    Mock::given(method("POST"))
        .and(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"user_id": "u-1"})))
        .with_priority(2)
        .mount(&host)
        .await;
    host
}

/// The OTLP/HTTP receiver: takes every export (an empty
/// `ExportTraceServiceResponse` is zero bytes); the test decodes the bodies.
async fn receiver() -> MockServer {
    let otlp = MockServer::start().await;
    // The first export is answered as a collector that is passing answers it.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&otlp)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200).insert_header("content-type", "application/x-protobuf"))
        .mount(&otlp)
        .await;
    otlp
}

/// Every export received so far: (raw bodies, decoded requests).
async fn exports(otlp: &MockServer) -> (Vec<Vec<u8>>, Vec<ExportTraceServiceRequest>) {
    let bodies: Vec<Vec<u8>> =
        otlp.received_requests().await.unwrap_or_default().into_iter().map(|r| r.body).collect();
    let decoded = bodies
        .iter()
        .map(|b| ExportTraceServiceRequest::decode(b.as_slice()).expect("OTLP protobuf"))
        .collect();
    (bodies, decoded)
}

fn spans(requests: &[ExportTraceServiceRequest]) -> Vec<Span> {
    requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

async fn auth(port: u16, channel: &str, traceparent: Option<&str>) -> reqwest::Response {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut request = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/auth/new"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", COOKIE)
        .header("authorization", TOKEN)
        .body(format!("socket_id=1234.5678&channel_name={channel}"));
    if let Some(parent) = traceparent {
        request = request.header("traceparent", parent).header("tracestate", "vendor=opaque");
    }
    request.send().await.unwrap()
}

/// The `traceparent` of each check the host received, in order.
async fn host_traceparents(host: &MockServer) -> Vec<String> {
    host.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browsers_trace_is_continued_to_the_host_and_exported() {
    let (host, otlp) = (host().await, receiver().await);
    let dir = TempDir::new("telemetry");
    let otlp_url = format!("{}/v1/traces", otlp.uri());
    let headers = [("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=t%3Dk , x-tenant = blue,bad header=1")];
    let service = Service::start_with_env(&dir, &config(&host.uri(), &otlp_url, 1.0), &headers);

    let incoming = format!("00-{TRACE}-{BROWSER_SPAN}-01");
    let res = auth(service.port, "private-a", Some(&incoming)).await;
    assert_eq!(res.status(), 200);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let answer: serde_json::Value = res.json().await.unwrap();
    let signature = answer["auth"].as_str().unwrap().split_once(':').unwrap().1.to_owned();
    assert_eq!(auth(service.port, "private-denied", Some(&incoming)).await.status(), 403);
    // A route outside /auth (its id and span come from a middleware, /auth's from its handler).
    let health = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", service.port))
        .header("traceparent", &incoming)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let health_id = health.headers()["x-request-id"].to_str().unwrap().to_owned();

    // The host got the check's own span as its parent, in the browser's trace.
    let sent = host_traceparents(&host).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    let parts: Vec<&str> = sent[0].split('-').collect();
    assert_eq!(parts.len(), 4, "{}", sent[0]);
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE, "01"), "same trace, sampled: {}", sent[0]);
    let check_span = parts[2].to_owned();
    assert_ne!(check_span, BROWSER_SPAN, "the host's parent is the service's span, not the browser's");
    let tracestates: Vec<String> = host
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.headers.get("tracestate").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .collect();
    assert_eq!(tracestates[0], "vendor=opaque", "tracestate goes on with the trace");

    // Exported within the batch delay (1 s), over OTLP/HTTP protobuf.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (bodies, requests) = loop {
        let (bodies, requests) = exports(&otlp).await;
        let all = spans(&requests);
        let checks = all.iter().filter(|s| s.name == "session_check").count();
        let servers = all.iter().filter(|s| s.parent_span_id == hex::decode(BROWSER_SPAN).unwrap()).count();
        // Two exports at least: the first is refused (503) and sent again.
        if checks >= 2 && servers >= 3 && bodies.len() >= 2 {
            break (bodies, requests);
        }
        assert!(Instant::now() < deadline, "not exported in time: {all:#?}\n{}", service.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let all = spans(&requests);
    let hex_of = |b: &[u8]| hex::encode(b);

    // Protobuf, with the headers OTEL_EXPORTER_OTLP_HEADERS names (URL-decoded); the batch answered 503 was sent again.
    let received = otlp.received_requests().await.unwrap();
    for r in &received {
        let header =
            |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(header("content-type"), "application/x-protobuf");
        assert_eq!((header("x-collector-token"), header("x-tenant")), ("t=k".into(), "blue".into()));
    }
    assert!(received.len() >= 2 && received[1].body == received[0].body, "the refused batch, sent again");

    // The request span: a child of the browser's span, with app, kind and outcome.
    let request = all
        .iter()
        .find(|s| {
            hex_of(&s.parent_span_id) == BROWSER_SPAN && attribute(s, "outcome").as_deref() == Some("signed")
        })
        .unwrap_or_else(|| panic!("no signed request span: {all:#?}"));
    assert_eq!(hex_of(&request.trace_id), TRACE);
    assert_eq!(request.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(request.name, "POST /auth/{app}");
    assert_eq!(attribute(request, "http.route").as_deref(), Some("/auth/{app}"));
    assert_eq!(attribute(request, "app").as_deref(), Some("new"));
    assert_eq!(attribute(request, "kind").as_deref(), Some("private"));
    assert_eq!(attribute(request, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(request, "request_id"), Some(request_id), "the answer's X-Request-Id");
    let health = all
        .iter()
        .find(|s| s.name == "GET /healthz")
        .unwrap_or_else(|| panic!("no span for /healthz: {all:#?}"));
    assert_eq!(hex_of(&health.parent_span_id), BROWSER_SPAN);
    assert_eq!(attribute(health, "http.route").as_deref(), Some("/healthz"));
    assert_eq!(attribute(health, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(health, "request_id"), Some(health_id));
    let denied = all
        .iter()
        .find(|s| {
            hex_of(&s.parent_span_id) == BROWSER_SPAN
                && attribute(s, "outcome").as_deref() == Some("forbidden")
        })
        .unwrap_or_else(|| panic!("no denied request span: {all:#?}"));
    assert_eq!(attribute(denied, "http.response.status_code").as_deref(), Some("403"));

    // The session check's span: the request span's child, and the host's parent.
    let check = all
        .iter()
        .find(|s| hex_of(&s.span_id) == check_span)
        .unwrap_or_else(|| panic!("the host's parent span {check_span} was not exported: {all:#?}"));
    assert_eq!(check.name, "session_check");
    assert_eq!(check.parent_span_id, request.span_id, "the check is the request's child");
    assert_eq!(hex_of(&check.trace_id), TRACE);
    assert_eq!(check.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(attribute(check, "outcome").as_deref(), Some("allowed"));

    // Who exported it.
    let resource = requests[0].resource_spans[0].resource.as_ref().unwrap();
    let res_attr = |key: &str| {
        resource.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            }
        })
    };
    assert_eq!(res_attr("service.name").as_deref(), Some("pusher-dual-auth"));
    assert_eq!(res_attr("service.version").as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(res_attr("service.instance.id").as_deref(), Some("replica-under-test"));

    // Nothing secret in any byte exported.
    let raw: Vec<u8> = bodies.concat();
    let text = String::from_utf8_lossy(&raw);
    for secret in [SECRET, "C00KIE-TRACE", "T0KEN-TRACE", signature.as_str(), "1234.5678"] {
        assert!(!text.contains(secret), "{secret:?} was exported");
    }

    // The JSON log line of the refusal carries the trace id.
    let log = service.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("\"outcome\":\"forbidden\""))
        .unwrap_or_else(|| panic!("no refusal line in:\n{log}"));
    let parsed: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(parsed["trace_id"], TRACE, "{line}");
    assert!(service.stop(), "stops cleanly, flushing its spans");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_ratio_0_a_trace_started_here_exports_nothing_but_a_callers_sampled_one_is_kept() {
    let (host, otlp) = (host().await, receiver().await);
    let dir = TempDir::new("telemetry-ratio0");
    // The collector's base address: the service adds /v1/traces.
    let service = Service::start(&dir, &config(&host.uri(), &otlp.uri(), 0.0));

    assert_eq!(auth(service.port, "private-a", None).await.status(), 200);
    let sent = host_traceparents(&host).await;
    let parts: Vec<&str> = sent[0].split('-').collect();
    assert_eq!(parts.len(), 4, "the host still gets a traceparent: {sent:?}");
    assert_eq!(parts[3], "00", "not sampled: {}", sent[0]);
    let unsampled = parts[1].to_owned();
    assert!(unsampled.len() == 32 && unsampled != "0".repeat(32), "a real trace id: {unsampled}");

    // A caller that sampled its trace decides for it (parent-based sampling).
    let incoming = format!("00-{TRACE}-{BROWSER_SPAN}-01");
    assert_eq!(auth(service.port, "private-b", Some(&incoming)).await.status(), 200);
    assert!(service.stop(), "stops cleanly, flushing its spans");

    let (_, requests) = exports(&otlp).await;
    let all = spans(&requests);
    assert!(
        all.iter().all(|s| hex::encode(&s.trace_id) != unsampled),
        "a trace sampled out was exported: {all:#?}"
    );
    assert!(
        all.iter().any(|s| hex::encode(&s.trace_id) == TRACE && s.name == "session_check"),
        "the caller's sampled trace was not exported: {all:#?}"
    );
}

/// A receiver that takes every export, answering after `delay`.
async fn plain_receiver(delay: Duration) -> MockServer {
    let otlp = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200).set_delay(delay))
        .mount(&otlp)
        .await;
    otlp
}

fn spans_per_body(requests: &[ExportTraceServiceRequest]) -> Vec<usize> {
    requests.iter().map(|r| spans(std::slice::from_ref(r)).len()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_whose_batch_fills_sends_it_at_once_and_every_span_arrives() {
    let (host, otlp) = (host().await, plain_receiver(Duration::ZERO).await);
    let dir = TempDir::new("telemetry-full-batch");
    // One worker: its batch is full at 32 spans (max_queue_spans caps a batch too).
    let config = config(&host.uri(), &format!("{}/v1/traces", otlp.uri()), 1.0) + "max_queue_spans = 32\n";
    let service = Service::start(&dir, &config);
    for i in 0..40 {
        assert_eq!(auth(service.port, &format!("private-{i}"), None).await.status(), 200);
    }
    // Full batches go as they fill, not at the next second's sweep.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, requests) = exports(&otlp).await;
        if spans_per_body(&requests).contains(&32) {
            break;
        }
        assert!(Instant::now() < deadline, "no full batch of 32 sent: {:?}", spans_per_body(&requests));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(service.stop(), "stops cleanly, flushing its spans");
    let (_, requests) = exports(&otlp).await;
    let all = spans(&requests);
    // Two spans per authorization (the request's and its session check's), each once.
    assert_eq!(all.len(), 80, "bodies of {:?} spans", spans_per_body(&requests));
    let mut ids: Vec<&[u8]> = all.iter().map(|s| s.span_id.as_slice()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 80, "a span was sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_stalls_costs_dropped_spans_never_a_waiting_request() {
    // Each export is answered after 5 s: the queue (16 spans) fills behind the first.
    let (host, otlp) = (host().await, plain_receiver(Duration::from_secs(5)).await);
    let dir = TempDir::new("telemetry-stalled");
    let config = config(&host.uri(), &format!("{}/v1/traces", otlp.uri()), 1.0)
        + "max_queue_spans = 16\nexport_timeout_ms = 6000\n";
    let service = Service::start(&dir, &config);
    let started = Instant::now();
    for i in 0..60 {
        assert_eq!(auth(service.port, &format!("private-{i}"), None).await.status(), 200);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "60 authorizations took {took:?}: a request waited for the exporter"
    );
    // Counted and said, once the stalled export returns.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !service.log_text().contains("spans dropped") {
        assert!(Instant::now() < deadline, "no warning of dropped spans:\n{}", service.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(service.stop(), "stops cleanly");
    let (_, requests) = exports(&otlp).await;
    let exported = spans(&requests).len();
    assert!(exported < 120, "{exported} of 120 spans exported: nothing was dropped");
    assert!(exported >= 16, "{exported} exported: the first batch is sent");
}
