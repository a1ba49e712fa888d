//! The span exporter: each batch the SDK's `BatchSpanProcessor` hands over is
//! written as one OTLP/HTTP protobuf body (`otlp_body`) and POSTed to
//! `otlp_endpoint` by the service's reqwest client, on a runtime of its own
//! thread (`otlp-export`): an export never runs on a worker that answers
//! requests. What opentelemetry-otlp's HTTP exporter does around the body is
//! kept: `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (or `OTEL_EXPORTER_OTLP_HEADERS`)
//! as request headers, and a retry, within the export timeout, of what a
//! collector says is passing (429, 502, 503, 504, `Retry-After` heeded) or a
//! connection that failed.

use super::otlp_body::{EncodedResource, export_request};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct OtlpHttp {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    endpoint: url::Url,
    headers: HeaderMap,
    timeout: Duration,
    resource: EncodedResource,
}

impl OtlpHttp {
    pub fn new(endpoint: url::Url, timeout: Duration) -> Self {
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
        let variable = ["OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"]
            .into_iter()
            .find_map(|name| std::env::var(name).ok());
        let mut headers = variable.as_deref().map(headers_from_env).unwrap_or_default();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        Self {
            client: crate::outbound::http_client(timeout),
            runtime,
            endpoint,
            headers,
            timeout,
            resource: EncodedResource::default(),
        }
    }
}

impl SpanExporter for OtlpHttp {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = bytes::Bytes::from(export_request(&self.resource, &batch));
        drop(batch);
        let send = post(self.client.clone(), self.endpoint.clone(), self.headers.clone(), body, self.timeout);
        match self.runtime.spawn(send).await {
            Ok(result) => result.map_err(OTelSdkError::InternalFailure),
            Err(e) => Err(OTelSdkError::InternalFailure(e.to_string())),
        }
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

/// One export: sent, and sent again while the collector says it is passing and time remains.
async fn post(
    client: reqwest::Client,
    url: url::Url,
    headers: HeaderMap,
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
        if Instant::now() + wait >= deadline {
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

    #[test]
    fn headers_from_the_environment_are_url_decoded_and_bad_pairs_left_out() {
        let h = headers_from_env(" api-key = a%20b%2Cc ,x-tenant=t1,,novalue=,=v,bad name=1,plain");
        assert_eq!(h.get("api-key").unwrap(), "a b,c");
        assert_eq!(h.get("x-tenant").unwrap(), "t1");
        assert_eq!(h.len(), 2, "{h:?}");
    }
}
