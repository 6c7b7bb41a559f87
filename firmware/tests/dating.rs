//! Time without a wall clock, through the device: with only a monotonic clock
//! ([`Uptime`]) every event is stored with its uptime and sent with its age at that very
//! send, first send and re-sends alike; an event kept in flash from an earlier boot keeps
//! its uptime (its clock restarted), so the gateway leaves its `ts` unknown rather than
//! date it wrongly (numbering.rs, "Time without a wall clock").

#![allow(clippy::unwrap_used)]

mod support;

use std::cell::Cell;
use std::rc::Rc;

use edge_event::{Dating, Reading, Timestamp, Value};
use edge_firmware::{BootId, Device, Retention, Settings, Uptime};
use support::FakeBroker;

/// The board's monotonic ms: what the test passes to `poll`, and what the clock reads.
#[derive(Clone, Default)]
struct Millis(Rc<Cell<u64>>);

impl Millis {
    fn at(&self, ms: u64) -> u64 {
        self.0.set(ms);
        ms
    }

    fn clock(&self) -> Uptime<impl FnMut() -> u64> {
        let ms = self.0.clone();
        Uptime(move || ms.get())
    }
}

fn record<T, C, const S: usize, const B: usize, R>(device: &mut Device<T, C, S, B, 256, R>)
where
    T: edge_firmware::Transport,
    C: edge_firmware::Clock,
    R: Retention,
{
    let mut event = device.event("counter").unwrap();
    assert_eq!(event.ts, Timestamp::Unknown, "no wall clock");
    event.push_reading(Reading::new("pulses", Value::I64(1)).unwrap()).unwrap();
    device.publish(&mut event).unwrap();
}

#[test]
fn with_only_an_uptime_each_send_carries_the_age_at_that_send_resends_included() {
    let millis = Millis::default();
    let broker = FakeBroker::default();
    let mut device: Device<_, _, 16, 2048> =
        Device::new("dev-1", BootId::new(3), broker.clone(), millis.clock(), Settings::default()).unwrap();
    millis.at(1_000);
    record(&mut device);
    device.poll(millis.at(1_250)).unwrap();
    assert_eq!(broker.state().datings, [Some(Dating::Age(250))], "taken 250 ms before this send");

    broker.crash(); // not committed: the device must send it again
    let _ = device.poll(millis.at(1_300));
    let mut now = 1_300;
    while !device.is_online() {
        now += 1_000;
        let _ = device.poll(millis.at(now));
    }
    assert_eq!(broker.received_ids(), [(3, 1), (3, 1)]);
    assert_eq!(broker.state().datings[1], Some(Dating::Age(now - 1_000)), "the age grew while it waited");
}

#[cfg(feature = "flash")]
#[test]
fn an_event_kept_in_flash_across_a_reset_keeps_its_uptime_and_new_events_get_ages() {
    use edge_firmware::{FlashRing, WhenFull};
    use support::flash::{MemFlash, SECTOR};

    let flash = MemFlash::new(4, 9);
    let broker = FakeBroker::default();
    let boot = |millis: &Millis| {
        let mut ring: FlashRing<_, 16> =
            FlashRing::open(flash.clone(), 0, 4 * SECTOR as u32, WhenFull::DropOldest).unwrap();
        let boot = ring.next_boot().unwrap();
        Device::<_, _, 0, 0, 256, _>::with_retention(
            "dev-1",
            boot,
            broker.clone(),
            millis.clock(),
            Settings::default(),
            ring,
        )
        .unwrap()
    };
    let before = Millis::default();
    let mut device = boot(&before);
    before.at(5_000);
    record(&mut device);
    drop(device); // a reset before it was sent: the uptime clock starts again from 0

    let after = Millis::default();
    let mut device = boot(&after);
    after.at(200);
    record(&mut device);
    device.poll(after.at(300)).unwrap();
    assert_eq!(broker.received_ids(), [(1, 1), (2, 1)]);
    assert_eq!(
        broker.state().datings,
        [Some(Dating::Uptime(5_000)), Some(Dating::Age(100))],
        "boot 1's uptime is meaningless in boot 2: sent as is (ts unknown), never as an age"
    );
}
