use super::{ProtocolError, quote};

/// A Pusher socket id: ASCII digits, a dot, ASCII digits (`^[0-9]+\.[0-9]+$`).
///
/// Anchored and ASCII-only on purpose: a `:` or newline in a socket id lets a
/// client make us sign a string for another channel (the 2015 socket_id
/// injection), and `\d` in Unicode-aware regexes accepts non-ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketId(String);

/// Generous: real ids look like `145814.20211781`.
const MAX_PART_DIGITS: usize = 20;

impl SocketId {
    pub fn parse(input: &str) -> Result<Self, ProtocolError> {
        let valid_part =
            |p: &str| !p.is_empty() && p.len() <= MAX_PART_DIGITS && p.bytes().all(|b| b.is_ascii_digit());
        match input.split_once('.') {
            Some((a, b)) if valid_part(a) && valid_part(b) => Ok(Self(input.to_owned())),
            _ => Err(ProtocolError::InvalidSocketId(quote(input))),
        }
    }
}

impl AsRef<str> for SocketId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_ids_are_accepted() {
        for id in ["1234.1234", "0.0", "145814.20211781", "1.1"] {
            assert_eq!(SocketId::parse(id).unwrap().as_ref(), id);
        }
    }

    #[test]
    fn injection_and_malformed_ids_are_rejected() {
        let bad = [
            "",
            ".",
            "1.",
            ".1",
            "1",
            "1.1:",
            ":1.1",
            ":\n1.1",
            "1.1\n:",
            "1.1\n",
            "\n1.1",
            " 1.1",
            "1.1 ",
            "1.1.1",
            "1,1",
            "-1.1",
            "+1.1",
            "1.1:private-other",
            "a.1",
            "1.b",
            "1.1\0",
            "١.1",                     // Arabic-Indic digit: `\d` in Unicode regexes would accept it
            "１.１",                   // full-width digits
            "123456789012345678901.1", // a part over 20 digits
        ];
        for id in bad {
            assert!(SocketId::parse(id).is_err(), "accepted {id:?}");
        }
    }

    #[test]
    fn error_message_quotes_and_escapes_the_input() {
        let err = SocketId::parse("1.1\n:x").unwrap_err().to_string();
        assert!(err.contains(r#""1.1\n:x""#), "{err}");
    }
}
