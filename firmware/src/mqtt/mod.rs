//! A small MQTT 3.1.1 client for the device side, heap-free and poll-driven.
//!
//! - [`packet`]: the encoders and the decoder, pinned byte for byte by their tests.
//! - [`Client`]: one session over a [`Transport`](crate::Transport): CONNECT, SUBSCRIBE,
//!   PUBLISH QoS 0/1, PUBACKs both ways, keep-alive pings. Reconnecting, and what to send
//!   after it, is the [`Device`](crate::Device)'s job.
//!
//! Written here rather than taken from a crate: `minimq` speaks only MQTT 5 (over
//! `embedded-nal`) and `rust-mqtt` only MQTT 5 behind an async API (`embedded-io-async`),
//! while the gateway's device listener speaks 3.1.1 and a sensor's main loop should need
//! no executor. This client is a few hundred lines, pinned by exact-byte tests and a
//! property test that random bytes never panic the decoder, and builds for
//! `thumbv6m-none-eabi`.

mod client;
pub mod packet;

pub use client::Client;
pub use packet::{Connect, Packet, Publish, QoS};
