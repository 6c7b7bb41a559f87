//! `edge-firmware`: the sensor side of the edge gateway, `no_std` and heap-free.
//!
//! - `numbering`: [`Numbering`] gives events their `(device, boot, seq)`; the boot id comes
//!   from [`BootId::after`] a persisted counter or [`BootId::from_seed`]; timestamps from an
//!   optional [`Clock`], or, with only a monotonic clock ([`Uptime`]), the readings' age at
//!   each send, which the gateway turns into `ts`.
//! - `ring`: [`Ring`], the retention ring of encoded events the gateway has not confirmed,
//!   with its full policy [`WhenFull`]. An event leaves it only when an ack covers it or the
//!   policy drops it (counted).
//! - `transport`: [`Transport`], the byte link (TCP, a modem socket, a serial line);
//!   `io`: [`Io`], any `embedded-io` `Read + Write + ReadReady` stream with a [`Link`] as one.
//! - `retention`: [`Retention`], where unconfirmed events live: the RAM [`Ring`], or
//!   `FlashRing` (feature `flash`) in NOR flash through `embedded-storage`, which survives
//!   a reset with the boot counter.
//! - `asynch` (feature `async`): the same device over `embedded-io-async`, with a
//!   deadline-returning poll so a device can sleep; no executor dependency.
//! - [`mqtt`]: a small MQTT 3.1.1 client: the packet codec and a poll-driven [`mqtt::Client`].
//! - `device`: [`Device`] ties them together: record events, poll, and every event reaches
//!   the gateway's journal, re-sent after reconnects until acked (README, "What it guarantees" 6).
//! - [`command`]: cloud-to-device commands: [`Device::poll_commands`] runs a handler and
//!   answers with its [`Outcome`]; repeats are answered from memory, not run twice.
//! - `error`: [`Error`], one small `#[non_exhaustive]` enum, and [`TransportError`].
//! - `host` (feature `std`): `host::TcpTransport` and `host::SystemClock`, which the
//!   `edge-sensor-sim` binary runs the very same device code on.
//!
//! Events are [`edge_event::Event`]s, encoded with [`edge_event::encode`]: the bytes the
//! gateway decodes. Buffers are sized by const generics; nothing allocates and nothing
//! panics on input from the network.
//!
//! ```
//! use edge_firmware::{BootId, Device, NoClock, Settings, Transport, TransportError};
//! use edge_event::{Reading, Value};
//!
//! # struct Uart;
//! # impl Transport for Uart {
//! #     fn open(&mut self) -> Result<(), TransportError> { Ok(()) }
//! #     fn close(&mut self) {}
//! #     fn read(&mut self, _: &mut [u8]) -> Result<usize, TransportError> { Ok(0) }
//! #     fn write(&mut self, _: &[u8]) -> Result<(), TransportError> { Ok(()) }
//! # }
//! # fn main() -> Result<(), edge_firmware::Error> {
//! // A ring of 64 events in 4 KiB; the boot counter was 6 in flash (store 7 back).
//! let mut device: Device<_, _, 64, 4096> =
//!     Device::new("env-7", BootId::after(6), Uart, NoClock, Settings::default())?;
//! let mut event = device.event("environment")?;
//! event.push_reading(Reading::new("celsius", Value::F32(21.5))?.with_unit("C")?)?;
//! let id = device.publish(&mut event)?;
//! assert_eq!((id.boot, id.seq), (7, 1));
//! let _ = device.poll(0); // from the main loop, with a monotonic ms clock
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]

#[cfg(feature = "async")]
pub mod asynch;
pub mod command;
mod device;
mod error;
#[cfg(feature = "flash")]
mod flash;
#[cfg(feature = "std")]
pub mod host;
mod io;
pub mod mqtt;
mod numbering;
mod retention;
mod ring;
mod transport;

pub use command::Outcome;
pub use device::{Activity, Device, Password, Settings, Stats, DEFAULT_RX_LEN, TX_LEN};
pub use error::{Error, TransportError};
#[cfg(feature = "flash")]
pub use flash::FlashRing;
pub use io::{transport_error, Io, Link};
pub use numbering::{encode_stored, payload_to_send, timestamp, BootId, Clock, EventId, NoClock, Numbering, Uptime};
pub use retention::Retention;
pub use ring::{Ring, Stored, WhenFull};
pub use transport::Transport;
