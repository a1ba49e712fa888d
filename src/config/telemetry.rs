//! `[telemetry]`: OpenTelemetry traces, opt-in. Without the section nothing of
//! it runs. With it, every public request continues the caller's W3C trace
//! (or starts one, sampled by `sample_ratio`), the session check sends its own
//! span's `traceparent` to the host, and, when `otlp_endpoint` is set, the
//! sampled spans are exported over OTLP/HTTP (protobuf). Read at start only.

use super::{
    fields::{ConfigError, http_url, in_range},
    print,
};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    otlp_endpoint: Option<String>,
    #[serde(default = "default_protocol")]
    protocol: String,
    #[serde(default = "default_ratio")]
    sample_ratio: f64,
    service_name: Option<String>,
    replica_id: Option<String>,
    #[serde(default = "default_timeout_ms")]
    export_timeout_ms: u64,
    #[serde(default = "default_queue")]
    max_queue_spans: usize,
}

fn default_protocol() -> String {
    "http/protobuf".into()
}
fn default_ratio() -> f64 {
    0.1
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_queue() -> usize {
    4_096
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TelemetrySettings {
    /// Where sampled spans go (`…/v1/traces`); None: traces are continued and
    /// propagated (the host and the logs get the trace id) but not exported.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "print_endpoint")]
    pub otlp_endpoint: Option<url::Url>,
    pub protocol: String,
    /// The share of traces started here that are sampled; a caller's
    /// `traceparent` decides for the traces it continues.
    pub sample_ratio: f64,
    pub service_name: String,
    /// `service.instance.id`; unset: the host name and process id (left out
    /// here, so replicas running one config print and digest it alike).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
    #[serde(rename = "export_timeout_ms", serialize_with = "print::ms")]
    pub export_timeout: Duration,
    /// Spans waiting for export at most; past that new ones are dropped (counted
    /// by the SDK), never waited for.
    pub max_queue_spans: usize,
}

fn print_endpoint<S: serde::Serializer>(u: &Option<url::Url>, s: S) -> Result<S::Ok, S::Error> {
    match u {
        Some(u) => print::url(u, s),
        None => s.serialize_none(),
    }
}

impl RawTelemetry {
    pub fn validate(self) -> Result<TelemetrySettings, ConfigError> {
        let otlp_endpoint = self
            .otlp_endpoint
            .filter(|e| !e.trim().is_empty())
            .map(|e| http_url("telemetry.otlp_endpoint", e.trim()))
            .transpose()?
            .map(|mut url| {
                // The collector's base address (`http://collector:4318`) means its traces path.
                if url.path() == "/" || url.path().is_empty() {
                    url.set_path("/v1/traces");
                }
                url
            });
        match self.protocol.as_str() {
            "http/protobuf" => {}
            "grpc" => {
                return Err(ConfigError::new(
                    "telemetry.protocol",
                    "\"grpc\" is not built in: use \"http/protobuf\" (an OpenTelemetry Collector takes both, on 4318 for HTTP)",
                ));
            }
            other => {
                return Err(ConfigError::new(
                    "telemetry.protocol",
                    format!("{other:?} is not a protocol: \"http/protobuf\""),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ConfigError::new("telemetry.sample_ratio", "must be between 0 and 1"));
        }
        in_range("telemetry.export_timeout_ms", self.export_timeout_ms, 100..=60_000)?;
        in_range("telemetry.max_queue_spans", self.max_queue_spans, 16..=1_000_000)?;
        let text = |key: &str, value: Option<String>| -> Result<Option<String>, ConfigError> {
            let Some(value) = value.map(|v| v.trim().to_owned()) else { return Ok(None) };
            if value.is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
                return Err(ConfigError::new(key, "must be 1 to 128 printable characters"));
            }
            Ok(Some(value))
        };
        Ok(TelemetrySettings {
            otlp_endpoint,
            protocol: self.protocol,
            sample_ratio: self.sample_ratio,
            service_name: text("telemetry.service_name", self.service_name)?
                .unwrap_or_else(|| "pusher-dual-auth".into()),
            replica_id: text("telemetry.replica_id", self.replica_id)?,
            export_timeout: Duration::from_millis(self.export_timeout_ms),
            max_queue_spans: self.max_queue_spans,
        })
    }
}

impl TelemetrySettings {
    /// `service.instance.id`: `replica_id`, or the host name and this process's
    /// id (distinct per replica, as a pod name is).
    pub fn replica(&self) -> String {
        self.replica_id.clone().unwrap_or_else(default_replica)
    }
}

fn default_replica() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}
