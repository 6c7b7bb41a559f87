//! Where a [`Device`](crate::Device) keeps the events the gateway has not confirmed: the
//! [`Retention`] trait, implemented by the RAM [`Ring`] (the default) and, with the `flash`
//! feature, by [`FlashRing`](crate::FlashRing) in NOR flash.
//!
//! # Contract (both implementations; `ring.rs` states it in full)
//!
//! - An event leaves only when an ack covers it ([`Retention::confirm`]: the newest entry of
//!   the ack's boot with a seq `<=` the ack's, and every entry before it) or when the full
//!   policy drops it (counted in [`Retention::dropped`]).
//! - Order is send order: [`Retention::next_unsent`] walks from the oldest entry not yet
//!   published on the current link; [`Retention::rewind`] starts again from the oldest.
//! - [`Retention::push`] either keeps the event (`Ok`) or changes nothing.

use edge_event::Ack;

use crate::error::Error;
use crate::numbering::EventId;
use crate::ring::{Ring, Stored};

/// The store of unconfirmed events behind a [`Device`](crate::Device); see the module docs.
pub trait Retention {
    /// Appends an encoded event, applying the full policy; on error nothing is kept.
    fn push(&mut self, id: EventId, payload: &[u8]) -> Result<(), Error>;

    /// Applies the gateway's ack; returns how many events it released.
    fn confirm(&mut self, ack: Ack) -> usize;

    /// The oldest event not yet published on the current link (read from storage if
    /// needed, hence `&mut`).
    fn next_unsent(&mut self) -> Result<Option<Stored<'_>>, Error>;

    /// Records that the event [`Retention::next_unsent`] returned was published.
    fn mark_sent(&mut self);

    /// Forgets what was published on the link that just ended.
    fn rewind(&mut self);

    /// Unconfirmed events.
    fn len(&self) -> usize;

    /// Unconfirmed events not yet published on the current link.
    fn unsent(&self) -> usize;

    /// True when every event has been confirmed (or dropped).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events ever dropped by the full policy.
    fn dropped(&self) -> u64;
}

impl<const SLOTS: usize, const BYTES: usize> Retention for Ring<SLOTS, BYTES> {
    fn push(&mut self, id: EventId, payload: &[u8]) -> Result<(), Error> {
        Ring::push(self, id, payload)
    }

    fn confirm(&mut self, ack: Ack) -> usize {
        Ring::confirm(self, ack)
    }

    fn next_unsent(&mut self) -> Result<Option<Stored<'_>>, Error> {
        Ok(Ring::next_unsent(self))
    }

    fn mark_sent(&mut self) {
        Ring::mark_sent(self)
    }

    fn rewind(&mut self) {
        Ring::rewind(self)
    }

    fn len(&self) -> usize {
        Ring::len(self)
    }

    fn unsent(&self) -> usize {
        Ring::unsent(self)
    }

    fn dropped(&self) -> u64 {
        Ring::dropped(self)
    }
}
