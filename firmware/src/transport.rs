//! The byte link under the MQTT client: TCP on a host, a modem's socket, or a serial
//! line carrying COBS frames. It is the crate's one seam to the outside world.
//!
//! # Contract
//!
//! - **Reads never block for long**: [`Transport::read`] returns `Ok(0)` when no byte is
//!   available right now (a non-blocking socket, or a UART FIFO that is empty). The
//!   client is poll-driven, so one thread or one main loop can run many devices.
//! - **Writes are complete**: [`Transport::write`] takes every byte or fails; it may
//!   buffer, and [`Transport::flush`] pushes buffered bytes out (the client flushes at the
//!   end of every poll).
//! - **End of stream is an error**: a peer that closed the link is
//!   [`TransportError::Closed`], never `Ok(0)`.
//! - [`Transport::open`] (re)establishes the link before each MQTT CONNECT and
//!   [`Transport::close`] drops it; for a link that is always there (a UART) both may do
//!   nothing.
//!
//! # Standard streams
//!
//! The contract is not embedded-io's (there `Ok(0)` is end of stream and `read` blocks);
//! [`Io`](crate::Io) adapts any `embedded_io` `Read + Write + ReadReady` stream with a
//! [`Link`](crate::Link) (open/close) to it, and the `async` feature's
//! `asynch::AsyncDevice` drives the same device over `embedded-io-async` streams.
//! Migrating from a hand-written `Transport`: implement `embedded_io::{ErrorType, Read,
//! Write, ReadReady}` and [`Link`](crate::Link) for your socket (`read_ready` is the old
//! "`Ok(0)` when nothing is available" check) and pass `Io::new(socket)` where the
//! transport went; the `Transport` trait itself stays, so existing transports compile
//! unchanged.

use crate::error::TransportError;

/// A byte link to the broker; see the module docs for the contract.
pub trait Transport {
    /// Opens (or re-opens) the link; called before every MQTT CONNECT.
    fn open(&mut self) -> Result<(), TransportError>;

    /// Drops the link; the next [`Transport::open`] starts a new one.
    fn close(&mut self);

    /// Reads what is available into `buf`: `Ok(0)` when nothing is, an error when the
    /// link is gone.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError>;

    /// Writes all of `buf` (possibly into a buffer that [`Transport::flush`] empties).
    fn write(&mut self, buf: &[u8]) -> Result<(), TransportError>;

    /// Pushes out whatever [`Transport::write`] buffered.
    fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    /// Bytes [`Transport::write`] can take right now; the device publishes an event only
    /// when its packet fits with room to spare for acks and replies. Unlimited by default;
    /// a bounded buffer (the async device's pipe) says how much room it has.
    fn writable(&self) -> usize {
        usize::MAX
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn open(&mut self) -> Result<(), TransportError> {
        (**self).open()
    }

    fn close(&mut self) {
        (**self).close()
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        (**self).read(buf)
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        (**self).write(buf)
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        (**self).flush()
    }

    fn writable(&self) -> usize {
        (**self).writable()
    }
}
