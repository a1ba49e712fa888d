//! nginx serving TLS on loopback with a fresh self-signed certificate for
//! `localhost`: the TLS end of doctor's wss:// check and of https session checks.

use super::{TempDir, free_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NginxTls {
    child: Child,
    pub port: u16,
    /// The certificate (PEM), to trust through `SSL_CERT_FILE`.
    pub cert: PathBuf,
    _dir: TempDir,
}

impl NginxTls {
    /// `locations`: the server block's `location` directives.
    pub fn start(locations: &str) -> Self {
        let dir = TempDir::new("nginx-tls");
        let port = free_port();
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.0.join("cert.pem");
        std::fs::write(&cert, key.cert.pem()).unwrap();
        std::fs::write(dir.0.join("key.pem"), key.signing_key.serialize_pem()).unwrap();
        let d = dir.0.display();
        let config = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/cert.pem;\n\
             ssl_certificate_key {d}/key.pem;\n{locations}\n  }}\n}}\n"
        );
        std::fs::write(dir.0.join("nginx.conf"), config).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.0.join("nginx.conf"))
            .arg("-p")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, cert, _dir: dir }
    }
}

impl Drop for NginxTls {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its worker (a killed master
        // leaves the worker running, parented to init).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
