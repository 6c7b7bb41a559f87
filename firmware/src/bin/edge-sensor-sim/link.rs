//! The simulator's byte link: plain TCP, or (feature `tls`, `--tls-ca FILE`) TLS through
//! `host::tls::TlsLink` and the `embedded-io` adapter `Io`, as a board would run it.

use std::net::SocketAddr;

use edge_firmware::host::TcpTransport;
use edge_firmware::{Transport, TransportError};

/// How each simulated device reaches the gateway.
#[derive(Debug)]
pub enum SimLink {
    /// MQTT over TCP.
    Tcp(TcpTransport),
    /// MQTT over TLS over TCP (boxed: a TLS session is ten times a TCP transport).
    #[cfg(feature = "tls")]
    Tls(Box<edge_firmware::Io<edge_firmware::host::tls::TlsLink>>),
}

impl SimLink {
    /// A link to `addr`: TLS when `tls` gives a client configuration and the server name.
    pub fn new(addr: SocketAddr, tls: Option<&Tls>) -> Result<SimLink, String> {
        match tls {
            None => Ok(SimLink::Tcp(TcpTransport::to(addr))),
            #[cfg(feature = "tls")]
            Some(tls) => {
                let link = edge_firmware::host::tls::TlsLink::new(addr, &tls.server_name, tls.config.clone())
                    .map_err(|e| format!("--tls-server-name: {e}"))?;
                Ok(SimLink::Tls(Box::new(edge_firmware::Io::new(link))))
            }
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }

    /// The last I/O error, with its cause, for logs.
    pub fn last_error(&self) -> Option<&str> {
        match self {
            SimLink::Tcp(tcp) => tcp.last_error(),
            #[cfg(feature = "tls")]
            SimLink::Tls(tls) => tls.get_ref().last_error(),
        }
    }

    fn inner(&mut self) -> &mut dyn Transport {
        match self {
            SimLink::Tcp(tcp) => tcp,
            #[cfg(feature = "tls")]
            SimLink::Tls(tls) => &mut **tls,
        }
    }
}

/// TLS settings of the fleet (`--tls-ca`, `--tls-server-name`).
#[cfg(feature = "tls")]
#[derive(Debug, Clone)]
pub struct Tls {
    /// Trusts the CA file's certificates only.
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The name the gateway's certificate must carry.
    pub server_name: String,
}

/// Without the `tls` feature there are no TLS settings.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub enum Tls {}

impl Transport for SimLink {
    fn open(&mut self) -> Result<(), TransportError> {
        self.inner().open()
    }

    fn close(&mut self) {
        self.inner().close()
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        self.inner().read(buf)
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        self.inner().write(buf)
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        self.inner().flush()
    }
}
