//! `[log]`: format and level.

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    format: LogFormat,
    level: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    #[default]
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

impl RawLog {
    pub fn validate(self) -> LogSettings {
        LogSettings { format: self.format, level: self.level.unwrap_or_else(|| "info".into()) }
    }
}
