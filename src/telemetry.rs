//! Logging: human-readable on a terminal, JSON lines otherwise (or as
//! configured). `RUST_LOG` overrides the configured level.

use crate::config::LogSettings;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init(settings: &LogSettings) {
    init_with_writer(settings, std::io::stderr, std::io::stderr().is_terminal());
}

/// The same subscriber, writing elsewhere (the log-audit test captures it).
pub fn init_with_writer<W>(settings: &LogSettings, writer: W, terminal: bool)
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    // try_init: tests and the demo may initialise more than once.
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    } else {
        // Colour only on a terminal: a redirected log (`demo 2> demo.log`) stays plain text.
        builder.compact().with_ansi(terminal).try_init()
    };
}
