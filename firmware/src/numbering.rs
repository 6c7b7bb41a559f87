//! Who sent an event and in what order: the device id, the boot id, the sequence number,
//! and the timestamp from an optional clock.
//!
//! # Invariants
//!
//! - Within one boot, seqs start at 1 and grow by one for every event the device keeps;
//!   an event the ring refuses does not use up a seq (the gateway drops an event whose seq
//!   is not above its committed mark as a duplicate, so seqs must only grow).
//! - A boot id differs from the previous boot's. Take it from a counter the application
//!   persists ([`BootId::after`]: read it, add one, write it back *before* sending) or from
//!   a random seed ([`BootId::from_seed`]) when there is no persistent storage.
//! - `(device, boot, seq)` therefore names one event for ever; the gateway and the cloud
//!   deduplicate on it.

use edge_event::{validate_device_id, DeviceId, Event, Timestamp, ValidationError};

use crate::error::Error;

/// The identity of an event within its device: `(boot, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    /// The boot the event was recorded in.
    pub boot: u32,
    /// Its sequence number within that boot, from 1.
    pub seq: u32,
}

/// A boot id: different on every start of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootId(u32);

impl BootId {
    /// The boot after a persisted counter's value `stored` (wrapping, and skipping 0 so that
    /// an erased flash word, read as 0 or `u32::MAX`, still gives a valid id). Persist
    /// [`BootId::get`] before the first event leaves the device.
    pub const fn after(stored: u32) -> BootId {
        match stored.wrapping_add(1) {
            0 => BootId(1),
            next => BootId(next),
        }
    }

    /// A boot id from a random seed (a hardware RNG, ADC noise, an uninitialised RAM word),
    /// for devices without persistent storage; the bits are mixed so that nearby seeds give
    /// distant ids, and 0 is avoided.
    pub const fn from_seed(seed: u32) -> BootId {
        // The murmur3 finaliser: a bijection on u32 with good avalanche.
        let mut x = seed;
        x ^= x >> 16;
        x = x.wrapping_mul(0x85eb_ca6b);
        x ^= x >> 13;
        x = x.wrapping_mul(0xc2b2_ae35);
        x ^= x >> 16;
        if x == 0 {
            BootId(1)
        } else {
            BootId(x)
        }
    }

    /// A boot id taken as it is (tests, or an id the application computed itself).
    pub const fn new(id: u32) -> BootId {
        BootId(id)
    }

    /// The id.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// Wall-clock time for event timestamps.
pub trait Clock {
    /// Milliseconds since the Unix epoch (UTC), or `None` while the time is unknown (before
    /// an RTC is set or SNTP answered); such events carry [`Timestamp::Unknown`] and the
    /// gateway may stamp them on arrival.
    fn now_ms(&mut self) -> Option<u64>;
}

/// A device without a clock: every event carries [`Timestamp::Unknown`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClock;

impl Clock for NoClock {
    fn now_ms(&mut self) -> Option<u64> {
        None
    }
}

impl<F: FnMut() -> Option<u64>> Clock for F {
    fn now_ms(&mut self) -> Option<u64> {
        self()
    }
}

/// Reads the clock into a [`Timestamp`].
pub fn timestamp(clock: &mut impl Clock) -> Timestamp {
    clock.now_ms().map_or(Timestamp::Unknown, Timestamp::Millis)
}

/// Numbers a device's events: its id, the current boot and the next seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbering {
    device: DeviceId,
    boot: u32,
    /// The next seq; a `u64` so that "every `u32` used" is representable.
    next_seq: u64,
}

impl Numbering {
    /// Numbering for `device` in boot `boot`, from seq 1; fails if the id is not a valid
    /// topic level.
    pub fn new(device: &str, boot: BootId) -> Result<Numbering, Error> {
        validate_device_id(device)?;
        let device = DeviceId::try_from(device).map_err(|_| ValidationError::DeviceIdTooLong { len: device.len() })?;
        Ok(Numbering { device, boot: boot.get(), next_seq: 1 })
    }

    /// The device id.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The current boot id.
    pub fn boot(&self) -> u32 {
        self.boot
    }

    /// The id the next kept event gets, or [`Error::SequenceExhausted`].
    pub fn next_id(&self) -> Result<EventId, Error> {
        let seq = u32::try_from(self.next_seq).map_err(|_| Error::SequenceExhausted)?;
        Ok(EventId { boot: self.boot, seq })
    }

    /// A new event of this device and boot, without readings, stamped `ts`; its seq is
    /// set by [`Numbering::stamp`] when it is kept.
    pub fn event(&self, kind: &str, ts: Timestamp) -> Result<Event, Error> {
        Ok(Event::new(&self.device, self.boot, 0, ts, kind)?)
    }

    /// Writes this device, this boot and the next seq into `event` and returns that id;
    /// the seq is used up only by [`Numbering::advance`], once the event is kept.
    pub fn stamp(&self, event: &mut Event) -> Result<EventId, Error> {
        let id = self.next_id()?;
        event.device.clone_from(&self.device);
        event.boot = id.boot;
        event.seq = id.seq;
        Ok(id)
    }

    /// Uses up the seq [`Numbering::stamp`] handed out.
    pub fn advance(&mut self) {
        self.next_seq = self.next_seq.saturating_add(1);
    }

    /// Starts boot `boot`: seqs begin again at 1.
    pub fn reboot(&mut self, boot: BootId) {
        self.boot = boot.get();
        self.next_seq = 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn boot_after_a_stored_counter_skips_zero() {
        assert_eq!(BootId::after(6).get(), 7);
        assert_eq!(BootId::after(u32::MAX).get(), 1);
        assert_eq!(BootId::after(0).get(), 1);
    }

    #[test]
    fn boot_from_nearby_seeds_differs_widely_and_is_never_zero() {
        let a = BootId::from_seed(1).get();
        let b = BootId::from_seed(2).get();
        assert_ne!(a, b);
        assert!((a ^ b).count_ones() > 4);
        assert_ne!(BootId::from_seed(0).get(), 0);
    }

    #[test]
    fn seqs_start_at_one_and_grow_only_when_advanced() {
        let mut numbering = Numbering::new("env-7", BootId::new(3)).unwrap();
        let mut event = numbering.event("temperature", Timestamp::Unknown).unwrap();
        assert_eq!(numbering.stamp(&mut event).unwrap(), EventId { boot: 3, seq: 1 });
        assert_eq!((event.device.as_str(), event.boot, event.seq), ("env-7", 3, 1));
        // Not kept: the same seq again.
        assert_eq!(numbering.stamp(&mut event).unwrap().seq, 1);
        numbering.advance();
        assert_eq!(numbering.stamp(&mut event).unwrap().seq, 2);
        numbering.reboot(BootId::new(4));
        assert_eq!(numbering.next_id().unwrap(), EventId { boot: 4, seq: 1 });
    }

    #[test]
    fn the_last_seq_is_u32_max_and_then_the_boot_is_exhausted() {
        let mut numbering = Numbering::new("d", BootId::new(1)).unwrap();
        numbering.next_seq = u64::from(u32::MAX);
        assert_eq!(numbering.next_id().unwrap().seq, u32::MAX);
        numbering.advance();
        assert_eq!(numbering.next_id(), Err(Error::SequenceExhausted));
    }

    #[test]
    fn invalid_device_ids_are_refused() {
        for bad in ["", "a/b", "a+b", "#", &"x".repeat(33)] {
            assert!(matches!(Numbering::new(bad, BootId::new(1)), Err(Error::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn a_closure_is_a_clock() {
        let mut clock = || Some(1_764_000_000_123);
        assert_eq!(timestamp(&mut clock), Timestamp::Millis(1_764_000_000_123));
        assert_eq!(timestamp(&mut NoClock), Timestamp::Unknown);
    }
}
