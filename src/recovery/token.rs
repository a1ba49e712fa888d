//! Recovery tokens: a channel's history goes only to a socket the host's
//! session check allowed on it. The token comes with the channel's
//! authorization answer (so recovery costs the host no second call), bound to
//! the app, socket id and channel, and good until its expiry; any replica
//! checks it with the app's secret. Pure.

use crate::pusher::{hmac_sha256_hex, hmac_sha256_matches};

fn signed(app: &str, socket_id: &str, channel: &str, expires: u64) -> String {
    format!("{app}\n{socket_id}\n{channel}\n{expires}")
}

/// A key of its own, derived from the app's secret: nothing signed with it can
/// stand for a Pusher signature, which uses the secret itself.
fn key(secret: &str) -> String {
    hmac_sha256_hex(secret.as_bytes(), b"pusher-dual-auth recovery token key")
}

/// `<expiry unix secs>.<hex HMAC>`.
pub fn issue(secret: &str, app: &str, socket_id: &str, channel: &str, expires: u64) -> String {
    let mac = hmac_sha256_hex(key(secret).as_bytes(), signed(app, socket_id, channel, expires).as_bytes());
    format!("{expires}.{mac}")
}

/// Why a token is not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    Expired,
    /// Another app's, socket's or channel's, or forged.
    Wrong,
}

pub fn check(
    secret: &str,
    app: &str,
    socket_id: &str,
    channel: &str,
    token: &str,
    now: u64,
) -> Result<(), Refused> {
    let (expires, mac) = token.split_once('.').ok_or(Refused::Malformed)?;
    let expires: u64 = expires.parse().map_err(|_| Refused::Malformed)?;
    if mac.len() != 64 {
        return Err(Refused::Malformed);
    }
    if !hmac_sha256_matches(key(secret).as_bytes(), signed(app, socket_id, channel, expires).as_bytes(), mac)
    {
        return Err(Refused::Wrong);
    }
    if expires < now {
        return Err(Refused::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_its_own_app_socket_and_channel_until_it_expires() {
        let t = issue("s", "old", "1.1", "private-a", 1_000);
        assert_eq!(check("s", "old", "1.1", "private-a", &t, 999), Ok(()));
        assert_eq!(check("s", "old", "1.1", "private-a", &t, 1_001), Err(Refused::Expired));
        for (secret, app, socket, channel) in [
            ("x", "old", "1.1", "private-a"),
            ("s", "new", "1.1", "private-a"),
            ("s", "old", "1.2", "private-a"),
            ("s", "old", "1.1", "private-b"),
        ] {
            assert_eq!(check(secret, app, socket, channel, &t, 999), Err(Refused::Wrong));
        }
        // A later expiry cannot be written in: it is signed.
        let stretched = t.replacen("1000.", "9999.", 1);
        assert_eq!(check("s", "old", "1.1", "private-a", &stretched, 999), Err(Refused::Wrong));
        for bad in ["", "1000", "x.y", "1000.abc"] {
            assert_eq!(check("s", "old", "1.1", "private-a", bad, 999), Err(Refused::Malformed), "{bad}");
        }
    }
}
