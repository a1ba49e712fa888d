//! Logging: human-readable on a terminal, JSON lines otherwise (or as
//! configured). `RUST_LOG` overrides the configured level. With `[telemetry]`,
//! OpenTelemetry traces too (`traces`), and each JSON line inside a request
//! carries its `trace_id`.

mod batches;
mod export;
mod otlp_body;
pub mod traces;

use crate::config::{LogSettings, TelemetrySettings};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub use traces::Traces;

pub fn init(settings: &LogSettings, telemetry: Option<&TelemetrySettings>) -> Traces {
    init_with_writer(settings, telemetry, std::io::stderr, std::io::stderr().is_terminal())
}

/// The same subscriber, writing elsewhere (the log-audit test captures it).
/// The returned guard flushes the spans not yet exported when dropped.
pub fn init_with_writer<W>(
    settings: &LogSettings,
    telemetry: Option<&TelemetrySettings>,
    writer: W,
    terminal: bool,
) -> Traces
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::new(directives),
        _ => EnvFilter::new(&settings.level),
    };
    let json = match settings.format {
        crate::config::LogFormat::Json => true,
        crate::config::LogFormat::Pretty => false,
        crate::config::LogFormat::Auto => !terminal,
    };
    if let Some(telemetry) = telemetry {
        // Traced: another subscriber (see `traces`). Without [telemetry] the one
        // below is all there is, exactly as before tracing existed.
        return traces::init(telemetry, filter, json, writer, terminal);
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    // try_init: tests and the demo may initialise more than once.
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    } else {
        // Colour only on a terminal: a redirected log (`demo 2> demo.log`) stays plain text.
        builder.compact().with_ansi(terminal).try_init()
    };
    Traces::off()
}
