//! sockudo, a real Pusher-protocol server, with two apps: `old` (1001,
//! client events on) and `new` (1002, client events off). Needs `SOCKUDO_BIN`
//! (scripts/test builds it once with scripts/e2e-setup).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const MASTER: &str = "zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=";
pub const OTHER_MASTER: &str = "OHRXNUZRTG5pUTFzQlFGd3J3N3Q2VFZFc0paZDEweVk=";
pub const SECRETS: [&str; 4] = ["old-secret-5ab1", "new-secret-77c0", MASTER, OTHER_MASTER];

pub struct Sockudo {
    child: Child,
    pub port: u16,
    _dir: super::TempDir,
}

impl Drop for Sockudo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start() -> Sockudo {
    let bin = std::env::var("SOCKUDO_BIN").expect("SOCKUDO_BIN names the sockudo binary (see scripts/test)");
    let dir = super::TempDir::new("doctor-sockudo");
    let port = super::free_port();
    let app = |id: &str, key: &str, secret: &str, client_events: bool| {
        format!(
            "[[app_manager.array.apps]]\nid = \"{id}\"\nkey = \"{key}\"\nsecret = \"{secret}\"\nenabled = true\n\
             max_connections = 100\nenable_client_messages = {client_events}\nenable_user_authentication = true\n\
             max_client_events_per_second = 100\nmax_backend_events_per_second = 1000\n\
             max_read_requests_per_second = 1000\n"
        )
    };
    let config = format!(
        "host = \"127.0.0.1\"\nport = {port}\ndebug = false\nshutdown_grace_period = 1\n\
         [adapter]\ndriver = \"local\"\n[cache]\ndriver = \"memory\"\n[queue]\ndriver = \"memory\"\n\
         [metrics]\nenabled = false\n[rate_limiter]\nenabled = false\n[webhooks.batching]\nenabled = false\n\
         [app_manager]\ndriver = \"memory\"\n{}{}",
        app("1001", "old-key", SECRETS[0], true),
        app("1002", "new-key", SECRETS[1], false)
    );
    std::fs::write(dir.0.join("sockudo.toml"), config).unwrap();
    let child = Command::new(bin)
        .arg("--config")
        .arg(dir.0.join("sockudo.toml"))
        .current_dir(&dir.0)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.0.join("sockudo.log")).unwrap())
        .spawn()
        .expect("sockudo starts");
    wait_listening("sockudo", port, Duration::from_secs(30));
    Sockudo { child, port, _dir: dir }
}

pub fn wait_listening(what: &str, port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
