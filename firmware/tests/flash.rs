//! The flash retention ring on a RAM-backed NOR flash: a device that resets re-sends
//! exactly the events the gateway has not confirmed, with their original `(boot, seq)`; the
//! boot counter survives; and power cuts at random bytes of random writes lose no kept
//! event and bring back at most the documented window (module docs of `flash.rs`).

#![cfg(feature = "flash")]
#![allow(clippy::unwrap_used)]

mod support;

use edge_event::{Ack, Reading, Value};
use edge_firmware::{Device, EventId, FlashRing, NoClock, Retention, Settings, WhenFull};
use proptest::prelude::*;
use support::flash::{MemFlash, SECTOR};
use support::FakeBroker;

type Ring = FlashRing<MemFlash, 64>;
type FlashDevice = Device<FakeBroker, NoClock, 0, 0, 256, Ring>;

fn open(flash: &MemFlash, sectors: usize, when_full: WhenFull) -> Ring {
    FlashRing::open(flash.clone(), 0, (sectors * SECTOR) as u32, when_full).unwrap()
}

fn boot_device(flash: &MemFlash, broker: &FakeBroker) -> FlashDevice {
    let mut ring = open(flash, 4, WhenFull::DropOldest);
    let boot = ring.next_boot().unwrap();
    Device::with_retention("dev-1", boot, broker.clone(), NoClock, Settings::default(), ring).unwrap()
}

fn record(device: &mut FlashDevice, n: usize) {
    for i in 0..n {
        let mut event = device.event("counter").unwrap();
        event.push_reading(Reading::new("pulses", Value::I64(i as i64)).unwrap()).unwrap();
        device.publish(&mut event).unwrap();
    }
}

#[test]
fn after_a_reset_the_device_resends_exactly_the_unconfirmed_events_with_their_original_ids() {
    let flash = MemFlash::new(4, 1);
    let broker = FakeBroker::default();
    let mut device = boot_device(&flash, &broker);
    assert_eq!(device.numbering().boot(), 1, "a fresh flash starts the boot counter");
    record(&mut device, 4);
    device.poll(0).unwrap();
    broker.commit();
    device.poll(1).unwrap();
    assert_eq!(device.pending(), 0);
    record(&mut device, 6);
    device.poll(2).unwrap();
    assert_eq!(broker.received_ids(), (1..=10).map(|s| (1, s)).collect::<Vec<_>>());
    drop(device); // the reset: RAM is gone, the flash and the gateway are not

    broker.state().received.clear();
    let mut device = boot_device(&flash, &broker);
    assert_eq!(device.numbering().boot(), 2, "the boot counter lives in the flash");
    assert_eq!(device.pending(), 6);
    device.poll(10).unwrap();
    assert_eq!(broker.received_ids(), (5..=10).map(|s| (1, s)).collect::<Vec<_>>(), "only the unconfirmed");
    assert_eq!(device.stats().resent, 6);
    record(&mut device, 2);
    device.poll(11).unwrap();
    broker.commit();
    device.poll(12).unwrap();
    assert_eq!(device.pending(), 0, "the ack of boot 2 releases boot 1's events too");
    drop(device);

    let device = boot_device(&flash, &broker);
    assert_eq!((device.numbering().boot(), device.pending()), (3, 0));
    assert_eq!(flash.overwrites(), 0, "never programs a programmed byte");
}

#[test]
fn drop_oldest_recycles_sectors_counting_the_drops_and_a_reset_keeps_the_same_events() {
    let flash = MemFlash::new(3, 2);
    let mut ring = open(&flash, 3, WhenFull::DropOldest);
    for seq in 1..=20 {
        let id = EventId { boot: 1, seq };
        ring.push(id, &payload_of(id, 300)).unwrap();
    }
    assert!(ring.dropped() > 0 && ring.len() + ring.dropped() as usize == 20);
    let kept = ids(&mut ring);
    assert_eq!(kept.last(), Some(&EventId { boot: 1, seq: 20 }), "the newest are kept");
    drop(ring);
    let mut ring = open(&flash, 3, WhenFull::DropOldest);
    assert_eq!(ids(&mut ring), kept);

    let payload = [7u8; 300];
    let mut ring = open(&MemFlash::new(3, 3), 3, WhenFull::RefuseNew);
    let mut taken = 0;
    while ring.push(EventId { boot: 1, seq: taken + 1 }, &payload).is_ok() {
        taken += 1;
    }
    assert!(taken >= 4, "{taken}");
    assert_eq!(ring.push(EventId { boot: 1, seq: 99 }, &payload), Err(edge_firmware::Error::RingFull));
    assert_eq!(ring.confirm(Ack { boot: 1, seq: taken }), taken as usize);
    ring.push(EventId { boot: 1, seq: taken + 1 }, &payload).unwrap();
}

#[test]
fn a_record_damaged_after_it_was_written_is_skipped_and_counted_not_a_blockage() {
    let flash = MemFlash::new(3, 4);
    let mut ring = open(&flash, 3, WhenFull::DropOldest);
    for seq in 1..=3 {
        let id = EventId { boot: 1, seq };
        ring.push(id, &payload_of(id, 40)).unwrap();
    }
    // Wear flips a bit in the second event's payload: after the 16-byte sector header and
    // the first 56-byte record, past the second's 8-byte header and 8-byte id.
    flash.0.borrow_mut().bytes[16 + 56 + 16 + 10] ^= 0x01;
    assert_eq!(ids(&mut ring), [EventId { boot: 1, seq: 1 }, EventId { boot: 1, seq: 3 }]);
    assert_eq!(ring.damaged(), 1);
    assert_eq!(ring.confirm(Ack { boot: 1, seq: 3 }), 3, "the ack releases it with the rest");
}

/// Every kept event, oldest first, with its payload checked.
fn ids(ring: &mut Ring) -> Vec<EventId> {
    ring.rewind();
    let mut out = Vec::new();
    while let Some(stored) = ring.next_unsent().unwrap() {
        assert_eq!(stored.payload, payload_of(stored.id, stored.payload.len()), "{:?}", stored.id);
        out.push(stored.id);
        ring.mark_sent();
    }
    ring.rewind();
    out
}

fn payload_of(id: EventId, len: usize) -> Vec<u8> {
    (0..len).map(|i| (id.seq as usize * 31 + id.boot as usize * 7 + i) as u8).collect()
}

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    Confirm(usize),
    CutAfter(usize),
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..400).prop_map(Op::Push),
        3 => any::<usize>().prop_map(Op::Confirm),
        2 => (0usize..1500).prop_map(Op::CutAfter),
        1 => Just(Op::Reset),
    ]
}

/// What may survive the op that was running when the power went.
enum InFlight {
    None,
    Push(EventId),
    Confirm(usize),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn power_cuts_at_random_bytes_lose_no_kept_event_and_bring_back_at_most_the_window(
        ops in proptest::collection::vec(op(), 1..80),
        seed in any::<u64>(),
    ) {
        let flash = MemFlash::new(4, seed);
        let mut ring = open(&flash, 4, WhenFull::RefuseNew);
        let mut boot = ring.next_boot().unwrap().get();
        let mut seq = 0;
        let mut model: Vec<EventId> = Vec::new();
        for op in ops {
            let in_flight = match op {
                Op::CutAfter(bytes) => {
                    flash.cut_after(bytes);
                    continue;
                }
                Op::Reset => InFlight::None,
                Op::Push(len) => {
                    let id = EventId { boot, seq: seq + 1 };
                    match ring.push(id, &payload_of(id, len)) {
                        Ok(()) => {
                            seq += 1;
                            model.push(id);
                        }
                        Err(_) if flash.is_dead() => {}
                        Err(err) => prop_assert_eq!(err, edge_firmware::Error::RingFull),
                    }
                    InFlight::Push(id)
                }
                Op::Confirm(which) if !model.is_empty() => {
                    let index = which % model.len();
                    let covered = ring.confirm(Ack { boot: model[index].boot, seq: model[index].seq });
                    prop_assert_eq!(covered, index + 1);
                    model.drain(..=index);
                    InFlight::Confirm(index + 1)
                }
                Op::Confirm(_) => InFlight::None,
            };
            if !flash.is_dead() && !matches!(op, Op::Reset) {
                continue;
            }
            // The power went (or a reset): reopen from what the flash holds.
            let lost_power = flash.is_dead();
            flash.power_on();
            let before = model.clone();
            ring = open(&flash, 4, WhenFull::RefuseNew);
            let recovered = ids(&mut ring);
            match in_flight {
                _ if !lost_power => prop_assert_eq!(&recovered, &before),
                InFlight::Push(id) => {
                    let with = [&before[..], &[id]].concat();
                    prop_assert!(recovered == before || recovered == with, "{recovered:?} vs {before:?} + {id:?}");
                }
                InFlight::Confirm(_) | InFlight::None => {
                    // Nothing kept is lost; what comes back is an unrecorded ack's events, in order.
                    prop_assert!(recovered.ends_with(&before), "{recovered:?} lost some of {before:?}");
                }
            }
            if let InFlight::Confirm(covered) = in_flight {
                prop_assert!(recovered.len() <= before.len() + covered, "more than the in-flight ack came back");
            }
            prop_assert_eq!(flash.overwrites(), 0);
            let next = match ring.next_boot() {
                Ok(next) => next.get(),
                Err(edge_firmware::Error::RingFull) => {
                    // Full of unconfirmed events after many resets: the gateway acks them all.
                    let last = *recovered.last().unwrap();
                    prop_assert_eq!(ring.confirm(Ack { boot: last.boot, seq: last.seq }), recovered.len());
                    ring.next_boot().unwrap().get()
                }
                Err(err) => panic!("{err}"),
            };
            prop_assert!(next > boot, "the boot counter went back: {next} after {boot}");
            model = ids(&mut ring);
            (boot, seq) = (next, 0);
        }
    }
}
