//! An attacker's idle sockets: TCP connections to the device port that never send a byte,
//! each reopened as soon as the gateway closes it, from chosen loopback source addresses
//! (127.0.0.0/8 is all loopback on Linux, so one machine has many "hosts").

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Idle sockets running on their own runtime until dropped.
pub struct IdleSockets {
    /// Connections made (each socket counts once per reopen).
    pub opened: Arc<AtomicU64>,
    /// Connections the gateway closed.
    pub closed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl IdleSockets {
    /// `per_source` sockets from each of `sources` to 127.0.0.1:`port`.
    pub fn start(port: u16, sources: &[Ipv4Addr], per_source: usize) -> IdleSockets {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("attacker runtime");
        let opened = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        for source in sources {
            for _ in 0..per_source {
                let (opened, closed, stop, source) = (opened.clone(), closed.clone(), stop.clone(), *source);
                runtime.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(socket) = tokio::net::TcpSocket::new_v4() else { return };
                        if socket.bind(SocketAddr::from((source, 0))).is_err() {
                            return;
                        }
                        let Ok(mut stream) = socket.connect(target).await else {
                            // A full accept queue: try again a little later.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        };
                        opened.fetch_add(1, Ordering::Relaxed);
                        let mut byte = [0u8; 1];
                        // Never writes; returns when the gateway closes the socket.
                        let _ = stream.read(&mut byte).await;
                        closed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
        IdleSockets { opened, closed, stop, runtime: Some(runtime) }
    }

    /// Connections made so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Connections the gateway closed so far.
    pub fn closed(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Drop for IdleSockets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
