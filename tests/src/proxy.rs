//! A TCP proxy on loopback for fault injection: the gateway talks to the cloud through it,
//! and a test cuts the link (every connection dropped, new ones refused at once), stalls it
//! (connections stay open but nothing passes, as with a dead route or a hung broker), and
//! restores it, while the cloud broker and its subscribers stay up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
}

/// A running proxy; stops with the test's runtime.
pub struct Proxy {
    /// The port to give the gateway.
    pub port: u16,
    mode: watch::Sender<(Mode, u64)>,
    accepted: Arc<AtomicU64>,
}

/// Holds the sockets until the mode changes, then drops them.
async fn hold_until_change(mode: &mut watch::Receiver<(Mode, u64)>) {
    let _ = mode.changed().await;
}

impl Proxy {
    /// Proxies a new loopback port to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (mode, modes) = watch::channel((Mode::Up, 0u64));
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
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
                        Mode::Up => {}
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else { return };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = mode.changed() => {
                            // A stall keeps both ends open and silent until the next change.
                            if mode.borrow().0 == Mode::Stall {
                                hold_until_change(&mut mode).await;
                            }
                        }
                    }
                });
            }
        });
        Proxy { port, mode, accepted }
    }

    fn set(&self, mode: Mode) {
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
}
