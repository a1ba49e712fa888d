//! Micro-benchmarks of the pure protocol path: signing each channel kind and
//! parsing the bodies pusher-js sends. `cargo bench --bench protocol`
use criterion::{Criterion, criterion_group, criterion_main};
use pusher_dual_auth::{
    auth_request::parse_channel_request,
    pusher::{
        AppCredentials, AppKey, ChannelName, MasterKey, PresenceMember, SocketId, UserId, UserInfo,
        authorize_channel,
    },
};
use std::hint::black_box;

fn creds() -> AppCredentials {
    AppCredentials::new(
        AppKey::parse("278d425bdf160c739803").unwrap(),
        "7ad3773142a6692b25b8".to_string().into(),
        Some(MasterKey::from_base64("zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=").unwrap()),
    )
}

fn signing(c: &mut Criterion) {
    let creds = creds();
    let socket = SocketId::parse("145814.20211781").unwrap();
    let private = ChannelName::parse("private-orders-42").unwrap();
    let presence = ChannelName::parse("presence-room-42").unwrap();
    let encrypted = ChannelName::parse("private-encrypted-chat-42").unwrap();
    let user = UserId::parse("42").unwrap();
    let info = UserInfo::parse(serde_json::json!({"name": "Ada Lovelace", "role": "admin"})).unwrap();
    let member = PresenceMember { user_id: &user, user_info: Some(&info) };
    c.bench_function("sign private", |b| {
        b.iter(|| authorize_channel(&creds, &socket, black_box(&private), None))
    });
    c.bench_function("sign presence", |b| {
        b.iter(|| authorize_channel(&creds, &socket, black_box(&presence), Some(&member)))
    });
    c.bench_function("sign private-encrypted", |b| {
        b.iter(|| authorize_channel(&creds, &socket, black_box(&encrypted), None))
    });
}

fn parsing(c: &mut Criterion) {
    let form = Some("application/x-www-form-urlencoded");
    let single = b"socket_id=145814.20211781&channel_name=presence-room-42&team=7&locale=en";
    let batch =
        b"&socket_id=9.9&channel_name[0]=private-a&channel_name[1]=private-b&channel_name[2]=presence-c&x=y";
    c.bench_function("parse form (single)", |b| {
        b.iter(|| parse_channel_request(form, black_box(single), 100))
    });
    c.bench_function("parse form (batch of 3)", |b| {
        b.iter(|| parse_channel_request(form, black_box(batch), 100))
    });
    let json = br#"{"socket_id":"145814.20211781","channel_name":"private-orders-42","team":7}"#;
    c.bench_function("parse JSON (single)", |b| {
        b.iter(|| parse_channel_request(Some("application/json"), black_box(json), 100))
    });
}

criterion_group!(benches, signing, parsing);
criterion_main!(benches);
