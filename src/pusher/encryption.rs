//! End-to-end encrypted channels (`private-encrypted-`): the payload a server
//! library publishes, `{"nonce":b64(24 bytes),"ciphertext":b64(secretbox)}`,
//! sealed with NaCl secretbox (XSalsa20-Poly1305) under the channel's shared
//! secret. The Pusher server never sees the key; only the two ends do.

use super::{ChannelName, MasterKey};
use base64::{Engine, engine::general_purpose::STANDARD};
use crypto_secretbox::{KeyInit, XSalsa20Poly1305, aead::Aead};
use sha2::{Digest, Sha256};

/// `SHA-256(channel_name || master_key)`: the secretbox key (what
/// `shared_secret` hands a client, base64-encoded).
fn channel_key(channel: &ChannelName, master_key: &MasterKey) -> XSalsa20Poly1305 {
    let mut hasher = Sha256::new();
    hasher.update(channel.as_ref().as_bytes());
    hasher.update(master_key.bytes());
    let key: [u8; 32] = hasher.finalize().into();
    XSalsa20Poly1305::new(&key.into())
}

/// The `data` a server library publishes to an encrypted channel, sealed
/// with `nonce` (24 bytes; random for every event in real use).
pub fn seal(channel: &ChannelName, master_key: &MasterKey, nonce: &[u8; 24], plaintext: &[u8]) -> String {
    let ciphertext = channel_key(channel, master_key)
        .encrypt(nonce.into(), plaintext)
        .expect("secretbox seals any length");
    serde_json::json!({"nonce": STANDARD.encode(nonce), "ciphertext": STANDARD.encode(ciphertext)})
        .to_string()
}

/// 24 bytes from the OS's random source: a fresh nonce for every event.
pub fn random_nonce() -> [u8; 24] {
    use crypto_secretbox::{AeadCore, aead::OsRng};
    XSalsa20Poly1305::generate_nonce(&mut OsRng).into()
}

/// Opens an event's `data` with a client's `shared_secret` (base64), as
/// pusher-js does. `None` when it is not a sealed payload or does not open.
pub fn open(shared_secret_b64: &str, data: &str) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Sealed {
        nonce: String,
        ciphertext: String,
    }
    let sealed: Sealed = serde_json::from_str(data).ok()?;
    let key: [u8; 32] = STANDARD.decode(shared_secret_b64).ok()?.try_into().ok()?;
    let nonce: [u8; 24] = STANDARD.decode(sealed.nonce).ok()?.try_into().ok()?;
    let ciphertext = STANDARD.decode(sealed.ciphertext).ok()?;
    XSalsa20Poly1305::new(&key.into()).decrypt(&nonce.into(), ciphertext.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pusher::shared_secret;

    const NODE_MASTER: &str = "zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=";

    #[test]
    fn seals_the_recorded_vector_and_opens_it_with_the_shared_secret() {
        // pusher-protocol.md vector 14: zero nonce, `{"hello":"world"}`.
        let channel = ChannelName::parse("private-encrypted-foobar").unwrap();
        let master = MasterKey::from_base64(NODE_MASTER).unwrap();
        let data = seal(&channel, &master, &[0; 24], br#"{"hello":"world"}"#);
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["ciphertext"], "62V7IcpDENWz8Bj9I2iUyundNWKZeVcNyQVzoeNPeeQj");
        assert_eq!(v["nonce"], STANDARD.encode([0u8; 24]));
        assert_eq!(
            open(&shared_secret(&channel, &master), &data).as_deref(),
            Some(&br#"{"hello":"world"}"#[..])
        );
    }

    #[test]
    fn opens_the_go_library_vector() {
        // pusher-http-go: key = SHA-256("private-encrypted-bla" || "This is a string that is 32 chars").
        let key = "004831f99d2a4e86723e893caded3a2897deeddbed9514fe9497dcddc52bd50b";
        let key = STANDARD.encode(hex::decode(key).unwrap());
        let data =
            r#"{"nonce":"sjklahvpWWQgAjTx5FfYHCCxd2AmaL9T","ciphertext":"zoDEe8dA3nDXKsybAWce/hXGW4szJw=="}"#;
        assert_eq!(open(&key, data).as_deref(), Some(&b"Hello!"[..]));
    }

    #[test]
    fn another_master_key_does_not_open_it() {
        let channel = ChannelName::parse("private-encrypted-foobar").unwrap();
        let master = MasterKey::from_base64(NODE_MASTER).unwrap();
        let other = MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let data = seal(&channel, &master, &[1; 24], b"x");
        assert_eq!(open(&shared_secret(&channel, &other), &data), None);
        assert_eq!(open(&shared_secret(&channel, &master), "not json"), None);
    }
}
