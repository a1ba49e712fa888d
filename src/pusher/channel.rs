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

/// The characters Pusher allows in channel names, as messages name them (a
/// macro, so `concat!` can build the messages from it).
#[macro_export]
macro_rules! name_chars {
    () => {
        "A-Z a-z 0-9 _ - = @ , . ;"
    };
}

/// The one channel-name character rule. Sign-in user ids (which become
/// `#server-to-user-<id>`), the rollout's user ids and the REST path segments
/// use it too.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

/// Whether `s` is 1 to `max` name characters.
pub fn is_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.chars().all(is_name_char)
}

/// Why `input` is not a well-formed channel name of any kind.
fn malformed(input: &str) -> Option<&'static str> {
    if input.is_empty() {
        Some("it is empty")
    } else if input.len() > MAX_CHANNEL_NAME_LEN {
        Some("it is longer than 164 characters")
    } else if input.starts_with('#') {
        Some("names starting with '#' are reserved for Pusher")
    } else if !input.chars().all(is_name_char) {
        Some(concat!("only ", name_chars!(), " are allowed"))
    } else {
        None
    }
}

/// Whether a well-formed name is a private or presence channel (by prefix).
fn needs_auth(name: &str) -> bool {
    name.starts_with("private-") || name.starts_with("presence-")
}

/// A channel name that is well formed and needs authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelName {
    name: String,
    kind: ChannelKind,
}

impl ChannelName {
    pub fn parse(input: &str) -> Result<Self, ProtocolError> {
        let invalid = |reason| ProtocolError::InvalidChannelName { name: quote(input), reason };
        if let Some(reason) = malformed(input) {
            return Err(invalid(reason));
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

/// A presence channel name or prefix (`presence-room`, `presence-room-*`; a
/// `*` at the end only): which channels a setting such as `[presence] bridge`
/// applies to. The part before the `*` follows the one name rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct PresencePattern(String);

impl PresencePattern {
    pub fn parse(input: &str) -> Result<Self, ProtocolError> {
        let stem = input.strip_suffix('*').unwrap_or(input);
        let invalid = |reason| ProtocolError::InvalidChannelName { name: quote(input), reason };
        if !stem.starts_with("presence-") {
            return Err(invalid("a presence channel name or prefix starts with presence-"));
        }
        if let Some(reason) = malformed(stem) {
            return Err(invalid(reason));
        }
        Ok(Self(input.to_owned()))
    }

    pub fn matches(&self, channel: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => channel.starts_with(prefix),
            None => channel == self.0,
        }
    }
}

/// A well-formed public channel name: anyone may subscribe (the rollout's
/// control channel, which every client of both apps joins).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct PublicChannelName(String);

impl PublicChannelName {
    pub fn parse(input: &str) -> Result<Self, ProtocolError> {
        let invalid = |reason| ProtocolError::InvalidChannelName { name: quote(input), reason };
        if let Some(reason) = malformed(input) {
            return Err(invalid(reason));
        }
        if needs_auth(input) {
            return Err(invalid("private- and presence- channels are not public"));
        }
        Ok(Self(input.to_owned()))
    }
}

impl AsRef<str> for PublicChannelName {
    fn as_ref(&self) -> &str {
        &self.0
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
    fn public_names_follow_the_same_rule() {
        for name in ["pusher-dual-auth-rollout", "cache-x", "a", "privatefoo", "Private-foo"] {
            assert_eq!(PublicChannelName::parse(name).unwrap().as_ref(), name);
        }
        let long = "a".repeat(MAX_CHANNEL_NAME_LEN + 1);
        for name in ["", "private-x", "presence-x", "private-encrypted-x", "#x", "a b", "ä", long.as_str()] {
            assert!(PublicChannelName::parse(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn presence_patterns_are_names_or_prefixes() {
        let p = PresencePattern::parse("presence-chat-*").unwrap();
        assert!(p.matches("presence-chat-42") && p.matches("presence-chat-") && !p.matches("presence-cha"));
        let exact = PresencePattern::parse("presence-room").unwrap();
        assert!(exact.matches("presence-room") && !exact.matches("presence-room-2"));
        assert!(PresencePattern::parse("presence-*").is_ok());
        let long = format!("presence-{}*", "a".repeat(MAX_CHANNEL_NAME_LEN));
        for bad in
            ["private-x", "presence-a*b", "presence-a**", "*", "presence-a b", "presence-ä", long.as_str()]
        {
            assert!(PresencePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_length_limit_is_inclusive() {
        let name = format!("private-{}", "a".repeat(MAX_CHANNEL_NAME_LEN - 8));
        assert_eq!(name.len(), MAX_CHANNEL_NAME_LEN);
        assert!(ChannelName::parse(&name).is_ok());
    }
}
