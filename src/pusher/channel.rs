use super::{ProtocolError, quote};

/// Pusher's documented limit (channels.md). The official libraries check 200,
/// but a name the docs call invalid is not one we want to sign.
pub const MAX_CHANNEL_NAME_LEN: usize = 164;

/// The channel types that need authorization, decided by prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelKind {
    /// `private-` (including `private-cache-`).
    Private,
    /// `presence-` (including `presence-cache-`): needs a user id from the host.
    Presence,
    /// `private-encrypted-` (including `private-encrypted-cache-`): needs a master key.
    PrivateEncrypted,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Presence => "presence",
            Self::PrivateEncrypted => "private-encrypted",
        }
    }
}

/// A channel name that is well formed and needs authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelName {
    name: String,
    kind: ChannelKind,
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

impl ChannelName {
    pub fn parse(input: &str) -> Result<Self, ProtocolError> {
        let invalid = |reason| ProtocolError::InvalidChannelName { name: quote(input), reason };
        if input.is_empty() {
            return Err(invalid("it is empty"));
        }
        if input.len() > MAX_CHANNEL_NAME_LEN {
            return Err(invalid("it is longer than 164 characters"));
        }
        if input.starts_with('#') {
            return Err(invalid("names starting with '#' are reserved for Pusher"));
        }
        if !input.chars().all(is_channel_char) {
            return Err(invalid("only A-Z a-z 0-9 _ - = @ , . ; are allowed"));
        }
        // Longest prefix first: `private-encrypted-` also starts with `private-`.
        let (prefix, kind) = [
            ("private-encrypted-", ChannelKind::PrivateEncrypted),
            ("private-", ChannelKind::Private),
            ("presence-", ChannelKind::Presence),
        ]
        .into_iter()
        .find(|(p, _)| input.starts_with(p))
        .ok_or_else(|| ProtocolError::PublicChannel(quote(input)))?;
        if input.len() == prefix.len() {
            return Err(invalid("nothing follows the prefix"));
        }
        Ok(Self { name: input.to_owned(), kind })
    }

    pub fn kind(&self) -> ChannelKind {
        self.kind
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_prefix() {
        let cases = [
            ("private-foobar", ChannelKind::Private),
            ("private-cache-x", ChannelKind::Private),
            ("presence-room-1", ChannelKind::Presence),
            ("presence-cache-x", ChannelKind::Presence),
            ("private-encrypted-bla", ChannelKind::PrivateEncrypted),
            ("private-encrypted-cache-x", ChannelKind::PrivateEncrypted),
            ("private--azAZ9_=@,.;", ChannelKind::Private),
        ];
        for (name, kind) in cases {
            let c = ChannelName::parse(name).unwrap();
            assert_eq!((c.as_ref(), c.kind()), (name, kind));
        }
    }

    #[test]
    fn public_channels_are_refused() {
        for name in ["test", "my-channel", "cache-x", "privatefoo", "Private-foo", "presence"] {
            assert!(matches!(ChannelName::parse(name), Err(ProtocolError::PublicChannel(_))), "{name}");
        }
    }

    #[test]
    fn malformed_names_are_refused() {
        let long = format!("private-{}", "a".repeat(MAX_CHANNEL_NAME_LEN - 7));
        for name in [
            "",
            "private-",
            "presence-",
            "private-encrypted-",
            "#server-to-user-1",
            "private-a:b",
            "private-a b",
            "private-a\n",
            "private-ä",
            "private-a/b",
            "private-a#b",
            long.as_str(),
        ] {
            assert!(
                matches!(ChannelName::parse(name), Err(ProtocolError::InvalidChannelName { .. })),
                "{name:?}"
            );
        }
    }

    #[test]
    fn the_length_limit_is_inclusive() {
        let name = format!("private-{}", "a".repeat(MAX_CHANNEL_NAME_LEN - 8));
        assert_eq!(name.len(), MAX_CHANNEL_NAME_LEN);
        assert!(ChannelName::parse(&name).is_ok());
    }
}
