//! Socket id, channel name and user id validation: never panics; anything
//! accepted cannot carry an injection separator.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pusher_dual_auth::pusher::{ChannelName, SocketId, UserId};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(id) = SocketId::parse(s) {
        let (a, b) = id.as_ref().split_once('.').expect("one dot");
        assert!(!a.is_empty() && !b.is_empty());
        assert!(a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()));
    }
    if let Ok(c) = ChannelName::parse(s) {
        assert!(c.as_ref().len() <= 164);
        assert!(!c.as_ref().contains(':') && !c.as_ref().starts_with('#'));
        assert!(c.as_ref().starts_with("private-") || c.as_ref().starts_with("presence-"));
    }
    if let Ok(u) = UserId::parse_for_signin(s) {
        assert!(UserId::parse(u.as_ref()).is_ok());
    }
});
