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
//! - `dating`: time without a clock: [`Dating`] (an age or an uptime) in a version-2
//!   envelope ([`encode_dated`], [`decode_dated`]), [`age_at_send`] for a device that
//!   re-sends stored events, and [`decode_any_received`], which turns an age into `ts`
//!   from the receiver's clock.
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
//! 1. One version byte, then the [`Event`] (and, in version 2, what follows it: rule 5).
//!    The decoder reads the version first and keeps accepting every version it knows.
//! 2. Structs are their fields in declaration order, with no names or lengths; enums are a
//!    varint variant index, then the variant's fields; `Option` is a `0`/`1` byte then the
//!    value; strings and lists are a varint length then the items; integers are varints
//!    (signed ones zigzagged) except `u8`; `f32`/`f64` are 4/8 bytes little-endian.
//! 3. So a wire type only ever grows at the end: new enum variants go last, and fields are
//!    never reordered, removed or retyped. `skip_serializing_if`, `flatten`, `untagged`,
//!    `#[serde(skip)]` and custom serde impls are off limits on wire types (`rename` is
//!    harmless: names are not on the wire).
//! 4. **Version bump rule.** Any change an old decoder could misread or would refuse
//!    with a misleading error (a new field, since postcard has no field count: it reads as
//!    trailing bytes) takes a new version number; the decoder then handles every
//!    version, and old bytes get a golden test of their own that never changes. A new enum
//!    variant at the end needs no bump (an old decoder refuses it as an unknown variant;
//!    it cannot misread it). Encoders write the *lowest* version that can carry the
//!    event, so that old receivers keep reading everything they can represent.
//! 5. Versions so far ([`FORMAT_VERSION`] and [`DATED_FORMAT_VERSION`]):
//!    - `1`: the [`Event`]. Written by [`encode`].
//!    - `2`: the [`Event`], then a [`Dating`] (an age, or the uptime the sender turns into
//!      an age at every send), for devices without a wall clock. Written by
//!      [`encode_dated`]; receivers date the event with [`decode_any_received`].
//! 6. Version numbers never take the values of JSON whitespace or `{` (9, 10, 13, 32,
//!    123), so that [`decode_any`] can tell JSON from postcard by the first byte.
//! 7. The bounds in the constants ([`MAX_READINGS`] ...) are part of the format: raising one
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
mod dating;
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
pub use dating::{age_at_send, decode_any_received, decode_dated, encode_dated, Dating};
pub use error::{DecodeError, EncodeError, Field, JsonError, TooLong};
pub use event::{
    Ack, Bytes, DeviceId, Envelope, Event, EventType, Meta, MetaEntry, Name, Reading, Readings, Text, Timestamp, Unit,
    Value,
};
pub use limits::{
    DATED_FORMAT_VERSION, FORMAT_VERSION, MAX_BYTES_LEN, MAX_COBS_FRAME_LEN, MAX_DEVICE_ID_LEN, MAX_ENCODED_LEN,
    MAX_FUTURE_SKEW_MS, MAX_META, MAX_NAME_LEN, MAX_READINGS, MAX_TEXT_LEN, MAX_TYPE_LEN, MAX_UNIT_LEN,
};
pub use validate::{is_id_char, validate_device_id, validate_event_type, ValidationError};
