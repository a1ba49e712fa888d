//! The JSON body parser: never panics; duplicates never slip through.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pusher_dual_auth::{
    auth_request::{parse_channel_request, parse_user_request, Channels},
    pusher::ChannelName,
};

fuzz_target!(|data: &[u8]| {
    let json = Some("application/json");
    if let Ok(req) = parse_channel_request(json, data, 100) {
        if let Channels::Single(c) = &req.channels {
            assert!(ChannelName::parse(c.as_ref()).is_ok());
        }
        // What we accepted is a JSON object whose socket_id is a string.
        let v: serde_json::Value = serde_json::from_slice(data).expect("accepted bodies are JSON");
        assert_eq!(v["socket_id"].as_str(), Some(req.socket_id.as_ref()));
    }
    let _ = parse_user_request(json, data);
});
