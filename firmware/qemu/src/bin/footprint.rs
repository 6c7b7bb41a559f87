//! The smallest realistic firmware, to measure what `edge-firmware` itself costs: a
//! [`Device`] (ring of 32 events in 2 KiB) recording events and polling over a stub
//! transport. No formatting and no panic message, so `size` shows the SDK, not the
//! example's scaffolding. It runs too: `cargo run --release --bin footprint` prints the
//! peak stack use of recording and polling (measured by painting the free RAM), exits 0.

#![no_std]
#![no_main]

use cortex_m as _;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use edge_event::{Reading, Value};
use edge_firmware::{BootId, Device, NoClock, Settings, Transport, TransportError};

/// A link that answers the CONNECT and the SUBSCRIBE and swallows everything else, as a
/// modem driver would sit here.
struct Stub {
    script: &'static [u8],
    at: usize,
    written: usize,
}

impl Transport for Stub {
    fn open(&mut self) -> Result<(), TransportError> {
        self.at = 0;
        Ok(())
    }

    fn close(&mut self) {}

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        let rest = self.script.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        self.written += buf.len();
        Ok(())
    }
}

type Footprint = Device<Stub, NoClock, 32, 2048>;

#[entry]
fn main() -> ! {
    // CONNACK, then the SUBACK of packet id 1 with two granted QoS 1.
    let stub = Stub { script: &[0x20, 2, 0, 0, 0x90, 4, 0, 1, 1, 1], at: 0, written: 0 };
    let ok = run(stub).is_some();
    let used = stack_used();
    if let Ok(mut out) = hio::hstdout() {
        let mut digits = [0u8; 10];
        let mut at = digits.len();
        let mut n = used;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let _ = out.write_all(b"footprint: peak stack ");
        let _ = out.write_all(&digits[at..]);
        let _ = out.write_all(b" bytes\n");
    }
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {
        cortex_m::asm::wfi();
    }
}

/// Builds the device into its static. Out of line: its frame holds the device while it
/// is built, a one-off of `size_of::<Footprint>()` bytes at start-up, not counted below.
#[inline(never)]
fn build(stub: Stub) -> Option<&'static mut Footprint> {
    let device = Footprint::new("footprint", BootId::after(0), stub, NoClock, Settings::default()).ok()?;
    cortex_m::singleton!(: Footprint = device)
}

fn run(stub: Stub) -> Option<()> {
    let device = build(stub)?;
    paint_stack();
    record_and_poll(device)
}

/// What the firmware does for ever: record events, poll.
#[inline(never)]
fn record_and_poll(device: &mut Footprint) -> Option<()> {
    for seq in 0..8u32 {
        let mut event = device.event("environment").ok()?;
        event.push_reading(Reading::new("celsius", Value::F32(20.0 + seq as f32)).ok()?).ok()?;
        device.publish(&mut event).ok()?;
        device.poll(u64::from(seq)).ok()?;
    }
    (device.is_online() && device.transport().written > 0).then_some(())
}

const PAINT: u32 = 0xdead_beef;

extern "C" {
    static mut __sheap: u32;
    static mut _stack_start: u32;
}

/// Fills the RAM between the end of `.bss` and 256 bytes below the stack pointer with a
/// pattern, so that `stack_used` can find the deepest word the program wrote.
fn paint_stack() {
    let sp = cortex_m::register::msp::read() as usize - 256;
    // SAFETY: the region is free RAM below the live stack (cortex-m-rt's layout: `.bss`
    // ends at `__sheap`, the stack grows down from `_stack_start`).
    unsafe {
        let mut p = core::ptr::addr_of_mut!(__sheap);
        while (p as usize) < sp {
            p.write_volatile(PAINT);
            p = p.add(1);
        }
    }
}

/// Bytes of stack ever used: from the top of RAM down to the lowest overwritten word.
fn stack_used() -> usize {
    // SAFETY: reads the free RAM region painted by `paint_stack`.
    unsafe {
        let top = core::ptr::addr_of_mut!(_stack_start) as usize;
        let mut p = core::ptr::addr_of_mut!(__sheap);
        while (p as usize) < top && p.read_volatile() == PAINT {
            p = p.add(1);
        }
        top - p as usize
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
