//! Secrets given inline or as a file (`secret` / `secret_file`), read by one
//! reader that also records every file it was pointed at: what a reload watches.

use super::fields::ConfigError;
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;

#[derive(Default)]
pub(crate) struct SecretReader {
    pub files: Vec<PathBuf>,
}

impl SecretReader {
    /// `key` or `<key>_file`; one of them is required.
    pub fn required(
        &mut self,
        key: &str,
        inline: Option<SecretString>,
        file: Option<PathBuf>,
    ) -> Result<SecretString, ConfigError> {
        let file_key = format!("{key}_file");
        self.optional(key, &file_key, inline, file)?
            .ok_or_else(|| ConfigError::new(key, format!("missing: set `{key}` or `{file_key}`")))
    }

    /// An optional secret whose file variant has its own key name.
    pub fn optional(
        &mut self,
        key: &str,
        file_key: &str,
        inline: Option<SecretString>,
        file: Option<PathBuf>,
    ) -> Result<Option<SecretString>, ConfigError> {
        let value = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(key, format!("set either `{key}` or `{file_key}`, not both")));
            }
            (Some(s), None) => s,
            (None, Some(path)) => {
                self.files.push(path.clone());
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::new(file_key, format!("cannot read {}: {e}", path.display()))
                })?;
                SecretString::from(text.trim().to_owned())
            }
            (None, None) => return Ok(None),
        };
        if value.expose_secret().is_empty() {
            return Err(ConfigError::new(key, "must not be empty"));
        }
        Ok(Some(value))
    }
}
