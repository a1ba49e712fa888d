//! The host-answer parser and what is signed from it: never panics; allowed
//! answers only come from 2xx; signed channel_data/user_data are exactly the
//! JSON that is returned.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pusher_dual_auth::{
    pusher::{authenticate_user, authorize_channel, AppCredentials, AppKey, ChannelName, SocketId},
    session_check::{interpret, HostAnswer},
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = 100 + (u16::from_le_bytes([data[0], data[1]]) % 500);
    let body = &data[2..];
    let Ok(HostAnswer::Allowed(identity)) = interpret(status, body) else { return };
    assert!((200..300).contains(&status));
    let creds = AppCredentials::new(AppKey::parse("k").unwrap(), "s".to_string().into(), None);
    let socket = SocketId::parse("1.1").unwrap();
    if let Ok(member) = identity.presence_member() {
        let channel = ChannelName::parse("presence-x").unwrap();
        let auth = authorize_channel(&creds, &socket, &channel, Some(&member)).unwrap();
        let data = auth.channel_data.expect("presence has channel_data");
        let v: serde_json::Value = serde_json::from_str(&data).expect("channel_data is JSON");
        assert_eq!(v["user_id"].as_str(), Some(member.user_id.as_ref()));
    }
    if let Ok(user) = identity.user_data() {
        let signed = authenticate_user(&creds, &socket, &user);
        let v: serde_json::Value = serde_json::from_str(&signed.user_data).expect("user_data is JSON");
        assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()));
    }
});
