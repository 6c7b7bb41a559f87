//! A TCP proxy on loopback for fault injection: the gateway talks to the cloud through it,
//! and a test cuts the link (every connection dropped, new ones refused at once), stalls it
//! (connections stay open but nothing passes, as with a dead route or a hung broker), slows
//! it (latency per chunk and a bandwidth cap: the cloud acknowledges slowly), resets it
//! (accept, then an RST — `SO_LINGER` 0 — at once or after some bytes), and restores it,
//! while the cloud broker and its subscribers stay up.
//!
//! Every accepted connection is time-stamped ([`Proxy::accepted_at`]), so a test can measure
//! the gaps between the gateway's reconnect attempts against its backoff bounds.
//! Changing the mode drops the connections of the previous mode (a stall keeps holding them
//! silent until the next change).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes pass.
    Up,
    /// Connections are closed; new ones are closed at once.
    Cut,
    /// Connections stay open but no byte passes either way.
    Stall,
    /// Bytes pass, each chunk (at most `chunk` bytes) delayed by `delay` and the
    /// throughput of each direction capped at `bytes_per_second`.
    Slow {
        /// Added latency per chunk.
        delay: Duration,
        /// Bandwidth cap per direction.
        bytes_per_second: u64,
        /// Largest chunk passed at once.
        chunk: usize,
    },
    /// New connections are accepted, pass `after` bytes from the gateway to the cloud (0:
    /// none), then are reset (RST, `SO_LINGER` 0) on the gateway's side.
    Reset {
        /// Bytes from the gateway let through before the reset.
        after: u64,
    },
}

/// A running proxy; stops with the test's runtime.
pub struct Proxy {
    /// The port to give the gateway.
    pub port: u16,
    mode: watch::Sender<(Mode, u64)>,
    accepted: Arc<AtomicU64>,
    times: Arc<Mutex<Vec<Instant>>>,
}

/// Holds the sockets until the mode changes, then drops them.
async fn hold_until_change(mode: &mut watch::Receiver<(Mode, u64)>) {
    let _ = mode.changed().await;
}

/// Copies `from` -> `to` in chunks of at most `chunk` bytes, sleeping `delay` plus the
/// time the bandwidth cap gives each chunk.
async fn slow_copy(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    delay: Duration,
    bytes_per_second: u64,
    chunk: usize,
) {
    let mut buf = vec![0u8; chunk.max(1)];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let pace = Duration::from_secs_f64(n as f64 / bytes_per_second.max(1) as f64);
        tokio::time::sleep(delay + pace).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Passes up to `limit` bytes gateway -> cloud (and everything back), then returns.
async fn copy_until(client: &mut TcpStream, server: &mut TcpStream, limit: u64) {
    let (mut client_rx, mut client_tx) = client.split();
    let (mut server_rx, mut server_tx) = server.split();
    let up = async {
        let mut left = limit;
        let mut buf = vec![0u8; 16 * 1024];
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = match client_rx.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if server_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
            left -= n as u64;
        }
    };
    let down = tokio::io::copy(&mut server_rx, &mut client_tx);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Resets the connection: `SO_LINGER` 0, then close, so the peer gets an RST.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

impl Proxy {
    /// Proxies a new loopback port to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (mode, modes) = watch::channel((Mode::Up, 0u64));
        let accepted = Arc::new(AtomicU64::new(0));
        let times = Arc::new(Mutex::new(Vec::new()));
        let (count, stamps) = (accepted.clone(), times.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                stamps.lock().expect("lock").push(Instant::now());
                count.fetch_add(1, Ordering::SeqCst);
                let mut mode = modes.clone();
                mode.mark_unchanged();
                tokio::spawn(async move {
                    let now = mode.borrow().0;
                    match now {
                        Mode::Cut => return,
                        Mode::Stall => {
                            let _held = client;
                            hold_until_change(&mut mode).await;
                            return;
                        }
                        Mode::Reset { after: 0 } => return reset(client),
                        Mode::Up | Mode::Slow { .. } | Mode::Reset { .. } => {}
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else { return };
                    let (mut client, mut server) = (client, server);
                    let pass = async {
                        match now {
                            Mode::Slow { delay, bytes_per_second, chunk } => {
                                let (client_rx, client_tx) = client.split();
                                let (server_rx, server_tx) = server.split();
                                tokio::select! {
                                    _ = slow_copy(client_rx, server_tx, delay, bytes_per_second, chunk) => {}
                                    _ = slow_copy(server_rx, client_tx, delay, bytes_per_second, chunk) => {}
                                }
                                false
                            }
                            Mode::Reset { after } => {
                                copy_until(&mut client, &mut server, after).await;
                                true
                            }
                            _ => {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                                false
                            }
                        }
                    };
                    let must_reset = tokio::select! {
                        must_reset = pass => must_reset,
                        _ = mode.changed() => false,
                    };
                    if must_reset {
                        reset(client);
                    } else if mode.borrow().0 == Mode::Stall {
                        // A stall keeps both ends open and silent until the next change.
                        let _held = (client, server);
                        hold_until_change(&mut mode).await;
                    }
                });
            }
        });
        Proxy { port, mode, accepted, times }
    }

    /// Sets the mode (connections of the previous mode are dropped).
    pub fn set(&self, mode: Mode) {
        self.mode.send_modify(|(m, generation)| {
            *m = mode;
            *generation += 1;
        });
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    /// Keeps connections open but lets nothing through.
    pub fn stall(&self) {
        self.set(Mode::Stall);
    }

    /// Lets bytes through again (connections from before are dropped).
    pub fn restore(&self) {
        self.set(Mode::Up);
    }

    /// Connections accepted so far (each a connection attempt of the gateway).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// When each connection was accepted, in order.
    pub fn accepted_at(&self) -> Vec<Instant> {
        self.times.lock().expect("lock").clone()
    }
}
