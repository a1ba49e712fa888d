//! A TCP proxy in front of one app (its WebSocket and REST API alike), that a
//! test can cut hard (every connection reset, new ones refused) or turn into a
//! black hole (connections accepted and kept, nothing passed either way: a
//! network partition), and restore.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    task::JoinHandle,
};

const PASS: u8 = 0;
const HOLE: u8 = 1;

/// A black hole's connection, kept open until restored.
type Held = Arc<Mutex<Option<TcpStream>>>;
type Open = (JoinHandle<()>, Held);

pub struct Proxy {
    pub port: u16,
    /// Where new connections go (`retarget`: an endpoint whose address moved).
    target: Arc<std::sync::atomic::AtomicU16>,
    mode: Arc<AtomicU8>,
    /// Every open connection: its task (aborted: the sockets drop) and, in a black hole, its socket.
    open: Arc<Mutex<Vec<Open>>>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    pub async fn start(target: u16) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Arc::new(Self {
            port,
            target: Arc::new(target.into()),
            mode: Arc::new(AtomicU8::new(PASS)),
            open: Arc::default(),
            accept: Mutex::new(None),
        });
        proxy.listen(listener);
        proxy
    }

    fn listen(self: &Arc<Self>, listener: TcpListener) {
        let me = self.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_zero_linger(); // a drop is a reset
                let (mode, target) = (me.mode.clone(), me.target.load(Ordering::SeqCst));
                let held = Arc::new(Mutex::new(None));
                let slot = held.clone();
                let task = tokio::spawn(async move {
                    if mode.load(Ordering::SeqCst) == HOLE {
                        *slot.lock().unwrap() = Some(client);
                        return; // kept open by the slot, never answered
                    }
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)).await else { return };
                    pipe(client, upstream, mode).await;
                });
                me.open.lock().unwrap().push((task, held));
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    /// New connections go to `target`; open ones stay where they were (a
    /// managed endpoint whose address moved while the old server lives on).
    pub fn retarget(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
    }

    /// Every connection reset, new ones refused (the port closed).
    pub fn cut(&self) {
        if let Some(t) = self.accept.lock().unwrap().take() {
            t.abort();
        }
        self.drop_all();
    }

    /// Connections stay open and nothing passes, new ones too.
    pub fn black_hole(&self) {
        self.mode.store(HOLE, Ordering::SeqCst);
    }

    /// Passes again: listens again after a cut; a black hole's held connections are reset.
    pub async fn restore(self: &Arc<Self>) {
        self.mode.store(PASS, Ordering::SeqCst);
        self.drop_all();
        if self.accept.lock().unwrap().is_none() {
            let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
            let listener = loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            self.listen(listener);
        }
    }

    fn drop_all(&self) {
        for (task, held) in self.open.lock().unwrap().drain(..) {
            task.abort();
            held.lock().unwrap().take();
        }
    }
}

/// Copies both ways while the mode passes; in a black hole, stops copying (and holds).
async fn pipe(client: TcpStream, upstream: TcpStream, mode: Arc<AtomicU8>) {
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let copy = |mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mode: Arc<AtomicU8>| async move {
        let mut buf = vec![0u8; 16384];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return (from, to),
                Ok(n) => n,
            };
            while mode.load(Ordering::SeqCst) == HOLE {
                tokio::time::sleep(Duration::from_millis(20)).await; // swallowed: held until restored or dropped
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return (from, to);
            }
        }
    };
    // One task for both ways: aborting it drops every half, and the client socket resets.
    let _ = tokio::join!(copy(cr, uw, mode.clone()), copy(ur, cw, mode));
}
