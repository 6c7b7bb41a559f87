//! Who sent an event and in what order: the device id, the boot id, the sequence number,
//! and when: the timestamp from an optional wall clock, or, without one, the age of the
//! readings at each send.
//!
//! # Time without a wall clock
//!
//! A [`Clock`] that knows no wall time ([`Clock::now_ms`] is `None`) but has a monotonic
//! [`Clock::uptime_ms`] makes the device store each event with the uptime at
//! [`Device::publish`](crate::Device::publish) ([`encode_stored`]: a format-version-2
//! envelope, see `edge_event`'s `dating` module). Every time the event is sent, first or
//! again after a reconnect, [`payload_to_send`] rewrites that uptime into the age
//! `now - uptime` on a copy; the gateway dates the event `received - age`. So an event held
//! for an hour in the ring through an outage is still dated to when it was taken (within
//! the transit time), not to when it was finally sent.
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
//! - An uptime is turned into an age only for events of the current boot: a monotonic
//!   clock restarts with the device, so an event kept from an earlier boot (a ring that
//!   survived a reset) is sent with its uptime, and the gateway leaves its `ts` unknown
//!   rather than date it wrongly.

use edge_event::{validate_device_id, Dating, DeviceId, EncodeError, Event, Timestamp, ValidationError};

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

/// Time for event timestamps: a wall clock, and optionally a monotonic one for devices
/// without a wall clock.
pub trait Clock {
    /// Milliseconds since the Unix epoch (UTC), or `None` while the time is unknown (before
    /// an RTC is set or SNTP answered); such events carry [`Timestamp::Unknown`], dated by
    /// the gateway from [`Clock::uptime_ms`] if there is one.
    fn now_ms(&mut self) -> Option<u64>;

    /// The monotonic clock the application passes to [`Device::poll`](crate::Device::poll)
    /// (ms, typically since power-on), if it wants events without a wall-clock time dated
    /// by their age (module docs). It must be the very clock `poll` gets: the age at a send
    /// is `poll`'s `now_ms` minus this value at publish. `None` (the default): such events
    /// reach the cloud with `"ts": null`.
    fn uptime_ms(&mut self) -> Option<u64> {
        None
    }
}

/// A device without a clock: every event carries [`Timestamp::Unknown`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClock;

impl Clock for NoClock {
    fn now_ms(&mut self) -> Option<u64> {
        None
    }
}

/// A device with only a monotonic clock (no RTC, no SNTP): the closure returns the same
/// milliseconds the application passes to [`Device::poll`](crate::Device::poll), and the
/// gateway dates every event by its age.
///
/// ```
/// use edge_firmware::{Clock, Uptime};
///
/// let mut clock = Uptime(|| 12_345); // e.g. embassy_time::Instant::now().as_millis()
/// assert_eq!((clock.now_ms(), clock.uptime_ms()), (None, Some(12_345)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Uptime<F>(pub F);

impl<F: FnMut() -> u64> Clock for Uptime<F> {
    fn now_ms(&mut self) -> Option<u64> {
        None
    }

    fn uptime_ms(&mut self) -> Option<u64> {
        Some((self.0)())
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

/// Encodes `event` as the ring stores it: with a wall-clock `ts`, or without a clock at
/// all, the plain envelope (`edge_event::encode`); with no wall time but an uptime, the
/// envelope dated by [`Dating::Uptime`], which [`payload_to_send`] turns into an age.
/// `buf` needs [`edge_event::MAX_ENCODED_LEN`] bytes.
pub fn encode_stored(event: &Event, clock: &mut impl Clock, buf: &mut [u8]) -> Result<usize, EncodeError> {
    match (event.ts, clock.uptime_ms()) {
        (Timestamp::Unknown, Some(uptime)) => edge_event::encode_dated(event, Dating::Uptime(uptime), buf),
        _ => edge_event::encode(event, buf),
    }
}

/// The bytes to publish for a stored event `id` at `now_ms` (the monotonic time given to
/// `poll`) in boot `current_boot`: for an event of this boot stored with an uptime, a copy
/// in `buf` dated by its age now; otherwise the stored bytes themselves. `buf` needs
/// [`edge_event::MAX_ENCODED_LEN`] bytes (a shorter one sends the stored bytes).
pub fn payload_to_send<'a>(
    id: EventId,
    stored: &'a [u8],
    current_boot: u32,
    now_ms: u64,
    buf: &'a mut [u8],
) -> &'a [u8] {
    if id.boot != current_boot {
        return stored;
    }
    edge_event::age_at_send(stored, now_ms, buf).unwrap_or(stored)
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

    fn stored(clock: &mut impl Clock, ts: Timestamp) -> Vec<u8> {
        let mut numbering = Numbering::new("env-7", BootId::new(3)).unwrap();
        let mut event = numbering.event("temperature", ts).unwrap();
        numbering.stamp(&mut event).unwrap();
        numbering.advance();
        let mut buf = [0u8; edge_event::MAX_ENCODED_LEN];
        let len = encode_stored(&event, clock, &mut buf).unwrap();
        buf[..len].to_vec()
    }

    #[test]
    fn an_event_without_wall_time_is_sent_with_its_age_at_every_send() {
        let bytes = stored(&mut Uptime(|| 10_000), Timestamp::Unknown);
        let id = EventId { boot: 3, seq: 1 };
        let mut buf = [0u8; edge_event::MAX_ENCODED_LEN];
        for (now, age) in [(10_040, 40), (3_610_000, 3_600_000)] {
            let sent = payload_to_send(id, &bytes, 3, now, &mut buf);
            let (event, dating) = edge_event::decode_dated(sent).unwrap();
            assert_eq!((event.seq, dating), (1, Some(Dating::Age(age))), "sent at {now}");
        }
    }

    #[test]
    fn a_wall_clock_or_no_clock_stores_the_plain_envelope_and_sends_it_unchanged() {
        let id = EventId { boot: 3, seq: 1 };
        let mut buf = [0u8; edge_event::MAX_ENCODED_LEN];
        for bytes in [
            stored(&mut || Some(1_764_000_000_000), Timestamp::Millis(1_764_000_000_000)),
            stored(&mut NoClock, Timestamp::Unknown),
        ] {
            assert_eq!(bytes[0], edge_event::FORMAT_VERSION);
            assert_eq!(payload_to_send(id, &bytes, 3, 99, &mut buf), &bytes[..]);
        }
    }

    #[test]
    fn an_uptime_from_an_earlier_boot_is_not_turned_into_an_age() {
        let bytes = stored(&mut Uptime(|| 10_000), Timestamp::Unknown);
        let mut buf = [0u8; edge_event::MAX_ENCODED_LEN];
        let sent = payload_to_send(EventId { boot: 3, seq: 1 }, &bytes, 4, 20_000, &mut buf);
        assert_eq!(sent, &bytes[..]);
        assert_eq!(edge_event::decode_dated(sent).unwrap().1, Some(Dating::Uptime(10_000)));
    }

    #[test]
    fn a_closure_is_a_clock() {
        let mut clock = || Some(1_764_000_000_123);
        assert_eq!(timestamp(&mut clock), Timestamp::Millis(1_764_000_000_123));
        assert_eq!(timestamp(&mut NoClock), Timestamp::Unknown);
    }
}
