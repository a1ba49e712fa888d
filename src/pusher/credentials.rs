use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;

/// The public app key that prefixes every `auth` string (`key:signature`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct AppKey(String);

impl AppKey {
    pub fn parse(input: &str) -> Result<Self, String> {
        if input.is_empty() {
            return Err("must not be empty".into());
        }
        if !input.chars().all(|c| c.is_ascii_graphic() && c != ':') {
            return Err("must be printable ASCII without ':' or spaces".into());
        }
        Ok(Self(input.to_owned()))
    }
}

impl AsRef<str> for AppKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The 32-byte encryption master key of an app (configured as base64).
pub struct MasterKey(SecretBox<[u8; 32]>);

impl MasterKey {
    pub fn from_base64(encoded: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| "is not valid base64 (standard alphabet, with padding)".to_string())?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| format!("must decode to 32 bytes, got {}", b.len()))?;
        Ok(Self(SecretBox::new(Box::new(key))))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// Everything needed to sign for one Pusher app. Signing functions take this
/// whole, so a route can only ever sign with the app it was configured for.
/// Printed (`check-config`) under the config's key names, secrets redacted.
#[derive(Debug, serde::Serialize)]
pub struct AppCredentials {
    pub key: AppKey,
    #[serde(serialize_with = "crate::config::print::redacted")]
    pub secret: SecretString,
    #[serde(
        rename = "encryption_master_key_base64",
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::config::print::redacted"
    )]
    pub master_key: Option<MasterKey>,
    /// The secret, ready to sign with.
    #[serde(skip)]
    pub(crate) signer: Signer,
}

impl AppCredentials {
    pub fn new(key: AppKey, secret: SecretString, master_key: Option<MasterKey>) -> Self {
        let signer = Signer::new(secret.expose_secret().as_bytes());
        Self { key, secret, master_key, signer }
    }
}

/// HMAC-SHA256 keyed with an app's secret once: the key's two padded blocks
/// are hashed here, not again for every signature. As secret as the secret
/// (wiped on drop, never printed).
#[derive(Clone)]
pub struct Signer(Hmac<Sha256>);

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Self(Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length"))
    }

    /// Lowercase hex of HMAC-SHA256(secret, message).
    pub fn hex(&self, message: &[u8]) -> String {
        self.hex_digits([message]).iter().map(|&b| char::from(b)).collect()
    }

    /// Lowercase hex of HMAC-SHA256(secret, the parts one after another): a
    /// message signed as it lies, without joining it into one buffer first.
    pub fn hex_digits<'a>(&self, parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 64] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        // Into a buffer rather than hex::encode's char-by-char String: on every authorization.
        let mut out = [0u8; 64];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut out).expect("32 bytes are 64 hex digits");
        out
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_must_be_32_bytes_of_base64() {
        assert!(MasterKey::from_base64("zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=").is_ok());
        let short = STANDARD.encode([1u8; 31]);
        let long = STANDARD.encode([1u8; 33]);
        assert!(MasterKey::from_base64(&short).unwrap_err().contains("got 31"));
        assert!(MasterKey::from_base64(&long).unwrap_err().contains("got 33"));
        assert!(MasterKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let key = MasterKey::from_base64("zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=").unwrap();
        let creds = AppCredentials::new(
            AppKey::parse("k").unwrap(),
            SecretString::from("supersecretvalue"),
            Some(key),
        );
        let dbg = format!("{creds:?}");
        assert!(!dbg.contains("supersecretvalue") && !dbg.contains("zyrm"), "{dbg}");
    }

    #[test]
    fn app_keys_cannot_contain_a_colon() {
        assert!(AppKey::parse("278d425bdf160c739803").is_ok());
        for bad in ["", "a:b", "a b", "ä"] {
            assert!(AppKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
