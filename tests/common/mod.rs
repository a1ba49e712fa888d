//! Shared by the test binaries that run the real `pusher-dual-auth` binary:
//! its path, free ports, and spawning it with a config and waiting until ready.
#![allow(dead_code)] // each test binary uses its own subset

pub mod edit;
pub mod host;
pub mod nginx_tls;
pub mod proxy;
pub mod redis_server;
pub mod sentinel;
pub mod sockudo;

pub use edit::Edit;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The binary under test; `DUAL_AUTH_BIN` points the same tests at another build
/// (e.g. a release binary, or an older one to record "before" figures).
pub fn bin() -> PathBuf {
    std::env::var_os("DUAL_AUTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pusher-dual-auth")))
}

/// A number from the environment (to size a test up for a benchmark run), or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A port free now, never handed out before in this process: the tests of one binary
/// run in parallel, and the kernel may give a port just released to the next caller,
/// which would put two tests' servers on one port (one of them then answers the
/// other's requests).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A scratch directory for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Unique per call: the tests of one binary run in parallel in one process.
    pub fn new(name: &str) -> Self {
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dual-auth-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running service; killed when dropped.
pub struct Service {
    pub child: Child,
    pub port: u16,
    pub admin: u16,
    pub log: PathBuf,
}

impl Service {
    /// Writes `config` (with `{port}` and `{admin}` filled in) into `dir`, starts
    /// the binary on it and waits until `/readyz` answers on the admin port.
    pub fn start(dir: &TempDir, config: &str) -> Self {
        Self::start_with_env(dir, config, &[])
    }

    /// As `start`, with `env` added to the service's environment. A port taken between
    /// `free_port` and the service's bind (by a connection's ephemeral port, or another
    /// program) is a service that exits at once: it is started again on other ports.
    pub fn start_with_env(dir: &TempDir, config: &str, env: &[(&str, &str)]) -> Self {
        (0..3)
            .find_map(|_| Self::try_start(dir, config, env))
            .expect("the service started within three pairs of ports")
    }

    /// One start; `None` if the service exited because a port was already in use.
    fn try_start(dir: &TempDir, config: &str, env: &[(&str, &str)]) -> Option<Self> {
        let (port, admin) = (free_port(), free_port());
        let path = dir.0.join("config.toml");
        let config = config.edit("{port}", &port.to_string()).edit("{admin}", &admin.to_string());
        std::fs::write(&path, config).unwrap();
        let log = dir.0.join("service.log");
        let child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the service starts");
        let mut service = Self { child, port, admin, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        // An answer, not a connect: the socket accepts as soon as it is bound,
        // before the server (and the config watcher) runs. And an answer from this
        // child: it is still running once the answer came.
        loop {
            let answered = http_get(admin, "/readyz").starts_with("HTTP/1.1 200");
            if let Ok(Some(status)) = service.child.try_wait() {
                let log = service.log_text();
                if log.contains("Address already in use") {
                    return None;
                }
                panic!("the service exited ({status}) before it was ready: {log}");
            }
            if answered {
                return Some(service);
            }
            assert!(Instant::now() < deadline, "service did not start: {}", service.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (current RSS, peak RSS) in KiB, from /proc.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// One metric's value from the admin listener's /metrics (0 when absent).
    pub fn metric(&self, line_prefix: &str) -> f64 {
        let text = http_get(self.admin, "/metrics");
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// SIGTERM, and whether it exited cleanly.
    pub fn stop(mut self) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let ok = self.child.wait().map(|s| s.success()).unwrap_or(false);
        std::mem::forget(self);
        ok
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking GET on loopback; the body as text ("" on any error).
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A REST API that sends its headers and part of the body, then hangs up: the
/// HTTP client's error for it names the (signed) URL unless the service strips it.
pub async fn truncating_rest_api() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{").await;
        }
    });
    format!("http://{addr}")
}
