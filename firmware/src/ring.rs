//! The retention ring: encoded events the gateway has not confirmed yet, oldest first, in
//! static memory (`SLOTS` events, `BYTES` bytes of encodings).
//!
//! # Invariants
//!
//! 1. **An event leaves the ring only when an ack covers it, or when the full policy drops
//!    it (and [`Ring::dropped`] counts it).** Nothing else removes an event: not a PUBACK
//!    (the device broker sends that before the gateway has stored anything, README,
//!    "What it guarantees" 6), not a disconnect, not a reboot of the simulator.
//! 2. **Order is send order.** Events are appended in seq order and published oldest
//!    first; after a reconnect ([`Ring::rewind`]) every unconfirmed event is published
//!    again, from the oldest.
//! 3. **What an ack covers.** The gateway publishes `{"boot":B,"seq":S}`, the last event of
//!    the device it committed. It processes one device's events in the order they were
//!    sent, and after a reconnect the device re-sends from its oldest unconfirmed event; so
//!    when `(B, S)` is committed, every event sent before it has been processed too
//!    (committed, or refused for good as invalid). [`Ring::confirm`] therefore removes the
//!    newest entry of boot `B` with a seq `<= S` *and everything before it*. Within one boot
//!    that is exactly "seq <= S"; across a simulated reboot (a ring that survives a reset,
//!    holding events of two boots) it also frees the older boot's events, whose own ack
//!    the gateway may have coalesced away. An ack naming no entry removes nothing.
//! 4. **Bytes.** Each encoding is stored contiguously (so it can be published without a
//!    copy); an encoding that does not fit before the end of the buffer starts again at
//!    offset 0, leaving a gap smaller than that encoding. An event of up to `BYTES` bytes
//!    always fits in an empty ring.
//!
//! # When full
//!
//! The ring is full when it holds `SLOTS` events or the next encoding finds no room.
//! [`WhenFull::DropOldest`] frees the oldest events (counted in [`Ring::dropped`]) until the
//! new one fits: the device keeps the freshest data through a long outage.
//! [`WhenFull::RefuseNew`] keeps every event already taken and returns
//! [`Error::RingFull`]: the application decides (wait, aggregate, or sleep the sensor).

use edge_event::Ack;
use heapless::Deque;

use crate::error::Error;
use crate::numbering::EventId;

/// What [`Ring::push`] does when the ring is full; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WhenFull {
    /// Drop the oldest unconfirmed events, counting them, to keep the new one.
    #[default]
    DropOldest,
    /// Keep what the ring holds and refuse the new event with [`Error::RingFull`].
    RefuseNew,
}

/// One stored event as [`Ring::next_unsent`] and [`Ring::iter`] show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored<'a> {
    /// The event's `(boot, seq)`.
    pub id: EventId,
    /// Its postcard envelope as stored ([`encode_stored`](crate::encode_stored): version 1,
    /// or version 2 with the uptime that each send turns into an age).
    pub payload: &'a [u8],
    /// True if it was published before (on this link or an earlier one).
    pub sent_before: bool,
}

/// 16 bytes: `u32` offset and `u16` length keep the per-slot cost small on any target.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: EventId,
    start: u32,
    len: u16,
    sent_before: bool,
}

impl Entry {
    fn start(&self) -> usize {
        self.start as usize
    }

    fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// End of the entry's space: an empty encoding still takes one byte, so no two entries
    /// start at the same offset and "wrapped" stays decidable from the first and last.
    fn end(&self) -> usize {
        self.start() + self.len().max(1)
    }
}

/// Unconfirmed encoded events: up to `SLOTS` of them in `BYTES` bytes.
///
/// Memory: `BYTES` plus 16 bytes a slot (`(boot, seq)`, offset, length, a flag), plus a few
/// words. An encoding is at most 65,535 bytes (its length is a `u16`); events are at most
/// `edge_event::MAX_ENCODED_LEN`, 779 bytes since format version 2 (pinned by
/// edge-event's `max_encoded_len_is_pinned`).
#[derive(Debug, Clone)]
pub struct Ring<const SLOTS: usize, const BYTES: usize> {
    entries: Deque<Entry, SLOTS>,
    bytes: [u8; BYTES],
    used: usize,
    /// How many entries, from the front, have been published on the current link.
    sent: usize,
    when_full: WhenFull,
    dropped: u64,
    confirmed: u64,
}

impl<const SLOTS: usize, const BYTES: usize> Ring<SLOTS, BYTES> {
    /// An empty ring with the given full policy; `const`, so it can live in a `static`.
    pub const fn new(when_full: WhenFull) -> Self {
        Ring { entries: Deque::new(), bytes: [0; BYTES], used: 0, sent: 0, when_full, dropped: 0, confirmed: 0 }
    }

    /// Appends an encoded event, applying the full policy. Fails with
    /// [`Error::RingFull`] (policy `RefuseNew`, nothing changed) or
    /// [`Error::BufferTooSmall`] (the encoding is larger than the whole ring).
    pub fn push(&mut self, id: EventId, payload: &[u8]) -> Result<(), Error> {
        let len = payload.len();
        let (Ok(len16), Ok(_)) = (u16::try_from(len), u32::try_from(BYTES)) else {
            return Err(Error::BufferTooSmall { needed: len, available: usize::from(u16::MAX).min(BYTES) });
        };
        if len.max(1) > BYTES || SLOTS == 0 {
            return Err(Error::BufferTooSmall { needed: len, available: if SLOTS == 0 { 0 } else { BYTES } });
        }
        let start = loop {
            if !self.entries.is_full() {
                if let Some(start) = self.place(len.max(1)) {
                    break start;
                }
            }
            match self.when_full {
                WhenFull::RefuseNew => return Err(Error::RingFull),
                WhenFull::DropOldest => {
                    // Terminates: an empty ring has a free slot and room for `len <= BYTES`.
                    self.remove_front(1);
                    self.dropped += 1;
                }
            }
        };
        let Some(dest) = self.bytes.get_mut(start..start + len) else {
            return Err(Error::BufferTooSmall { needed: len, available: BYTES });
        };
        dest.copy_from_slice(payload);
        let entry = Entry {
            id,
            // Both fit: `start < BYTES <= u32::MAX` and `len <= u16::MAX`, checked above.
            start: start as u32,
            len: len16,
            sent_before: false,
        };
        if self.entries.push_back(entry).is_err() {
            return Err(Error::RingFull);
        }
        self.used += len;
        Ok(())
    }

    /// Where `len` contiguous bytes fit after the newest entry, if anywhere.
    fn place(&self, len: usize) -> Option<usize> {
        let (Some(front), Some(back)) = (self.entries.front(), self.entries.back()) else {
            return (len <= BYTES).then_some(0);
        };
        let (head, tail) = (front.start(), back.end());
        if back.start >= front.start {
            // Not wrapped: free space is [tail, BYTES) and [0, head).
            if tail + len <= BYTES {
                Some(tail)
            } else {
                (len <= head).then_some(0)
            }
        } else {
            // Wrapped: free space is [tail, head).
            (tail + len <= head).then_some(tail)
        }
    }

    /// Applies the gateway's ack: removes the newest entry of `ack.boot` with a seq
    /// `<= ack.seq` and every entry before it (module docs, invariant 3); returns how many.
    pub fn confirm(&mut self, ack: Ack) -> usize {
        let covered = self
            .entries
            .iter()
            .rposition(|e| e.id.boot == ack.boot && e.id.seq <= ack.seq)
            .map_or(0, |index| index + 1);
        self.remove_front(covered);
        self.confirmed += covered as u64;
        covered
    }

    fn remove_front(&mut self, count: usize) {
        for _ in 0..count {
            if let Some(entry) = self.entries.pop_front() {
                self.used -= entry.len();
            }
        }
        self.sent = self.sent.saturating_sub(count);
    }

    /// The oldest event not yet published on the current link.
    pub fn next_unsent(&self) -> Option<Stored<'_>> {
        self.entries.get(self.sent).map(|e| self.stored(e))
    }

    /// Records that [`Ring::next_unsent`] was published on the current link.
    pub fn mark_sent(&mut self) {
        if let Some(entry) = self.entries.get_mut(self.sent) {
            entry.sent_before = true;
            self.sent += 1;
        }
    }

    /// Forgets what was published on the link that just ended: every unconfirmed event
    /// is published again, oldest first.
    pub fn rewind(&mut self) {
        self.sent = 0;
    }

    fn stored(&self, entry: &Entry) -> Stored<'_> {
        Stored {
            id: entry.id,
            payload: self.bytes.get(entry.start()..entry.start() + entry.len()).unwrap_or_default(),
            sent_before: entry.sent_before,
        }
    }

    /// Every unconfirmed event, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Stored<'_>> + '_ {
        self.entries.iter().map(|e| self.stored(e))
    }

    /// Unconfirmed events.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when every event has been confirmed (or dropped).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Unconfirmed events not yet published on the current link.
    pub fn unsent(&self) -> usize {
        self.entries.len() - self.sent
    }

    /// Bytes of encodings held (gaps not counted).
    pub fn bytes_used(&self) -> usize {
        self.used
    }

    /// Events the ring has ever dropped to make room (policy [`WhenFull::DropOldest`]).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events the ring has ever released because an ack covered them.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// The full policy.
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }
}

#[cfg(test)]
mod tests;
