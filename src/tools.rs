//! Offline debugging tools for a migration: `sign` computes what the service
//! would answer; `verify` says which configured app (if any) produced an auth
//! string — the usual questions behind "Invalid signature" and "Invalid key in
//! subscription auth data".

use crate::{
    config::Settings,
    pusher::{
        ChannelName, PresenceMember, SocketId, UserData, UserId, UserInfo, authenticate_user,
        authorize_channel, hmac_sha256_matches,
    },
};
use anyhow::{Context, bail};
use secrecy::ExposeSecret;

#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// The configured app to sign for (e.g. old, new).
    #[arg(long)]
    pub app: String,
    #[arg(long)]
    pub socket_id: String,
    /// The channel; omit it to sign a user sign-in instead.
    #[arg(long)]
    pub channel: Option<String>,
    /// The user id (presence channels and sign-in).
    #[arg(long)]
    pub user_id: Option<String>,
    /// user_info as a JSON object.
    #[arg(long)]
    pub user_info: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    #[arg(long)]
    pub socket_id: String,
    #[arg(long)]
    pub channel: String,
    /// The auth string, "key:signature".
    #[arg(long)]
    pub auth: String,
    /// For presence channels: the exact channel_data string that was sent.
    #[arg(long)]
    pub channel_data: Option<String>,
}

pub fn sign(settings: &Settings, args: &SignArgs) -> anyhow::Result<String> {
    let app = settings.app(&args.app).with_context(|| {
        format!(
            "no app {:?} in the config (apps: {})",
            args.app,
            settings.apps.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let socket_id = SocketId::parse(&args.socket_id)?;
    let user_info = args
        .user_info
        .as_deref()
        .map(|j| {
            serde_json::from_str(j).context("--user-info must be JSON").and_then(|v| Ok(UserInfo::parse(v)?))
        })
        .transpose()?;
    let out = match &args.channel {
        Some(channel) => {
            let channel = ChannelName::parse(channel)?;
            let user_id = args.user_id.as_deref().map(UserId::parse).transpose()?;
            let member =
                user_id.as_ref().map(|user_id| PresenceMember { user_id, user_info: user_info.as_ref() });
            serde_json::to_string(&authorize_channel(
                &app.credentials,
                &socket_id,
                &channel,
                member.as_ref(),
            )?)?
        }
        None => {
            let id = args.user_id.as_deref().context("sign-in needs --user-id (or pass --channel)")?;
            let user = UserData { id: UserId::parse_for_signin(id)?, user_info, watchlist: None };
            serde_json::to_string(&authenticate_user(&app.credentials, &socket_id, &user))?
        }
    };
    Ok(out)
}

/// Returns the verdict; `Ok(true)` when a configured app produced the auth string.
pub fn verify(settings: &Settings, args: &VerifyArgs) -> anyhow::Result<(bool, String)> {
    let Some((key, signature)) = args.auth.rsplit_once(':') else {
        bail!("--auth must look like KEY:SIGNATURE")
    };
    let to_sign =
        crate::pusher::channel_string_to_sign(&args.socket_id, &args.channel, args.channel_data.as_deref());
    let signed_by: Vec<&str> = settings
        .apps
        .values()
        .filter(|a| {
            hmac_sha256_matches(
                a.credentials.secret.expose_secret().as_bytes(),
                to_sign.as_bytes(),
                signature,
            )
        })
        .map(|a| a.name.as_str())
        .collect();
    let key_owner =
        settings.apps.values().find(|a| a.credentials.key.as_ref() == key).map(|a| a.name.as_str());
    let hint = if args.channel.starts_with("presence-") && args.channel_data.is_none() {
        " (presence channels sign channel_data too: pass --channel-data)"
    } else {
        ""
    };
    Ok(match (key_owner, signed_by.as_slice()) {
        (Some(owner), [signer, ..]) if *signer == owner => {
            (true, format!("valid: signed by app \"{owner}\" with its own key and secret"))
        }
        (Some(owner), [signer, ..]) => (
            false,
            format!(
                "mismatch: the key belongs to app \"{owner}\" but the signature was made with the secret of app \
                 \"{signer}\": either the client used {owner}'s key with {signer}'s auth route, or the secrets of \
                 [apps.{owner}] and [apps.{signer}] are swapped in the config (`doctor` names a swap)"
            ),
        ),
        (Some(owner), []) => (
            false,
            format!(
                "invalid signature: the key belongs to app \"{owner}\" but no configured secret signs \
                 {to_sign:?}{hint} (wrong secret, or a different socket_id/channel)"
            ),
        ),
        (None, [signer, ..]) => (
            false,
            format!(
                "unknown key {key:?}, but the signature matches the secret of app \"{signer}\" (key and secret from different apps?)"
            ),
        ),
        (None, []) => {
            (false, format!("unknown key {key:?} and no configured app's secret signs {to_sign:?}{hint}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::from_toml(
            r#"
[session_check]
url = "http://127.0.0.1:1/check"
[apps.old]
app_id = "1"
key = "old-key"
secret = "old-secret"
[apps.new]
app_id = "2"
key = "278d425bdf160c739803"
secret = "7ad3773142a6692b25b8"
"#,
            None,
        )
        .unwrap()
    }

    fn sign_args(app: &str, channel: Option<&str>, user: Option<&str>) -> SignArgs {
        SignArgs {
            app: app.into(),
            socket_id: "1234.1234".into(),
            channel: channel.map(Into::into),
            user_id: user.map(Into::into),
            user_info: None,
        }
    }

    #[test]
    fn sign_matches_the_docs_vectors() {
        let s = settings();
        assert_eq!(
            sign(&s, &sign_args("new", Some("private-foobar"), None)).unwrap(),
            r#"{"auth":"278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"}"#
        );
        assert!(
            sign(&s, &sign_args("new", None, Some("12345")))
                .unwrap()
                .contains("4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba")
        );
        assert!(sign(&s, &sign_args("nope", Some("private-a"), None)).is_err());
        assert!(sign(&s, &sign_args("new", Some("presence-a"), None)).is_err());
    }

    #[test]
    fn verify_names_the_app_or_the_mix_up() {
        let s = settings();
        let args = |auth: &str| VerifyArgs {
            socket_id: "1234.1234".into(),
            channel: "private-foobar".into(),
            auth: auth.into(),
            channel_data: None,
        };
        let good = "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
        let (ok, msg) = verify(&s, &args(good)).unwrap();
        assert!(ok && msg.contains("\"new\""), "{msg}");
        // The new app's signature presented with the old app's key: the cross-route mistake.
        let crossed = good.replace("278d425bdf160c739803", "old-key");
        let (ok, msg) = verify(&s, &args(&crossed)).unwrap();
        assert!(!ok && msg.contains("belongs to app \"old\"") && msg.contains("app \"new\""), "{msg}");
        let (ok, msg) = verify(&s, &args("old-key:00")).unwrap();
        assert!(!ok && msg.contains("invalid signature"), "{msg}");
        let (ok, msg) = verify(&s, &args("who:00")).unwrap();
        assert!(!ok && msg.contains("unknown key"), "{msg}");
    }
}
