//! HMAC-SHA256 signatures for channel authorization and user sign-in.
//!
//! `channel_data` and `user_data` are serialized exactly once; those same bytes
//! are signed and returned, so the client and Pusher see what we signed.

use super::{
    AppCredentials, ChannelKind, ChannelName, MasterKey, ProtocolError, SocketId, UserId, UserInfo, Watchlist,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Lowercase hex of HMAC-SHA256(secret, message).
pub fn hmac_sha256_hex(secret: &[u8], message: &[u8]) -> String {
    super::credentials::Signer::new(secret).hex(message)
}

/// Whether `given_hex` is HMAC-SHA256(secret, message), compared in constant time
/// (by the hmac crate); malformed hex is simply "no".
pub fn hmac_sha256_matches(secret: &[u8], message: &[u8], given_hex: &str) -> bool {
    let Ok(given) = hex::decode(given_hex) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.verify_slice(&given).is_ok()
}

/// `base64(SHA-256(channel_name || master_key))`, the key pusher-js uses to
/// decrypt a private-encrypted channel.
pub fn shared_secret(channel: &ChannelName, master_key: &MasterKey) -> String {
    let mut hasher = Sha256::new();
    hasher.update(channel.as_ref().as_bytes());
    hasher.update(master_key.bytes());
    STANDARD.encode(hasher.finalize())
}

/// `key:signature` of the string to sign, given as its parts.
fn auth_string(creds: &AppCredentials, to_sign: &[&str]) -> String {
    let sig = creds.signer.hex_digits(to_sign.iter().map(|p| p.as_bytes()));
    let key = creds.key.as_ref();
    let mut auth = String::with_capacity(key.len() + 1 + sig.len());
    auth.push_str(key);
    auth.push(':');
    auth.push_str(std::str::from_utf8(&sig).expect("hex is ASCII"));
    auth
}

/// The identity the host app returned for a presence channel, borrowed from
/// it (nothing copied per authorization); serialized, it is the `channel_data`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PresenceMember<'a> {
    pub user_id: &'a UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_info: Option<&'a UserInfo>,
}

/// The body pusher-js expects from a channel authorization endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelAuth {
    pub auth: String,
    /// Presence only: a JSON *string* (double-encoded in the response).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<String>,
}

/// `socket_id:channel_name[:channel_data]`: what a channel authorization signs.
pub fn channel_string_to_sign(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    channel_parts(socket_id, channel, channel_data).concat()
}

/// The string to sign as its parts (signed without being joined).
fn channel_parts<'a>(socket_id: &'a str, channel: &'a str, channel_data: Option<&'a str>) -> [&'a str; 5] {
    match channel_data {
        Some(data) => [socket_id, ":", channel, ":", data],
        None => [socket_id, ":", channel, "", ""],
    }
}

/// Signs `socket_id:channel_name[:channel_data]` with the app's secret.
///
/// Presence channels require `member`; other kinds ignore it.
pub fn authorize_channel(
    creds: &AppCredentials,
    socket_id: &SocketId,
    channel: &ChannelName,
    member: Option<&PresenceMember<'_>>,
) -> Result<ChannelAuth, ProtocolError> {
    let shared_secret = match channel.kind() {
        ChannelKind::PrivateEncrypted => {
            let key = creds.master_key.as_ref().ok_or(ProtocolError::EncryptionNotConfigured)?;
            Some(shared_secret(channel, key))
        }
        _ => None,
    };
    let channel_data = match channel.kind() {
        ChannelKind::Presence => {
            let m = member.ok_or(ProtocolError::MissingUserId)?;
            Some(serde_json::to_string(m).expect("presence data always serializes"))
        }
        _ => None,
    };
    let to_sign = channel_parts(socket_id.as_ref(), channel.as_ref(), channel_data.as_deref());
    Ok(ChannelAuth { auth: auth_string(creds, &to_sign), channel_data, shared_secret })
}

/// The identity the host app returned for `pusher.signin()`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UserData {
    pub id: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_info: Option<UserInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchlist: Option<Watchlist>,
}

/// The body pusher-js expects from a user authentication endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignedUser {
    pub auth: String,
    /// A JSON *string*: exactly the bytes that were signed.
    pub user_data: String,
}

/// Signs `socket_id::user::user_data` with the app's secret.
pub fn authenticate_user(creds: &AppCredentials, socket_id: &SocketId, user: &UserData) -> SignedUser {
    let user_data = serde_json::to_string(user).expect("user data always serializes");
    let auth = auth_string(creds, &[socket_id.as_ref(), "::user::", &user_data]);
    SignedUser { auth, user_data }
}

#[cfg(test)]
mod tests {
    use super::super::AppKey;
    use super::*;
    use secrecy::SecretString;
    use serde_json::json;

    const DOCS_KEY: &str = "278d425bdf160c739803";
    const DOCS_SECRET: &str = "7ad3773142a6692b25b8";

    fn creds(secret: &str, master: Option<&str>) -> AppCredentials {
        AppCredentials::new(
            AppKey::parse(DOCS_KEY).unwrap(),
            SecretString::from(secret),
            master.map(|m| MasterKey::from_base64(m).unwrap()),
        )
    }
    fn sid(s: &str) -> SocketId {
        SocketId::parse(s).unwrap()
    }
    fn chan(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }
    fn member(id: &str, info: Option<serde_json::Value>) -> PresenceMember<'static> {
        PresenceMember {
            user_id: Box::leak(Box::new(UserId::parse(id).unwrap())),
            user_info: info.map(|i| &*Box::leak(Box::new(UserInfo::parse(i).unwrap()))),
        }
    }

    #[test]
    fn docs_private_channel_vector() {
        let auth =
            authorize_channel(&creds(DOCS_SECRET, None), &sid("1234.1234"), &chan("private-foobar"), None)
                .unwrap();
        assert_eq!(
            serde_json::to_string(&auth).unwrap(),
            r#"{"auth":"278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"}"#
        );
    }

    #[test]
    fn go_presence_vector_signs_the_returned_channel_data() {
        let m = member("10", Some(json!({"name": "Mr. Pusher"})));
        let auth = authorize_channel(
            &creds(DOCS_SECRET, None),
            &sid("1234.1234"),
            &chan("presence-foobar"),
            Some(&m),
        )
        .unwrap();
        assert_eq!(
            auth.channel_data.as_deref(),
            Some(r#"{"user_id":"10","user_info":{"name":"Mr. Pusher"}}"#)
        );
        assert_eq!(
            auth.auth,
            format!("{DOCS_KEY}:48dac51d2d7569e1e9c0f48c227d4b26f238fa68e5c0bb04222c966909c4f7c4")
        );
        // channel_data is a JSON string inside the JSON response.
        let body: serde_json::Value = serde_json::to_value(&auth).unwrap();
        assert!(body["channel_data"].is_string());
    }

    #[test]
    fn presence_without_user_info_vector() {
        let auth = authorize_channel(
            &creds(DOCS_SECRET, None),
            &sid("1234.1234"),
            &chan("presence-foobar"),
            Some(&member("10", None)),
        )
        .unwrap();
        assert_eq!(auth.channel_data.as_deref(), Some(r#"{"user_id":"10"}"#));
        assert!(auth.auth.ends_with(":f84515574e2196bb5d8554cc21e73bead300b66128c7d8c496723cb729a209c8"));
    }

    #[test]
    fn presence_requires_a_member() {
        let err =
            authorize_channel(&creds(DOCS_SECRET, None), &sid("1.1"), &chan("presence-x"), None).unwrap_err();
        assert_eq!(err, ProtocolError::MissingUserId);
    }

    #[test]
    fn private_channels_never_carry_channel_data() {
        let auth = authorize_channel(
            &creds(DOCS_SECRET, None),
            &sid("1234.1234"),
            &chan("private-foobar"),
            Some(&member("10", None)),
        )
        .unwrap();
        assert_eq!(auth.channel_data, None);
        assert!(auth.auth.ends_with(":58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"));
    }

    #[test]
    fn docs_corrected_presence_vector() {
        // The docs print "Mr. Channels" but a signature for "Mr. Pusher"; this is the value for the printed text.
        let to_sign = r#"1234.1234:presence-foobar:{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        assert_eq!(
            hmac_sha256_hex(DOCS_SECRET.as_bytes(), to_sign.as_bytes()),
            "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
        );
    }

    #[test]
    fn encrypted_channel_vector_with_shared_secret() {
        let c = creds(DOCS_SECRET, Some("zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU="));
        let auth = authorize_channel(&c, &sid("1234.1234"), &chan("private-encrypted-foobar"), None).unwrap();
        assert!(auth.auth.ends_with(":e6a18892d037c5d5e76a2265df4f086ffc38631605530dfd214aa5bff495f533"));
        assert_eq!(auth.shared_secret.as_deref(), Some("AWykI0LdIogmHc8RemnT6ERNSn3VSQeaf8imb9u8U/I="));
    }

    #[test]
    fn encrypted_channel_without_master_key_is_refused() {
        let err =
            authorize_channel(&creds(DOCS_SECRET, None), &sid("1.1"), &chan("private-encrypted-x"), None)
                .unwrap_err();
        assert_eq!(err, ProtocolError::EncryptionNotConfigured);
    }

    #[test]
    fn shared_secret_vectors_from_node_py_php() {
        let cases = [
            (
                "zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=",
                "private-encrypted-bla",
                "nlr49ISQHz91yS3cy/yWmW8wFMNeTnNL5tNHnbPJcLQ=",
            ),
            (
                "OHRXNUZRTG5pUTFzQlFGd3J3N3Q2VFZFc0paZDEweVk=",
                "private-encrypted-channel",
                "VmIsNZtCSteh8kazd2toc+ofhohBtUouQRSDtRvuyVI=",
            ),
            // php: key "a" * 32
            (
                "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=",
                "private-encrypted-channel-a",
                "Rp+wpkNpL89qhqco1JkIG31AVXyU8PUVJBr1B2MvdoA=",
            ),
        ];
        for (key, channel, expected) in cases {
            assert_eq!(
                shared_secret(&chan(channel), &MasterKey::from_base64(key).unwrap()),
                expected,
                "{channel}"
            );
        }
    }

    #[test]
    fn py_encrypted_and_presence_vectors() {
        let c = AppCredentials::new(AppKey::parse("foo").unwrap(), SecretString::from("bar"), None);
        let a = authorize_channel(&c, &sid("345.23"), &chan("private-channel"), None).unwrap();
        assert_eq!(a.auth, "foo:89955e77e1b40e33df6d515a5ecbba86a01dc816a5b720da18a06fd26f7d92ff");
        let m = member("fred", Some(json!({"key": "value"})));
        let a = authorize_channel(&c, &sid("345.43245"), &chan("presence-channel"), Some(&m)).unwrap();
        assert_eq!(a.auth, "foo:e80ba6439492c2113022c39297a87a948de14061cc67b5788e045645a68b8ccd");
        assert_eq!(
            hmac_sha256_hex(b"bar", b"345.23:private-encrypted-channel"),
            "fff0503dfe4929f5162efe4d1dacbce524b0d8e7e1331117a8651c0e74d369e3"
        );
    }

    #[test]
    fn docs_user_vectors() {
        let user = UserData { id: UserId::parse("12345").unwrap(), user_info: None, watchlist: None };
        let signed = authenticate_user(&creds(DOCS_SECRET, None), &sid("1234.1234"), &user);
        assert_eq!(signed.user_data, r#"{"id":"12345"}"#);
        assert_eq!(
            signed.auth,
            format!("{DOCS_KEY}:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba")
        );

        let user = UserData {
            id: UserId::parse("12345").unwrap(),
            user_info: Some(UserInfo::parse(json!({"name": "Ada"})).unwrap()),
            watchlist: Some(Watchlist::parse(json!(["1", "2"])).unwrap()),
        };
        let signed = authenticate_user(&creds(DOCS_SECRET, None), &sid("1234.1234"), &user);
        assert_eq!(signed.user_data, r#"{"id":"12345","user_info":{"name":"Ada"},"watchlist":["1","2"]}"#);
        assert!(signed.auth.ends_with(":bf18e7ad38d6ffa5c90f8675c217cae59f5aa13959d32c085b78a4c40fd2c60e"));
    }

    #[test]
    fn library_vectors_for_strings_to_sign() {
        let cases: &[(&str, &str, &str)] = &[
            ("tofu", "123.456:test", "efa6cf7644a0b35cba36aa0f776f3cbf7bb60e95ea2696bde1dbe8403b61bd7c"),
            ("tofu", "321.654:test", "f6ecb0a17d3e4f68aca28f1673197a7608587c09deb0208faa4b5519aee0a777"),
            ("tofu", "123.456:test1", "d5ab857f805433cb50562da96afa41688d7742a3c3a021ed15a4d991a4d8cf94"),
            ("tofu", "123.456:test2", "43affa6a09af1fb9ce1cadf176171346beaf7366673ec1e5920f68b3e97a466d"),
            (
                "tofu",
                r#"123.456:test:{"foo":"bar"}"#,
                "f41faf9ead2ea76772cc6b1168363057459f02499ae4d92e88229dc7f4efa2d4",
            ),
            (
                "tofu",
                "1.1:test:\"ą§¶™€łü€ß£\"",
                "2a229263e89d9c50524fd80c2e88be2843379f6931e28995e2cc214282c9db0c",
            ),
            (
                "tofu",
                r#"123.456::user::{"id":"45678"}"#,
                "f4b1fdeea7c93e32648c7230e32b172057c5623cace6cfce791c6e7035e0babd",
            ),
            (
                "tofu",
                r#"123.456::user::{"id":"55555","user_name":"test"}"#,
                "b8a9f173455903792ae2b788add0c4c78ad7372b3ae7fb5769479276a1993743",
            ),
            (
                "tofu",
                r#"1.1::user::{"id":"ą§¶™€łü€ß£"}"#,
                "620494cee53d6c568b49598313194088afda37218f0d059af03c0c898ed61ff4",
            ),
            (
                "tofu",
                r#"123.456:private-encrypted-bla:"foo""#,
                "962c48b78bf93d98ff4c92ee7dff04865821455b7b401e9d60a9e0a90af2c105",
            ),
            (
                "tofu",
                r#"123.456:bla:"foo""#,
                "013ad3da0d88e0df6ae0a8184bef50b9c3933f2344499e6e3d1ad67fad799e20",
            ),
            ("1", "123.456:test", "584828bd6e80b2d177d2b28fde07b8e170abf87ccb5a791a50c933711fb8eb28"),
            ("2", "123.456:test", "269bbf3f7625db4e0d0525b617efa5915c3ae667fd222dc8e4cb94bc531f26f2"),
            (
                "1",
                r#"123.456::user::{"id":"45678"}"#,
                "79bddf29fe8e2153dd5d8d569b3f45e5aeb26ae2eb4758879d844791b466cfa2",
            ),
            (
                "2",
                r#"123.456::user::{"id":"45678"}"#,
                "a542498ffa6faf6de7c17a8106b923c042319bd73acfd1d274df32e269b55d1f",
            ),
            (
                "thisisasecret",
                r#"12345.6789::user::{"id":"123","name":"John Smith"}"#,
                "0dddb208b53c7649f3fbbb86254a6e1986bc6f8b566423ea690c9ca773497373",
            ),
            (
                "secret",
                r#"1.1:presence-c1:{"money": "1.32"}"#,
                "7f2ae5922800a20b9615543ce7c8e7d1c97115d108939410825ea690f308a05f",
            ),
            (
                "thisisasecret",
                "1.1:testing_pusher-php",
                "751ccc12aeaa79d46f7c199bced5fa47527d3480b51fe61a0bd10438241bd52d",
            ),
            (
                "thisisasecret",
                "45055.28877557:-azAZ9_=@,.;",
                "d1c20ad7684c172271f92c108e11b45aef07499b005796ae1ec5beb924f361c4",
            ),
            (
                "thisisasecret",
                r#"45055.28877557:-azAZ9_=@,.;:{"user_id": "123"}"#,
                "3b3f1dcc4d7d2f95dd10ed05562397b3287b102d4cccfacbf30eed2f1ffa3d69",
            ),
            (
                "thisisasecret",
                r#"12345.6789::user::{"id":"123"}"#,
                "fc713f433deb729d0d96f9e26ef054285cbc3e833ebe840b93722a2fa16a6a18",
            ),
            (
                "secret",
                r#"12345.12345::user::{"id":"1234"}"#,
                "e4c63b82c1e1d0955901f6a29ca51b244155bafda93968bc5664010f5ba54a41",
            ),
            ("supersecret", "Hello!", "64e3f44166575febbc5de88c9476325ea7d4b3684752158d9fdb31fce34b980d"),
            (
                "12345678900000001",
                "1.1:test_channel",
                "02259dff9a2a3f71ea8ab29ac0c0c0ef7996c8f3fd3702be5533f30da7d7fed4",
            ),
        ];
        for (secret, to_sign, expected) in cases {
            assert_eq!(hmac_sha256_hex(secret.as_bytes(), to_sign.as_bytes()), *expected, "{to_sign}");
        }
    }

    #[test]
    fn non_ascii_user_info_is_signed_as_utf8_without_escapes() {
        // serde_json, like JSON.stringify, leaves non-ASCII unescaped.
        let m = member("1", Some(json!({"name": "Zoë"})));
        let a =
            authorize_channel(&creds(DOCS_SECRET, None), &sid("1.1"), &chan("presence-x"), Some(&m)).unwrap();
        let data = a.channel_data.unwrap();
        assert_eq!(data, r#"{"user_id":"1","user_info":{"name":"Zoë"}}"#);
        let expected = hmac_sha256_hex(DOCS_SECRET.as_bytes(), format!("1.1:presence-x:{data}").as_bytes());
        assert_eq!(a.auth, format!("{DOCS_KEY}:{expected}"));
    }
}
