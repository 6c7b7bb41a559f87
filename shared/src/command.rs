//! Cloud-to-device commands on the device side, without a heap: what the gateway sends on
//! `devices/{device}/commands` ([`Command`]) and what the device answers on
//! `devices/{device}/commands/status` ([`Reply`]).
//!
//! # Wire format
//!
//! Both are postcard, like events, and follow the same rules (see the crate docs): one
//! version byte ([`COMMAND_VERSION`]), then the struct's fields in declaration order.
//!
//! - [`Command`]: `id` (string), `name` (string), `payload` (string: the command's JSON
//!   payload as text, `null` when the cloud sent none), `deadline_ms` (`Option<u64>`, Unix
//!   ms). Strings borrow from the received bytes: decoding needs no buffer.
//! - [`Reply`]: `id` (string; empty for [`ReplyStatus::Ready`]), `status`
//!   ([`ReplyStatus`], a varint: 0 ready, 1 delivered, 2 done, 3 failed), `message`
//!   (string, at most [`MAX_REPLY_MESSAGE_LEN`] bytes; may be empty).
//!
//! A device that does not use `edge-firmware` may answer in JSON instead,
//! `{"id":"c-1","status":"done","message":"pong"}`; the gateway tells the two apart by the
//! first byte (`{`), as [`decode_any`](crate::decode_any) does for events.
//!
//! # Protocol
//!
//! 1. After each (re)subscription the device sends `Ready`: the gateway then sends the
//!    oldest open command of that device at once (it also re-sends an unanswered command
//!    every few seconds, so devices that never say `Ready` get it too).
//! 2. On a command, the device answers `Delivered` (it has the command), runs it, then
//!    answers `Done` or `Failed` with a message. The gateway sends a device's next command
//!    only after the previous one is finished, so commands run in order, one at a time.
//! 3. The same command may arrive more than once (a lost answer makes the gateway re-send
//!    it): a device answers a repeated `id` with the outcome it already has, without
//!    running the command again.

use serde::{Deserialize, Serialize};

use crate::codec::{decode_error, encode_error};
use crate::error::{DecodeError, EncodeError};

/// Version byte of [`Command`] and [`Reply`] payloads.
pub const COMMAND_VERSION: u8 = 1;

/// Longest command id, in bytes.
pub const MAX_COMMAND_ID_LEN: usize = 64;

/// Longest command name, in bytes.
pub const MAX_COMMAND_NAME_LEN: usize = 32;

/// Longest [`Reply::message`], in bytes.
pub const MAX_REPLY_MESSAGE_LEN: usize = 96;

/// Longest encoded [`Reply`]: version, id, status, message, with their length varints.
pub const MAX_REPLY_LEN: usize = 1 + 1 + MAX_COMMAND_ID_LEN + 1 + 1 + MAX_REPLY_MESSAGE_LEN;

/// A command for one device (the device is the topic's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command<'a> {
    /// The cloud's id of the command (unique per device).
    pub id: &'a str,
    /// What to do, e.g. `set_interval`.
    pub name: &'a str,
    /// The command's arguments: JSON text (`null` when there are none).
    pub payload: &'a str,
    /// After this Unix time (ms) the command should no longer run.
    pub deadline_ms: Option<u64>,
}

impl<'a> Command<'a> {
    /// Writes the version byte and the command into `buf`; returns the length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let len = buf.len();
        let (first, rest) = buf.split_first_mut().ok_or(EncodeError::BufferTooSmall { len })?;
        *first = COMMAND_VERSION;
        postcard::to_slice(self, rest).map(|used| used.len() + 1).map_err(|e| encode_error(e, len))
    }

    /// Reads a command made by [`Command::encode`]; its strings borrow from `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<Command<'a>, DecodeError> {
        let rest = versioned(bytes)?;
        let (command, rest) = postcard::take_from_bytes::<Command<'a>>(rest).map_err(decode_error)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { count: rest.len() });
        }
        Ok(command)
    }

    /// True when `deadline_ms` has passed at `now_ms` (never without a deadline).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.deadline_ms.is_some_and(|deadline| now_ms > deadline)
    }

    /// The unsigned integer `payload` holds: either the payload itself (`5000`) or the
    /// value of a top-level key of an object (`{"ms":5000}` with `key = Some("ms")`). A
    /// small helper for the common one-number command; `None` for anything else.
    pub fn payload_u64(&self, key: Option<&str>) -> Option<u64> {
        let text = self.payload.trim();
        let Some(key) = key else { return parse_u64(text) };
        let inner = text.strip_prefix('{')?.strip_suffix('}')?;
        // Only flat objects: a nested object or array could hold the key at depth.
        if inner.contains(['{', '[']) {
            return None;
        }
        inner.split(',').find_map(|pair| {
            let (k, v) = pair.split_once(':')?;
            let k = k.trim().strip_prefix('"')?.strip_suffix('"')?;
            (k == key).then(|| parse_u64(v.trim())).flatten()
        })
    }
}

fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// What a device says about a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplyStatus {
    /// Subscribed to its commands topic (after every connect): send what is waiting.
    Ready,
    /// The device has the command.
    Delivered,
    /// The command ran.
    Done,
    /// The command could not run (unknown name, bad payload, past deadline...).
    Failed,
}

impl ReplyStatus {
    /// The name the gateway reports to the cloud (`"ready"` is never reported).
    pub const fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Ready => "ready",
            ReplyStatus::Delivered => "delivered",
            ReplyStatus::Done => "done",
            ReplyStatus::Failed => "failed",
        }
    }

    /// The status named `name` (the JSON form of a reply).
    pub fn from_name(name: &str) -> Option<ReplyStatus> {
        [ReplyStatus::Ready, ReplyStatus::Delivered, ReplyStatus::Done, ReplyStatus::Failed]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A device's answer about a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply<'a> {
    /// The command's id (empty for [`ReplyStatus::Ready`]).
    pub id: &'a str,
    /// What happened.
    pub status: ReplyStatus,
    /// A short text for the cloud (a result, or why it failed); may be empty.
    pub message: &'a str,
}

impl<'a> Reply<'a> {
    /// Writes the version byte and the reply into `buf`; [`MAX_REPLY_LEN`] bytes suffice
    /// when `id` and `message` are within their limits.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let len = buf.len();
        let (first, rest) = buf.split_first_mut().ok_or(EncodeError::BufferTooSmall { len })?;
        *first = COMMAND_VERSION;
        postcard::to_slice(self, rest).map(|used| used.len() + 1).map_err(|e| encode_error(e, len))
    }

    /// Reads a reply made by [`Reply::encode`].
    pub fn decode(bytes: &'a [u8]) -> Result<Reply<'a>, DecodeError> {
        let rest = versioned(bytes)?;
        let (reply, rest) = postcard::take_from_bytes::<Reply<'a>>(rest).map_err(decode_error)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { count: rest.len() });
        }
        Ok(reply)
    }
}

fn versioned(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Truncated),
        Some((&COMMAND_VERSION, rest)) => Ok(rest),
        Some((&other, _)) => Err(DecodeError::UnsupportedVersion(other)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_command_round_trips_and_borrows() {
        let command = Command { id: "c-1", name: "set_interval", payload: r#"{"ms":2000}"#, deadline_ms: Some(17) };
        let mut buf = [0u8; 128];
        let len = command.encode(&mut buf).unwrap();
        assert_eq!(buf[0], COMMAND_VERSION);
        // version, then "c-1" as a length and bytes: the layout is the contract.
        assert_eq!(&buf[1..5], b"\x03c-1");
        let back = Command::decode(&buf[..len]).unwrap();
        assert_eq!(back, command);
        assert_eq!(back.payload_u64(Some("ms")), Some(2000));
        assert!(back.is_expired(18) && !back.is_expired(17));
    }

    #[test]
    fn a_reply_round_trips_within_its_bound() {
        let id = "i".repeat(MAX_COMMAND_ID_LEN);
        let message = "m".repeat(MAX_REPLY_MESSAGE_LEN);
        let reply = Reply { id: &id, status: ReplyStatus::Failed, message: &message };
        let mut buf = [0u8; MAX_REPLY_LEN];
        let len = reply.encode(&mut buf).unwrap();
        assert_eq!(Reply::decode(&buf[..len]).unwrap(), reply);
        assert!(Reply { id: "x", status: ReplyStatus::Done, message: "" }.encode(&mut [0u8; 2]).is_err());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(Command::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(Command::decode(b"{\"id\":1}"), Err(DecodeError::UnsupportedVersion(b'{')));
        assert!(Command::decode(&[COMMAND_VERSION, 200]).is_err());
        assert!(matches!(Reply::decode(&[COMMAND_VERSION, 0, 9, 0]), Err(DecodeError::Malformed { .. })));
        let mut buf = [0u8; 32];
        let len = Reply { id: "", status: ReplyStatus::Ready, message: "" }.encode(&mut buf).unwrap();
        buf[len] = 1;
        assert_eq!(Reply::decode(&buf[..=len]), Err(DecodeError::TrailingBytes { count: 1 }));
    }

    #[test]
    fn payload_numbers() {
        let with = |payload| Command { id: "c", name: "n", payload, deadline_ms: None };
        assert_eq!(with("5000").payload_u64(None), Some(5000));
        assert_eq!(with(r#" { "a": 1, "ms" : 250 } "#).payload_u64(Some("ms")), Some(250));
        assert_eq!(with(r#"{"ms":-1}"#).payload_u64(Some("ms")), None);
        assert_eq!(with(r#"{"x":{"ms":1}}"#).payload_u64(Some("ms")), None);
        assert_eq!(with("null").payload_u64(Some("ms")), None);
        assert_eq!(ReplyStatus::from_name("done"), Some(ReplyStatus::Done));
        assert_eq!(ReplyStatus::from_name("expired"), None);
    }
}
