//! How validated settings print (`check-config`, `Settings::redacted_toml`):
//! each settings struct derives `Serialize` under its config key names, with
//! these for the fields that are not printed as they are held. A secret
//! (`SecretString`, `MasterKey`) has no plain `Serialize`, so a new secret
//! field does not compile until it says `redacted`.

use serde::Serializer;
use std::time::Duration;

/// A secret: always `"[redacted]"`.
pub fn redacted<T: ?Sized, S: Serializer>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("[redacted]")
}

/// A duration as whole milliseconds (`*_ms` keys).
pub fn ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// A duration as whole seconds (`*_secs` keys).
pub fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// A URL without its userinfo (a credential).
pub fn url<S: Serializer>(u: &url::Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::fields::redact_url(u))
}

/// Items by their `Display` (addresses, networks).
pub fn displayed<T: std::fmt::Display, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(ToString::to_string))
}
