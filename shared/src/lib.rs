//! `edge-event`: the event format that sensors (`no_std` firmware) and the edge gateway
//! share.
//!
//! - [`limits`](crate::MAX_ENCODED_LEN): the bounds of every string and list, and the
//!   worst-case encoded size firmware sizes its buffers with.
//! - `event`: [`Event`] (with [`Timestamp`], [`Reading`], [`Value`], [`MetaEntry`]), the
//!   postcard wire type [`Envelope`], and [`Ack`], the gateway's confirmation.
//! - `validate`: [`Event::validate`] and [`ValidationError`]: the rules the types cannot
//!   express (id characters, finite numbers, unique names, clock skew).
//! - `codec`: the postcard codec, no heap: [`encode`], [`decode`], their COBS-framed twins
//!   [`encode_cobs`] and [`decode_cobs`], and [`decode_any`], which also takes JSON.
//! - `json` (feature `alloc`): the JSON form of an event, as devices may send it and
//!   cloud batches carry it.
//! - [`batch`] (feature `alloc`): the compact cloud batch of `format = "postcard"` routes,
//!   and [`batch::decode_batch`] for consumers.
//! - `ack`: [`Ack`]'s heap-free JSON codec, [`Ack::encode_json`] and [`Ack::decode_json`].
//! - [`topic`]: the device topics `devices/{device}/events|ack|commands`, heap-free.
//! - [`command`]: cloud-to-device commands as the device sees them ([`command::Command`])
//!   and its answers ([`command::Reply`]), postcard, heap-free; the protocol is there.
//! - `error`: [`EncodeError`], [`DecodeError`], [`TooLong`]; messages that stand alone.
//!
//! Features: none needed to encode and decode (no heap, builds for `thumbv6m-none-eabi`);
//! `alloc` adds the JSON codec and owned helpers; `std` implies `alloc`.
//!
//! # Wire format
//!
//! The postcard encoding of [`Envelope`] is the contract between firmware and gateway,
//! pinned byte for byte by `tests/golden.rs`:
//!
//! 1. One version byte ([`FORMAT_VERSION`]), then the [`Event`]. The decoder reads the
//!    version first and keeps accepting every version it knows.
//! 2. Structs are their fields in declaration order, with no names or lengths; enums are a
//!    varint variant index, then the variant's fields; `Option` is a `0`/`1` byte then the
//!    value; strings and lists are a varint length then the items; integers are varints
//!    (signed ones zigzagged) except `u8`; `f32`/`f64` are 4/8 bytes little-endian.
//! 3. So a wire type only ever grows at the end: new enum variants go last, and fields are
//!    never reordered, removed or retyped. `skip_serializing_if`, `flatten`, `untagged`,
//!    `#[serde(skip)]` and custom serde impls are off limits on wire types (`rename` is
//!    harmless: names are not on the wire).
//! 4. Any change an old decoder could misread (including a new field, since postcard has
//!    no field count) bumps [`FORMAT_VERSION`]; the decoder then handles both versions.
//! 5. Version numbers never take the values of JSON whitespace or `{` (9, 10, 13, 32,
//!    123), so that [`decode_any`] can tell JSON from postcard by the first byte.
//! 6. The bounds in the constants ([`MAX_READINGS`] ...) are part of the format: raising one
//!    is a version change too.
//!
//! The serde derives exist for that encoding only. The JSON form is written and read by
//! hand in `json`, so JSON can change shape without touching the wire.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod ack;
#[cfg(feature = "alloc")]
pub mod batch;
mod cobs;
mod codec;
pub mod command;
mod digits;
mod error;
mod event;
#[cfg(feature = "alloc")]
pub mod json;
mod limits;
pub mod topic;
mod validate;

#[cfg(feature = "alloc")]
pub use codec::encode_to_vec;
pub use codec::{decode, decode_any, decode_cobs, encode, encode_cobs, Format};
pub use error::{DecodeError, EncodeError, Field, JsonError, TooLong};
pub use event::{
    Ack, Bytes, DeviceId, Envelope, Event, EventType, Meta, MetaEntry, Name, Reading, Readings, Text, Timestamp, Unit,
    Value,
};
pub use limits::{
    FORMAT_VERSION, MAX_BYTES_LEN, MAX_COBS_FRAME_LEN, MAX_DEVICE_ID_LEN, MAX_ENCODED_LEN, MAX_FUTURE_SKEW_MS,
    MAX_META, MAX_NAME_LEN, MAX_READINGS, MAX_TEXT_LEN, MAX_TYPE_LEN, MAX_UNIT_LEN,
};
pub use validate::{is_id_char, validate_device_id, validate_event_type, ValidationError};
