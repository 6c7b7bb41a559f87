//! The device over standard `embedded-io` streams: [`Io`] turns any blocking
//! `Read + Write + ReadReady` stream that can be (re)opened ([`Link`]) into the crate's
//! [`Transport`].
//!
//! # Mapping
//!
//! - `read`: nothing ready ([`ReadReady::read_ready`] false) is `Ok(0)`, "nothing yet";
//!   a ready stream that reads 0 bytes has ended: [`TransportError::Closed`]. So a poll
//!   never blocks on a read (the stream's `read_ready` must be honest about that).
//! - `write`: [`Write::write_all`]; `flush`: [`Write::flush`].
//! - errors by [`ErrorKind`]: `TimedOut` is [`TransportError::TimedOut`]; a reset, an
//!   aborted or broken connection, or no connection is [`TransportError::Closed`]; anything
//!   else [`TransportError::Io`].

use embedded_io::{Error as _, ErrorKind, Read, ReadReady, Write};

use crate::error::TransportError;
use crate::transport::Transport;

/// Opening and closing the connection under a stream (a TCP connect, a modem's
/// `AT+CIPOPEN`, a TLS handshake); for a link that is always there both may do nothing.
pub trait Link {
    /// Opens (or re-opens) the connection; called before every MQTT CONNECT.
    fn open(&mut self) -> Result<(), TransportError>;

    /// Drops the connection.
    fn close(&mut self);
}

/// An `embedded-io` stream with a [`Link`], as a [`Transport`]; see the module docs.
#[derive(Debug)]
pub struct Io<S>(S);

impl<S> Io<S> {
    /// Wraps `stream`.
    pub const fn new(stream: S) -> Io<S> {
        Io(stream)
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.0
    }

    /// The stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.0
    }
}

/// The transport error for an `embedded-io` error kind.
pub fn transport_error(kind: ErrorKind) -> TransportError {
    match kind {
        ErrorKind::TimedOut => TransportError::TimedOut,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::NotConnected | ErrorKind::BrokenPipe => {
            TransportError::Closed
        }
        _ => TransportError::Io,
    }
}

impl<S: Link + Read + Write + ReadReady> Transport for Io<S> {
    fn open(&mut self) -> Result<(), TransportError> {
        self.0.open()
    }

    fn close(&mut self) {
        self.0.close()
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        if buf.is_empty() || !self.0.read_ready().map_err(|e| transport_error(e.kind()))? {
            return Ok(0);
        }
        match self.0.read(buf) {
            Ok(0) => Err(TransportError::Closed),
            Ok(n) => Ok(n),
            Err(err) => Err(transport_error(err.kind())),
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        self.0.write_all(buf).map_err(|e| transport_error(e.kind()))
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        self.0.flush().map_err(|e| transport_error(e.kind()))
    }
}
