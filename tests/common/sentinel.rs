//! A Redis that fails over, on loopback: a primary, replicas and three
//! sentinels (`redis-server --sentinel`, quorum 2), each a real process a test
//! can SIGKILL. Sentinels decide quickly: down after 1 s, failover timeout 5 s.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const MASTER: &str = "mymaster";

/// One redis-server process (a data node or a sentinel); killed when dropped.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
}

impl Node {
    /// A data node, memory only: a primary, or a replica of the one on `replica_of`.
    pub fn data(replica_of: Option<u16>) -> Self {
        let port = super::free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        // A replica's full sync writes an RDB file in its dir: the system's temp dir, not the work tree.
        cmd.arg("--dir").arg(std::env::temp_dir());
        cmd.args(["--dbfilename", &format!("pusher-dual-auth-test-{port}.rdb")]);
        // A replica syncs at once (not 5 s later, the default).
        cmd.args(["--repl-diskless-sync-delay", "0"]);
        if let Some(primary) = replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        Self::spawn(&mut cmd, port)
    }

    /// Until this (primary) has `n` replicas online.
    pub fn wait_for_replicas(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .query::<String>(&["INFO", "replication"])
            .is_ok_and(|i| i.matches("state=online").count() >= n)
        {
            assert!(Instant::now() < deadline, "{n} replica(s) not online within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// redis-server installed; if not, outside CI: skip (None), in CI: fail.
    pub fn installed() -> bool {
        if Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_err() {
            assert!(std::env::var("CI").is_err(), "redis-server is not installed (scripts/test installs it)");
            eprintln!("redis-server not installed: skipping");
            return false;
        }
        true
    }

    fn spawn(cmd: &mut Command, port: u16) -> Self {
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("redis-server starts");
        let node = Self { child: Some(child), port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.query::<String>(&["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        node
    }

    /// One command's answer.
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    /// SIGKILL: gone with its data, connections reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Primary (`data[0]` at start), replicas and three sentinels watching them as `MASTER`.
pub struct SentinelCluster {
    pub data: Vec<Node>,
    pub sentinels: Vec<Node>,
    _dir: super::TempDir,
}

impl SentinelCluster {
    /// With `replicas` replicas. None when redis-server is not installed outside CI; in CI that is a failure.
    pub fn start(replicas: usize) -> Option<Self> {
        if !Node::installed() {
            return None;
        }
        let dir = super::TempDir::new("sentinel");
        let primary = Node::data(None);
        let primary_port = primary.port;
        let mut data = vec![primary];
        data.extend((0..replicas).map(|_| Node::data(Some(primary_port))));
        let sentinels = (0..3)
            .map(|i| {
                let port = super::free_port();
                // Sentinel rewrites its config file: one of its own, writable.
                let conf = dir.0.join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\n\
                         sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                         sentinel down-after-milliseconds {MASTER} 1000\n\
                         sentinel failover-timeout {MASTER} 5000\n\
                         sentinel parallel-syncs {MASTER} 1\n",
                        dir.0.display()
                    ),
                )
                .unwrap();
                Node::spawn(Command::new("redis-server").arg(&conf).arg("--sentinel"), port)
            })
            .collect();
        let cluster = Self { data, sentinels, _dir: dir };
        cluster.wait_until_settled(replicas);
        Some(cluster)
    }

    /// Until the master has `replicas` replicas online, and every sentinel knows
    /// the master, them and the two other sentinels.
    pub fn wait_until_settled(&self, replicas: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let online =
                self.master_port().and_then(|p| self.data.iter().find(|n| n.port == p)).is_some_and(|m| {
                    m.query::<String>(&["INFO", "replication"])
                        .is_ok_and(|info| info.matches("state=online").count() >= replicas)
                });
            let settled = online
                && self.sentinels.iter().filter(|s| s.child.is_some()).all(|s| {
                    let Ok(info) =
                        s.query::<std::collections::HashMap<String, String>>(&["SENTINEL", "MASTER", MASTER])
                    else {
                        return false;
                    };
                    let n = |k: &str| info.get(k).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
                    n("num-slaves") >= replicas
                        && n("num-other-sentinels") == 2
                        && !info["flags"].contains("down")
                });
            if settled {
                return;
            }
            assert!(Instant::now() < deadline, "the sentinels did not settle within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `host:port` of each sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect()
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let addr: Vec<String> = s.query(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER]).ok()?;
            addr.get(1)?.parse().ok()
        })
    }

    /// The data node listening on `port`.
    pub fn node(&mut self, port: u16) -> &mut Node {
        self.data.iter_mut().find(|n| n.port == port).expect("a data node on that port")
    }
}
