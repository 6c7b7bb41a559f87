//! The JSON form of an event (feature `alloc`): what a person sends with `mosquitto_pub`
//! and what a cloud batch carries.
//!
//! ```text
//! {"device":"d1","boot":1,"seq":42,"ts":1764000000123,"type":"temperature","readings":{"celsius":21.5}}
//! ```
//!
//! - Keys are written in that order, then `"meta":{...}` only when there is metadata.
//!   `"ts":null` stands for [`Timestamp::Unknown`](crate::Timestamp::Unknown); on input `ts`
//!   may also be absent. `"v":1` is accepted on input (absent means the current version;
//!   other values are [`DecodeError::UnsupportedVersion`]) and never written.
//! - `"age_ms": N` (an unsigned integer, input only) says the readings were taken N ms
//!   before the message was sent, for devices without a wall clock: with `ts` null or
//!   absent, [`decode_any_received`](crate::decode_any_received) makes it
//!   `ts = received - N` (see `dating`); [`from_slice`] ignores it.
//! - `readings` is an object from name to value. A JSON integer is [`Value::I64`], a number
//!   with a fraction or exponent [`Value::F64`], a bool [`Value::Bool`], a string
//!   [`Value::Text`], `{"hex":"0a0b"}` [`Value::Bytes`]; a reading with a unit is
//!   `{"value":<value>,"unit":"C"}`.
//! - [`Value::F32`] is written as its shortest decimal, so it reads back as the `F64` of that
//!   decimal; `F64` always has a `.` or an exponent (`21.0`, not `21`) so it stays `F64`.
//!   NaN and infinities, which [`Event::validate`] rejects, are written as `null`, and a
//!   `null` reading is refused on input.
//! - `device`, `boot`, `seq`, `type` and `readings` are required; `ts`, `meta` and `v` are
//!   optional. Unknown keys are ignored (forward compatibility); a known key of the wrong
//!   type, a missing or duplicate key, an over-long string or too many entries is an error
//!   naming the key. Repeated reading names are kept: [`Event::validate`] rejects them, as it
//!   does for postcard.
//!
//! The writer is hand-rolled and appends to a `Vec<u8>` (the gateway builds batches by
//! appending); the reader is serde_json with visitors specific to this shape. Neither uses
//! the serde derives of the types, which are the postcard wire format.

pub(crate) mod read;
mod readings;
mod write;

pub use read::from_slice;
pub use write::{to_vec, write};

#[cfg(doc)]
use crate::{DecodeError, Event, Value};
