//! The device over `embedded-io-async` streams (feature `async`), with no executor
//! dependency: [`AsyncDevice`] runs the very same protocol code as the blocking
//! [`Device`] (numbering, retention, acks, commands, backoff), over an in-memory
//! [`Pipe`], and moves bytes between the pipe and an async stream.
//!
//! # Driving it
//!
//! ```text
//! loop {
//!     let polled = device.poll().await;                       // connect, read, send, ack
//!     device.wait(polled.deadline_ms.min(next_sample)).await;   // sleep until input or then
//!     if timer.now_ms() >= next_sample { record(device.device())?; next_sample += period; }
//! }
//! ```
//!
//! [`AsyncDevice::poll`] opens the link when the device asks (an [`AsyncLink::open`]: TCP
//! connect, TLS handshake), runs one device poll, and writes what it produced; it returns
//! the next deadline ([`Device::next_deadline`]): reconnect time, keep-alive, timeouts.
//! [`AsyncDevice::wait`] sleeps until bytes arrive or the deadline passes, whichever is
//! first, on the board's [`Timer`] (embassy-time's `Timer::at`, or a tokio sleep).
//!
//! # Invariants and requirements
//!
//! - Everything the blocking device guarantees holds: the protocol code is shared.
//! - The stream's `read` must be **cancel-safe** (dropped before completion, it loses no
//!   byte): `wait` drops it when the deadline comes first. embassy-net's `TcpSocket` and
//!   `embedded-io-adapters`' `FromTokio` are.
//! - The pipe holds [`PIPE_IN`] bytes from the broker and [`PIPE_OUT`] to it; the device
//!   publishes an event only when its packet fits (see [`Transport::writable`](crate::Transport::writable)).

use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::Poll;

use edge_event::command::Command;
use embedded_io_async::{Read, Write};

use crate::command::Outcome;
use crate::device::{Activity, Device, Settings, DEFAULT_RX_LEN};
use crate::error::{Error, TransportError};
use crate::numbering::{BootId, Clock};
use crate::retention::Retention;
use crate::ring::Ring;

mod pipe;

pub use pipe::Pipe;
use pipe::State;

/// Bytes from the broker the pipe holds until the device reads them.
pub const PIPE_IN: usize = 512;
/// Bytes to the broker the pipe holds until they are written (one event publish plus
/// room for acks and replies).
pub const PIPE_OUT: usize = 2048;

/// The pipe of an [`AsyncDevice`].
pub type DevicePipe = Pipe<PIPE_IN, PIPE_OUT>;

/// An async stream that can be (re)opened: an embassy-net `TcpSocket` (open = `connect`),
/// a TLS session over one (open = connect + handshake), a tokio `TcpStream` in an adapter.
#[allow(async_fn_in_trait)] // as embedded-io-async: no `Send` bound wanted on embedded executors
pub trait AsyncLink: Read + Write {
    /// Opens (or re-opens) the connection; called before every MQTT CONNECT.
    async fn open(&mut self) -> Result<(), TransportError>;

    /// Drops the connection.
    fn close(&mut self);
}

/// The board's monotonic time, in ms (the same clock for `now_ms` and deadlines).
#[allow(async_fn_in_trait)]
pub trait Timer {
    /// Now.
    fn now_ms(&mut self) -> u64;

    /// Returns at `at_ms` (at once if that has passed).
    async fn wait_until(&mut self, at_ms: u64);
}

/// What one [`AsyncDevice::poll`] did, and when the next one is due.
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    /// Poll again by then even if nothing arrives (a [`Timer`] time).
    pub deadline_ms: u64,
    /// The device poll's result; errors are informational, as for [`Device::poll`].
    pub result: Result<Activity, Error>,
}

/// A [`Device`] over an async link `L`, timed by `K`; see the module docs.
#[derive(Debug)]
pub struct AsyncDevice<
    L,
    K,
    C,
    const SLOTS: usize,
    const BYTES: usize,
    const RX: usize = DEFAULT_RX_LEN,
    R = Ring<SLOTS, BYTES>,
> {
    device: Device<DevicePipe, C, SLOTS, BYTES, RX, R>,
    link: L,
    timer: K,
    link_open: bool,
}

impl<L: AsyncLink, K: Timer, C: Clock, const SLOTS: usize, const BYTES: usize, const RX: usize>
    AsyncDevice<L, K, C, SLOTS, BYTES, RX>
{
    /// A device with a RAM ring, as [`Device::new`], over `link`.
    pub fn new(device: &str, boot: BootId, link: L, timer: K, clock: C, settings: Settings) -> Result<Self, Error> {
        Ok(AsyncDevice::from_device(Device::new(device, boot, Pipe::new(), clock, settings)?, link, timer))
    }
}

impl<L: AsyncLink, K: Timer, C: Clock, const SLOTS: usize, const BYTES: usize, const RX: usize, R: Retention>
    AsyncDevice<L, K, C, SLOTS, BYTES, RX, R>
{
    /// Drives `device` (built over a [`Pipe`], e.g. with [`Device::with_retention`] for a
    /// flash ring) over `link`.
    pub fn from_device(device: Device<DevicePipe, C, SLOTS, BYTES, RX, R>, link: L, timer: K) -> Self {
        AsyncDevice { device, link, timer, link_open: false }
    }

    /// The device: record events with [`Device::event`] and [`Device::publish`], read its
    /// stats.
    pub fn device(&mut self) -> &mut Device<DevicePipe, C, SLOTS, BYTES, RX, R> {
        &mut self.device
    }

    /// The timer.
    pub fn timer(&mut self) -> &mut K {
        &mut self.timer
    }

    /// The link, for inspection (its counters, its last error); open while the device is
    /// connected.
    pub fn link(&mut self) -> &mut L {
        &mut self.link
    }

    /// Connects when due, runs one [`Device::poll`], writes what it sent; returns when the
    /// next poll is due.
    pub async fn poll(&mut self) -> Polled {
        let now = self.timer.now_ms();
        let result = self.device.poll(now);
        self.finish(now, result).await
    }

    /// As [`AsyncDevice::poll`], answering commands with `handler` (see
    /// [`Device::poll_commands`]).
    pub async fn poll_commands(&mut self, handler: impl FnMut(&Command<'_>) -> Outcome) -> Polled {
        let now = self.timer.now_ms();
        let result = self.device.poll_commands(now, handler);
        self.finish(now, result).await
    }

    async fn finish(&mut self, now: u64, result: Result<Activity, Error>) -> Polled {
        self.pump().await;
        let pipe = self.device.transport();
        let deadline_ms =
            if pipe.has_input() || pipe.state == State::Failed { now } else { self.device.next_deadline(now) };
        Polled { deadline_ms, result }
    }

    /// Opens the link if the device asked, writes the pipe out, closes the link if the
    /// device dropped it.
    async fn pump(&mut self) {
        let pipe = self.device.transport_mut();
        if pipe.state == State::OpenRequested {
            if self.link_open {
                self.link.close();
            }
            self.link_open = self.link.open().await.is_ok();
            if self.link_open {
                pipe.state = State::Open;
            } else {
                pipe.fail();
            }
        }
        if self.link_open && !pipe.tx.is_empty() {
            let written = self.link.write_all(&pipe.tx).await;
            let flushed = match written {
                Ok(()) => self.link.flush().await,
                Err(err) => Err(err),
            };
            pipe.tx.clear();
            if flushed.is_err() && pipe.state == State::Open {
                pipe.fail();
            }
        }
        if matches!(pipe.state, State::Closed | State::Failed) && self.link_open {
            self.link.close();
            self.link_open = false;
            pipe.tx.clear();
        }
    }

    /// Sleeps until bytes arrive from the broker or `deadline_ms` passes, whichever is
    /// first; the next [`AsyncDevice::poll`] handles what came.
    pub async fn wait(&mut self, deadline_ms: u64) {
        let pipe = self.device.transport_mut();
        if pipe.has_input() || pipe.state == State::Failed {
            return;
        }
        if pipe.state != State::Open {
            self.timer.wait_until(deadline_ms).await;
            return;
        }
        let read = first(self.link.read(pipe.rx_space()), self.timer.wait_until(deadline_ms)).await;
        match read {
            Some(Ok(n)) if n > 0 => pipe.received(n),
            Some(_) => pipe.fail(),
            None => {}
        }
    }

    /// Polls and waits until `done` says so (checked after every poll).
    pub async fn run_until(&mut self, mut done: impl FnMut(&mut Device<DevicePipe, C, SLOTS, BYTES, RX, R>) -> bool) {
        loop {
            let polled = self.poll().await;
            if done(&mut self.device) {
                return;
            }
            self.wait(polled.deadline_ms).await;
        }
    }
}

/// Runs `a` and `b` together: `Some(a's output)` if `a` finishes first, `None` if `b` does
/// (and `a` is dropped unfinished).
async fn first<A: Future, B: Future<Output = ()>>(a: A, b: B) -> Option<A::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(out) = a.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        b.as_mut().poll(cx).map(|()| None)
    })
    .await
}
