//! A throwaway redis-server on a loopback port, which a test can kill, start
//! again on the same port, freeze (SIGSTOP, as a network partition looks: the
//! socket stays open and nothing answers) and thaw.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Where an append-only file keeps the data across a kill (None: memory only).
    dir: Option<super::TempDir>,
}

impl RedisServer {
    /// Memory only. None when redis-server is not installed outside CI; in CI that is a failure.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// Durable as production runs it: every write in an fsynced append-only
    /// file, so a killed and restarted Redis still has what it acknowledged.
    pub fn start_persistent() -> Option<Self> {
        Self::start_with(Some(super::TempDir::new("redis")))
    }

    fn start_with(dir: Option<super::TempDir>) -> Option<Self> {
        let mut redis = Self { child: None, port: super::free_port(), dir };
        if Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_err() {
            assert!(std::env::var("CI").is_err(), "redis-server is not installed (scripts/test installs it)");
            eprintln!("redis-server not installed: skipping");
            return None;
        }
        redis.restart();
        Some(redis)
    }

    /// Starts it (again) on its port, and waits until it answers PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
        match &self.dir {
            Some(dir) => cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"]).arg(&dir.0),
            None => cmd.args(["--appendonly", "no"]),
        };
        let child = cmd.stdout(Stdio::null()).spawn().expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// SIGKILL: the process and its data are gone, connections reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([name, &pid]).status().unwrap().success());
    }

    /// SIGSTOP: connections stay open and nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT"); // a stopped process ignores SIGKILL until continued
        }
        self.kill();
    }
}
