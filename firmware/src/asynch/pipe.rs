//! The in-memory transport between the sans-I/O [`Device`](crate::Device) and an async
//! stream: the device writes into `tx` and reads from `rx` without blocking; the
//! [`AsyncDevice`](super::AsyncDevice) moves bytes between them and the stream.

use heapless::Vec;

use crate::error::TransportError;
use crate::transport::Transport;

/// Where the connection is, as the pipe sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// No connection.
    Closed,
    /// The device opened the transport: the async side must connect.
    OpenRequested,
    /// Connected.
    Open,
    /// The async side lost the connection (or could not make it): the device's next read
    /// fails, which makes it reconnect.
    Failed,
}

/// Buffered bytes both ways: `IN` from the broker, `OUT` to it.
#[derive(Debug)]
pub struct Pipe<const IN: usize, const OUT: usize> {
    pub(crate) state: State,
    rx: [u8; IN],
    rx_len: usize,
    pub(crate) tx: Vec<u8, OUT>,
}

impl<const IN: usize, const OUT: usize> Default for Pipe<IN, OUT> {
    fn default() -> Self {
        Pipe::new()
    }
}

impl<const IN: usize, const OUT: usize> Pipe<IN, OUT> {
    /// An empty, closed pipe.
    pub const fn new() -> Self {
        Pipe { state: State::Closed, rx: [0; IN], rx_len: 0, tx: Vec::new() }
    }

    /// Marks the connection lost.
    pub(crate) fn fail(&mut self) {
        self.state = State::Failed;
        self.tx.clear();
    }

    /// Room for bytes from the broker (empty when the device has not read what came).
    pub(crate) fn rx_space(&mut self) -> &mut [u8] {
        &mut self.rx[self.rx_len..]
    }

    /// Commits `n` bytes read into [`Pipe::rx_space`].
    pub(crate) fn received(&mut self, n: usize) {
        self.rx_len = (self.rx_len + n).min(IN);
    }

    /// True when bytes from the broker wait for the device.
    pub(crate) fn has_input(&self) -> bool {
        self.rx_len > 0
    }
}

impl<const IN: usize, const OUT: usize> Transport for Pipe<IN, OUT> {
    fn open(&mut self) -> Result<(), TransportError> {
        self.rx_len = 0;
        self.tx.clear();
        self.state = State::OpenRequested;
        Ok(())
    }

    fn close(&mut self) {
        self.rx_len = 0;
        self.tx.clear();
        self.state = State::Closed;
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        if self.state == State::Failed || self.state == State::Closed {
            return Err(TransportError::Closed);
        }
        let n = buf.len().min(self.rx_len);
        buf[..n].copy_from_slice(&self.rx[..n]);
        self.rx.copy_within(n..self.rx_len, 0);
        self.rx_len -= n;
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        if self.state == State::Failed || self.state == State::Closed {
            return Err(TransportError::Closed);
        }
        self.tx.extend_from_slice(buf).map_err(|_| TransportError::Io)
    }

    fn writable(&self) -> usize {
        OUT - self.tx.len()
    }
}
