//! The crate's one error enum, and the transport's. Every message stands alone, and
//! [`Error::is_link`] tells the errors that cost the connection (the [`Device`](crate::Device)
//! has already gone back to reconnecting) from the ones about a single event.

use core::fmt;

use edge_event::{EncodeError, TooLong, ValidationError};

/// What went wrong; small and heap-free.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The byte link failed or the peer closed it.
    Transport(TransportError),
    /// The broker sent bytes that are not valid MQTT 3.1.1, or a packet a client never
    /// expects at that point.
    Protocol {
        /// What was wrong.
        reason: &'static str,
    },
    /// The broker refused the connection (the CONNACK return code, 1 to 5) or a
    /// subscription (SUBACK `0x80`).
    Refused {
        /// The return code.
        code: u8,
    },
    /// An incoming packet is larger than the receive buffer (the `RX` const generic).
    PacketTooLarge {
        /// The packet's full length in bytes.
        len: usize,
        /// The receive buffer's length.
        max: usize,
    },
    /// The broker did not answer a CONNECT, SUBSCRIBE or PINGREQ in time.
    Timeout,
    /// A packet or an event does not fit the buffer meant for it (an MQTT string over
    /// 65,535 bytes, or an event larger than the whole retention ring).
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The retention ring is full and its policy is [`WhenFull::RefuseNew`](crate::WhenFull::RefuseNew).
    RingFull,
    /// The event could not be encoded.
    Encode(EncodeError),
    /// A string or list given for an event is longer than the format allows.
    TooLong(TooLong),
    /// The device id, or an event, breaks the rules the gateway checks (`Event::validate`):
    /// the gateway would dead-letter it, so it never enters the ring.
    Invalid(ValidationError),
    /// This boot has used every sequence number; start a new boot.
    SequenceExhausted,
    /// The operation needs a connection and there is none.
    NotConnected,
    /// The flash behind a `FlashRing` failed, is damaged, or its region does not fit.
    Storage {
        /// What failed.
        reason: &'static str,
    },
}

/// Why a [`Transport`](crate::Transport) call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportError {
    /// The link could not be opened (nothing listening, no route, modem not attached).
    Open,
    /// The peer closed the link.
    Closed,
    /// A read or write failed.
    Io,
    /// A write could not complete in time.
    TimedOut,
}

impl Error {
    /// True when the error cost the connection: the device has dropped the link and
    /// reconnects on a later poll, re-sending every unconfirmed event.
    pub const fn is_link(&self) -> bool {
        matches!(
            self,
            Error::Transport(_)
                | Error::Protocol { .. }
                | Error::Refused { .. }
                | Error::PacketTooLarge { .. }
                | Error::Timeout
                | Error::NotConnected
        )
    }
}

impl Error {
    /// True for a refused login: CONNACK 4 (bad user name or password) or 5 (not
    /// authorised). Retrying cannot help until the credentials change.
    pub const fn is_login_refused(&self) -> bool {
        matches!(self, Error::Refused { code: 4 | 5 })
    }
}

impl From<TransportError> for Error {
    fn from(err: TransportError) -> Self {
        Error::Transport(err)
    }
}

impl From<EncodeError> for Error {
    fn from(err: EncodeError) -> Self {
        Error::Encode(err)
    }
}

impl From<ValidationError> for Error {
    fn from(err: ValidationError) -> Self {
        Error::Invalid(err)
    }
}

impl From<TooLong> for Error {
    fn from(err: TooLong) -> Self {
        Error::TooLong(err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport(err) => write!(f, "link to the broker failed: {err}"),
            Error::Protocol { reason } => write!(f, "MQTT protocol error: {reason}"),
            Error::Refused { code } => write!(f, "the broker refused (return code {code:#04x})"),
            Error::PacketTooLarge { len, max } => {
                write!(f, "incoming packet of {len} bytes does not fit the {max}-byte receive buffer")
            }
            Error::Timeout => f.write_str("the broker did not answer in time"),
            Error::BufferTooSmall { needed, available } => {
                write!(f, "{needed} bytes do not fit in the {available} available")
            }
            Error::RingFull => f.write_str("the retention ring is full and its policy refuses new events"),
            Error::Encode(err) => write!(f, "cannot encode the event: {err}"),
            Error::TooLong(err) => err.fmt(f),
            Error::Invalid(err) => write!(f, "invalid event: {err}"),
            Error::SequenceExhausted => f.write_str("this boot has used every sequence number; start a new boot"),
            Error::NotConnected => f.write_str("not connected to the broker"),
            Error::Storage { reason } => write!(f, "retention storage: {reason}"),
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportError::Open => "cannot open the link",
            TransportError::Closed => "the peer closed the link",
            TransportError::Io => "read or write failed",
            TransportError::TimedOut => "write timed out",
        })
    }
}

impl core::error::Error for Error {}

impl core::error::Error for TransportError {}
