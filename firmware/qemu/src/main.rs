//! `edge-firmware` on an emulated Cortex-M3 (QEMU `lm3s6965evb`), printing over
//! semihosting what a gateway would receive:
//!
//! 1. `frame <hex>`: events numbered by [`Numbering`] and encoded as COBS frames, as a
//!    device on a serial line would send them.
//! 2. `mqtt <hex>`: every MQTT PUBLISH a [`Device`] sends through a loopback broker that
//!    acks its events, cuts the link once (so unconfirmed events are re-sent), and
//!    commits the rest.
//! 3. `stats ...` and `done`, then a semihosting exit with status 0 (1 on failure).
//!
//! `tests/tests/firmware_qemu.rs` in the workspace decodes every line with the gateway's
//! decoder and checks each field.

#![no_std]
#![no_main]

mod loopback;

use core::fmt::Write as _;

use cortex_m as _; // its critical-section implementation, which semihosting needs
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio, hprintln};
use edge_event::{encode_cobs, Event, Reading, Timestamp, Value, MAX_COBS_FRAME_LEN};
use edge_firmware::{BootId, Device, Error, Numbering, Settings};

use loopback::Loopback;

/// The device id the test expects.
const DEVICE: &str = "qemu-m3";
/// The boot counter "read from flash"; this boot is the next one.
const STORED_BOOT: u32 = 6;
/// Events of each part.
const EVENTS: u32 = 12;
/// The clock: 2025-11-24T16:00:00Z plus one second per event.
const EPOCH_MS: u64 = 1_764_000_000_000;

/// The device of part 2: a ring of 32 events in 2 KiB. Kept in a static (see `main`), so
/// that `size` counts it in `.bss`.
type QemuDevice = Device<Loopback, fn() -> Option<u64>, 32, 2048>;

#[entry]
fn main() -> ! {
    let ok = match run() {
        Ok(()) => true,
        Err(err) => {
            hprintln!("error {}", err);
            false
        }
    };
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {
        cortex_m::asm::wfi();
    }
}

fn run() -> Result<(), Error> {
    hprintln!(
        "edge-firmware on {} boot {} | sizes: device {} B, event {} B",
        DEVICE,
        BootId::after(STORED_BOOT).get(),
        core::mem::size_of::<QemuDevice>(),
        core::mem::size_of::<Event>()
    );
    frames()?;
    session()?;
    hprintln!("done");
    Ok(())
}

/// The readings of event `seq`, the same in both parts so that the test can check them.
fn fill(event: &mut Event, seq: u32) -> Result<(), Error> {
    event.push_reading(Reading::new("celsius", Value::F32(20.0 + seq as f32 * 0.25))?.with_unit("C")?)?;
    event.push_reading(Reading::new("pulses", Value::I64(i64::from(seq) * 100))?)?;
    event.push_reading(Reading::new("open", Value::Bool(seq.is_multiple_of(2)))?)?;
    event.push_meta("fw", "0.1.0")?;
    Ok(())
}

/// Part 1: events as COBS frames, as on a serial line.
fn frames() -> Result<(), Error> {
    let mut numbering = Numbering::new(DEVICE, BootId::after(STORED_BOOT))?;
    let mut frame = [0u8; MAX_COBS_FRAME_LEN];
    for _ in 0..EVENTS {
        let seq = numbering.next_id()?.seq;
        let mut event = numbering.event("environment", Timestamp::Millis(EPOCH_MS + u64::from(seq) * 1000))?;
        fill(&mut event, seq)?;
        numbering.stamp(&mut event)?;
        numbering.advance();
        let len = encode_cobs(&event, &mut frame)?;
        print_hex("frame ", &frame[..len]);
    }
    Ok(())
}

/// Part 2: a device session through the loopback broker, with one link cut.
fn session() -> Result<(), Error> {
    fn clock() -> Option<u64> {
        Some(EPOCH_MS)
    }
    let settings = Settings { max_inflight: 4, retry_min_ms: 20, ..Settings::default() };
    let loopback = Loopback::new(Some(6), 4);
    let device = QemuDevice::new(DEVICE, BootId::after(STORED_BOOT), loopback, clock, settings)?;
    let Some(device) = cortex_m::singleton!(: QemuDevice = device) else {
        return Err(Error::NotConnected);
    };
    for seq in 1..=EVENTS {
        let mut event = device.event("environment")?;
        fill(&mut event, seq)?;
        device.publish(&mut event)?;
    }
    let mut now = 0;
    while device.pending() > 0 {
        now += 10;
        if now > 60_000 {
            hprintln!("error: {} events still unconfirmed", device.pending());
            return Err(Error::Timeout);
        }
        // Link errors are expected here (the cut): the device reconnects by itself.
        let _ = device.poll(now);
        if device.is_online() && device.ring().unsent() == 0 {
            device.transport_mut().flush_commits();
        }
    }
    let s = device.stats();
    hprintln!(
        "stats recorded={} confirmed={} published={} resent={} connects={} link_errors={}",
        s.recorded,
        s.confirmed,
        s.published,
        s.resent,
        s.connects,
        s.link_errors
    );
    device.disconnect(now);
    Ok(())
}

/// Writes `prefix` and `bytes` in hex as one line on the host's stdout.
pub fn print_hex(prefix: &str, bytes: &[u8]) {
    let mut line: heapless::String<2048> = heapless::String::new();
    let _ = line.push_str(prefix);
    for b in bytes {
        let _ = write!(line, "{b:02x}");
    }
    let _ = line.push('\n');
    if let Ok(mut out) = hio::hstdout() {
        let _ = out.write_all(line.as_bytes());
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
