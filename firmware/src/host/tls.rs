//! TLS on the host (feature `tls`): [`TlsLink`], a rustls client session (ring provider)
//! over a [`TcpLink`], as a blocking `embedded-io` stream with a [`Link`]. Wrapped in
//! [`Io`](crate::Io) it is a device's transport, so the same [`Device`](crate::Device)
//! logs in to the gateway's TLS device listener (`[devices] tls_cert_file`):
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use edge_firmware::host::tls::{client_config, TlsLink};
//! use edge_firmware::{BootId, Device, Io, NoClock, Settings};
//!
//! let config = client_config(&std::fs::read("ca.pem")?)?;
//! let link = TlsLink::new("127.0.0.1:8883".parse()?, "127.0.0.1", config)?;
//! let mut device: Device<_, _, 64, 8192> =
//!     Device::new("env-7", BootId::new(1), Io::new(link), NoClock, Settings::default())?;
//! # Ok(()) }
//! ```
//!
//! On a microcontroller the same shape holds with `embedded-tls` over the board's socket
//! (see the README, "TLS"). `open` connects and completes the handshake (bounded by the
//! link's timeout); `read_ready` is true once decrypted bytes wait or the peer closed.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::TcpLink;
use crate::error::TransportError;
use crate::io::Link;

/// A client configuration that trusts the CA certificates in `ca_pem` (PEM), nothing else.
pub fn client_config(ca_pem: &[u8]) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("CA file: {e}")))?;
        roots.add(cert).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the CA file holds no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// MQTT over TLS over TCP; see the module docs.
#[derive(Debug)]
pub struct TlsLink {
    tcp: TcpLink,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    session: Option<ClientConnection>,
    last_error: Option<String>,
}

impl TlsLink {
    /// A link to `addr` whose certificate must be valid for `server_name` (a DNS name or
    /// an IP address) under `config`.
    pub fn new(addr: SocketAddr, server_name: &str, config: Arc<ClientConfig>) -> io::Result<TlsLink> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{server_name:?}: {e}")))?;
        Ok(TlsLink { tcp: TcpLink::new(addr), config, server_name, session: None, last_error: None })
    }

    /// Why the last `open` failed (the handshake's error, e.g. an unknown issuer).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    fn handshake(&mut self) -> io::Result<ClientConnection> {
        let mut session = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|e| io::Error::other(e.to_string()))?;
        let timeout = self.tcp.timeout;
        let stream = self.tcp.stream()?;
        stream.set_read_timeout(Some(timeout))?;
        while session.is_handshaking() {
            session.complete_io(stream)?;
        }
        stream.set_read_timeout(None)?;
        Ok(session)
    }

    fn parts(&mut self) -> io::Result<(&mut ClientConnection, &mut std::net::TcpStream)> {
        let session = self.session.as_mut().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        Ok((session, self.tcp.stream()?))
    }
}

impl Link for TlsLink {
    fn open(&mut self) -> Result<(), TransportError> {
        self.session = None;
        self.tcp.open()?;
        match self.handshake() {
            Ok(session) => {
                self.session = Some(session);
                Ok(())
            }
            Err(err) => {
                self.last_error = Some(format!("TLS handshake: {err}"));
                self.tcp.close();
                Err(TransportError::Open)
            }
        }
    }

    fn close(&mut self) {
        if let Ok((session, stream)) = self.parts() {
            session.send_close_notify();
            let _ = session.write_tls(stream);
        }
        self.session = None;
        self.tcp.close();
    }
}

impl embedded_io::ErrorType for TlsLink {
    type Error = io::Error;
}

impl embedded_io::ReadReady for TlsLink {
    fn read_ready(&mut self) -> io::Result<bool> {
        loop {
            let (session, _) = self.parts()?;
            let state = session.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                return Ok(true);
            }
            if !embedded_io::ReadReady::read_ready(&mut self.tcp)? {
                return Ok(false);
            }
            let (session, stream) = self.parts()?;
            if session.read_tls(stream)? == 0 {
                return Ok(true); // end of the TCP stream: `read` reports it
            }
        }
    }
}

impl embedded_io::Read for TlsLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (session, _) = self.parts()?;
        session.reader().read(buf)
    }
}

impl embedded_io::Write for TlsLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (session, stream) = self.parts()?;
        let n = session.writer().write(buf)?;
        while session.wants_write() {
            session.write_tls(stream)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let (session, stream) = self.parts()?;
        session.writer().flush()?;
        while session.wants_write() {
            session.write_tls(stream)?;
        }
        stream.flush()
    }
}
