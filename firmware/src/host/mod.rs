//! The host side (feature `std`): a TCP [`Transport`] and the system clock, so the very
//! same [`Device`](crate::Device) code runs on a PC (the `edge-sensor-sim` binary, tests);
//! and [`TcpLink`], a std `TcpStream` as an `embedded-io` stream, for [`Io`](crate::Io)
//! and the TLS wrapper of `host::tls`.
//!
//! The socket is non-blocking for reads (no byte available is `Ok(0)`, as the
//! [`Transport`] contract asks) and writes are buffered until [`Transport::flush`], which
//! blocks for at most the write timeout: one syscall per poll, not one per packet.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::TransportError;
use crate::numbering::Clock;
use crate::transport::Transport;

#[cfg(feature = "tls")]
pub mod tls;

/// MQTT over plain TCP to `addr`.
#[derive(Debug)]
pub struct TcpTransport {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    out: Vec<u8>,
    connect_timeout: Duration,
    write_timeout: Duration,
    last_error: Option<String>,
}

impl TcpTransport {
    /// A transport to `host:port` (resolved now); it connects on [`Transport::open`].
    pub fn new(host: &str, port: u16) -> io::Result<TcpTransport> {
        let addr = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))?;
        Ok(TcpTransport::to(addr))
    }

    /// A transport to `addr`.
    pub fn to(addr: SocketAddr) -> TcpTransport {
        TcpTransport {
            addr,
            stream: None,
            out: Vec::with_capacity(4096),
            connect_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(10),
            last_error: None,
        }
    }

    /// The address it connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The last I/O error, with its cause, for logs (the crate's errors carry none).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    fn failed(&mut self, what: &str, err: &io::Error, kind: TransportError) -> TransportError {
        self.last_error = Some(format!("{what} {}: {err}", self.addr));
        self.stream = None;
        kind
    }
}

impl Transport for TcpTransport {
    fn open(&mut self) -> Result<(), TransportError> {
        self.stream = None;
        self.out.clear();
        let stream = TcpStream::connect_timeout(&self.addr, self.connect_timeout)
            .and_then(|s| {
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .map_err(|err| self.failed("connect to", &err, TransportError::Open))?;
        self.stream = Some(stream);
        Ok(())
    }

    fn close(&mut self) {
        self.stream = None;
        self.out.clear();
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        let stream = self.stream.as_mut().ok_or(TransportError::Closed)?;
        loop {
            return match stream.read(buf) {
                Ok(0) if !buf.is_empty() => {
                    let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
                    Err(self.failed("read from", &eof, TransportError::Closed))
                }
                Ok(n) => Ok(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => Err(self.failed("read from", &err, TransportError::Io)),
            };
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        if self.stream.is_none() {
            return Err(TransportError::Closed);
        }
        self.out.extend_from_slice(buf);
        if self.out.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stream = self.stream.as_mut().ok_or(TransportError::Closed)?;
        // Blocking with a deadline for the write only; reads stay non-blocking.
        let result = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_write_timeout(Some(self.write_timeout)))
            .and_then(|()| stream.write_all(&self.out))
            .and_then(|()| stream.set_nonblocking(true));
        self.out.clear();
        result.map_err(|err| {
            let kind = match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TransportError::TimedOut,
                _ => TransportError::Io,
            };
            self.failed("write to", &err, kind)
        })
    }
}

/// The system's wall clock (ms since the Unix epoch).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&mut self) -> Option<u64> {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        u64::try_from(since.as_millis()).ok()
    }
}

/// A std `TcpStream` as a blocking `embedded-io` stream with a [`Link`](crate::Link): connect on
/// `open`, `read_ready` by a non-blocking peek. Wrap it in [`Io`](crate::Io) for a device.
#[derive(Debug)]
pub struct TcpLink {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// Connect (and write) timeout.
    pub timeout: Duration,
}

impl TcpLink {
    /// A link to `addr`; it connects on `open`.
    pub fn new(addr: SocketAddr) -> TcpLink {
        TcpLink { addr, stream: None, timeout: Duration::from_secs(5) }
    }

    /// The connected stream, if any.
    pub fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream.as_mut().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl crate::Link for TcpLink {
    fn open(&mut self) -> Result<(), TransportError> {
        self.stream = None;
        let stream = TcpStream::connect_timeout(&self.addr, self.timeout).map_err(|_| TransportError::Open)?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|_| TransportError::Open)?;
        self.stream = Some(stream);
        Ok(())
    }

    fn close(&mut self) {
        self.stream = None;
    }
}

impl embedded_io::ErrorType for TcpLink {
    type Error = io::Error;
}

impl embedded_io::ReadReady for TcpLink {
    fn read_ready(&mut self) -> io::Result<bool> {
        let stream = self.stream()?;
        stream.set_nonblocking(true)?;
        let peeked = stream.peek(&mut [0u8; 1]);
        stream.set_nonblocking(false)?;
        match peeked {
            // Bytes, or the end of the stream (which `read` then reports): ready either way.
            Ok(_) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(err) => Err(err),
        }
    }
}

impl embedded_io::Read for TcpLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream()?.read(buf)
    }
}

impl embedded_io::Write for TcpLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream()?.flush()
    }
}
