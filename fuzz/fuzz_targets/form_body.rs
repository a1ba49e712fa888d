//! The form parser (single and pusher-js-auth batch): never panics, and what it
//! accepts re-validates.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pusher_dual_auth::{
    auth_request::{parse_channel_request, parse_user_request, Channels},
    pusher::{ChannelName, SocketId},
};

fuzz_target!(|data: &[u8]| {
    let form = Some("application/x-www-form-urlencoded");
    if let Ok(req) = parse_channel_request(form, data, 100) {
        assert!(SocketId::parse(req.socket_id.as_ref()).is_ok());
        match req.channels {
            Channels::Single(c) => assert!(ChannelName::parse(c.as_ref()).is_ok()),
            Channels::Batch(items) => {
                assert!(!items.is_empty() && items.len() <= 100);
                for item in items {
                    assert_eq!(item.parsed.is_ok(), ChannelName::parse(&item.raw).is_ok());
                }
            }
        }
        assert!(!req.params.contains_key("socket_id") && !req.params.contains_key("channel_name"));
    }
    let _ = parse_user_request(form, data);
});
