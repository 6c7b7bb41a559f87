//! The smallest realistic firmware, to measure what `edge-firmware` itself costs: a
//! [`Device`] (ring of 32 events in 2 KiB) recording events and polling over a stub
//! transport. No formatting and no panic message, so `size` shows the SDK, not the
//! example's scaffolding. It runs too: `cargo run --release --bin footprint` prints the
//! peak stack use of recording and polling (measured by painting the free RAM), exits 0.
//!
//! Features (`scripts/firmware-footprint` builds each one alone):
//! - `flash`: the events live in a `FlashRing` of 32 slots instead of the RAM ring, on a
//!   NOR flash stand-in (RAM that `memory.x` keeps out of `.data`/`.bss`, so it is not
//!   counted as the SDK's), with the boot counter read from it.
//! - `async`: the device is an `AsyncDevice` over an `embedded-io-async` stub link and a
//!   stub `Timer`, driven by a ten-line `block_on` (a board uses its executor instead).

#![no_std]
#![no_main]

use cortex_m as _;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use edge_event::{Reading, Value};
use edge_firmware::{BootId, Device, NoClock, Settings};

/// CONNACK, then the SUBACK of packet id 1 with two granted QoS 1.
const SCRIPT: &[u8] = &[0x20, 2, 0, 0, 0x90, 4, 0, 1, 1, 1];

/// A link that answers the CONNECT and the SUBSCRIBE and swallows everything else, as a
/// modem driver would sit here.
struct Stub {
    script: &'static [u8],
    at: usize,
    written: usize,
}

impl Stub {
    fn take(&mut self, buf: &mut [u8]) -> usize {
        let rest = self.script.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        n
    }
}

#[cfg(not(feature = "async"))]
impl edge_firmware::Transport for Stub {
    fn open(&mut self) -> Result<(), edge_firmware::TransportError> {
        self.at = 0;
        Ok(())
    }

    fn close(&mut self) {}

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, edge_firmware::TransportError> {
        Ok(self.take(buf))
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), edge_firmware::TransportError> {
        self.written += buf.len();
        Ok(())
    }
}

#[cfg(feature = "async")]
mod asynch {
    //! The stub as an `embedded-io-async` link, a stub timer, and an executor of one
    //! future.

    use core::convert::Infallible;
    use core::future::Future;
    use core::pin::pin;
    use core::task::{Context, Poll, Waker};

    use edge_firmware::asynch::{AsyncLink, Timer};
    use edge_firmware::TransportError;

    use super::Stub;

    impl embedded_io_async::ErrorType for Stub {
        type Error = Infallible;
    }

    impl embedded_io_async::Read for Stub {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
            match self.take(buf) {
                // Nothing more from the "broker": wait for ever (the device's deadline wins).
                0 => core::future::pending().await,
                n => Ok(n),
            }
        }
    }

    impl embedded_io_async::Write for Stub {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
            self.written += buf.len();
            Ok(buf.len())
        }

        async fn flush(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
    }

    impl AsyncLink for Stub {
        async fn open(&mut self) -> Result<(), TransportError> {
            self.at = 0;
            Ok(())
        }

        fn close(&mut self) {}
    }

    /// A clock that jumps to whatever time it is asked to wait for.
    pub struct Ticks(pub u64);

    impl Timer for Ticks {
        fn now_ms(&mut self) -> u64 {
            self.0
        }

        async fn wait_until(&mut self, at_ms: u64) {
            self.0 = self.0.max(at_ms);
        }
    }

    /// Polls `future` until it is ready (the stubs never leave it waiting for a wake-up).
    pub fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }
}

#[cfg(feature = "flash")]
mod nor {
    //! A NOR flash stand-in: 4 KiB of RAM that `memory.x` reserves outside `.data` and
    //! `.bss` (region `NOR`), read and programmed as a memory-mapped internal flash is read
    //! and programmed through its controller. Programming only clears bits, as on NOR.

    use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

    extern "C" {
        static mut _nor_start: u8;
    }

    /// The region, taken once.
    pub struct Nor(&'static mut [u8; Nor::LEN]);

    /// An access outside the region or not aligned.
    #[derive(Debug)]
    pub struct Fault;

    impl NorFlashError for Fault {
        fn kind(&self) -> NorFlashErrorKind {
            NorFlashErrorKind::OutOfBounds
        }
    }

    impl Nor {
        /// Bytes of the region: four 1 KiB sectors (`memory.x`, `NOR`).
        pub const LEN: usize = 4096;

        /// The region, erased (a new chip); `None` on a second call.
        pub fn take() -> Option<Nor> {
            static mut TAKEN: bool = false;
            // SAFETY: single core, called from `main` before anything else runs; `TAKEN`
            // makes the `&'static mut` to the reserved region unique.
            unsafe {
                if core::ptr::addr_of!(TAKEN).read() {
                    return None;
                }
                core::ptr::addr_of_mut!(TAKEN).write(true);
                let region = &mut *core::ptr::addr_of_mut!(_nor_start).cast::<[u8; Nor::LEN]>();
                region.fill(0xFF);
                Some(Nor(region))
            }
        }

        fn range(&self, offset: u32, len: usize) -> Result<core::ops::Range<usize>, Fault> {
            let start = offset as usize;
            let end = start.checked_add(len).filter(|&end| end <= Nor::LEN).ok_or(Fault)?;
            Ok(start..end)
        }
    }

    impl ErrorType for Nor {
        type Error = Fault;
    }

    impl ReadNorFlash for Nor {
        const READ_SIZE: usize = 1;

        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Fault> {
            let range = self.range(offset, bytes.len())?;
            bytes.copy_from_slice(&self.0[range]);
            Ok(())
        }

        fn capacity(&self) -> usize {
            Nor::LEN
        }
    }

    impl NorFlash for Nor {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = 1024;

        fn erase(&mut self, from: u32, to: u32) -> Result<(), Fault> {
            let aligned =
                (from as usize).is_multiple_of(Self::ERASE_SIZE) && (to as usize).is_multiple_of(Self::ERASE_SIZE);
            let len = (to as usize).checked_sub(from as usize).filter(|_| aligned).ok_or(Fault)?;
            let range = self.range(from, len)?;
            self.0[range].fill(0xFF);
            Ok(())
        }

        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Fault> {
            if !(offset as usize).is_multiple_of(Self::WRITE_SIZE) || !bytes.len().is_multiple_of(Self::WRITE_SIZE) {
                return Err(Fault);
            }
            let range = self.range(offset, bytes.len())?;
            for (cell, byte) in self.0[range].iter_mut().zip(bytes) {
                *cell &= byte;
            }
            Ok(())
        }
    }
}

/// Where the device keeps unconfirmed events: the RAM ring (32 events in 2 KiB), or with
/// `flash` a `FlashRing` of 32 slots (the RAM ring's sizes are then 0).
#[cfg(not(feature = "flash"))]
mod keep {
    pub const SLOTS: usize = 32;
    pub const BYTES: usize = 2048;
    pub type Retention = edge_firmware::Ring<SLOTS, BYTES>;
}
#[cfg(feature = "flash")]
mod keep {
    pub const SLOTS: usize = 0;
    pub const BYTES: usize = 0;
    pub type Retention = edge_firmware::FlashRing<super::nor::Nor, 32>;
}

#[cfg(not(feature = "async"))]
type Link = Stub;
#[cfg(feature = "async")]
type Link = edge_firmware::asynch::DevicePipe;

type Sdk = Device<Link, NoClock, { keep::SLOTS }, { keep::BYTES }, { edge_firmware::DEFAULT_RX_LEN }, keep::Retention>;

#[cfg(not(feature = "async"))]
type Footprint = Sdk;
#[cfg(feature = "async")]
type Footprint = edge_firmware::asynch::AsyncDevice<
    Stub,
    asynch::Ticks,
    NoClock,
    { keep::SLOTS },
    { keep::BYTES },
    { edge_firmware::DEFAULT_RX_LEN },
    keep::Retention,
>;

#[entry]
fn main() -> ! {
    let stub = Stub { script: SCRIPT, at: 0, written: 0 };
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
    let (retention, boot) = retention()?;
    #[cfg(not(feature = "async"))]
    let link = stub;
    #[cfg(feature = "async")]
    let link = edge_firmware::asynch::Pipe::new();
    let device = Sdk::with_retention("footprint", boot, link, NoClock, Settings::default(), retention).ok()?;
    #[cfg(feature = "async")]
    let device = Footprint::from_device(device, stub, asynch::Ticks(0));
    cortex_m::singleton!(: Footprint = device)
}

/// A fresh RAM ring and the first boot.
#[cfg(not(feature = "flash"))]
fn retention() -> Option<(keep::Retention, BootId)> {
    Some((keep::Retention::new(edge_firmware::WhenFull::DropOldest), BootId::after(0)))
}

/// The flash ring, and the boot counter read from it and written back.
#[cfg(feature = "flash")]
fn retention() -> Option<(keep::Retention, BootId)> {
    let nor = nor::Nor::take()?;
    let end = nor::Nor::LEN as u32;
    let mut ring = keep::Retention::open(nor, 0, end, edge_firmware::WhenFull::DropOldest).ok()?;
    let boot = ring.next_boot().ok()?;
    Some((ring, boot))
}

fn run(stub: Stub) -> Option<()> {
    let device = build(stub)?;
    paint_stack();
    record_and_poll(device)
}

/// What the firmware does for ever: record events, poll.
#[cfg(not(feature = "async"))]
#[inline(never)]
fn record_and_poll(device: &mut Footprint) -> Option<()> {
    for seq in 0..8u32 {
        record(device, seq)?;
        device.poll(u64::from(seq)).ok()?;
    }
    (device.is_online() && device.transport().written > 0).then_some(())
}

/// What the firmware does for ever: record events, poll, sleep until the next deadline
/// or sample.
#[cfg(feature = "async")]
#[inline(never)]
fn record_and_poll(device: &mut Footprint) -> Option<()> {
    use edge_firmware::asynch::Timer;
    asynch::block_on(async {
        for seq in 0..8u32 {
            record(device.device(), seq)?;
            let polled = device.poll().await;
            polled.result.ok()?;
            let next_sample = device.timer().now_ms() + 1;
            device.wait(polled.deadline_ms.min(next_sample)).await;
        }
        let written = device.link().written;
        (device.device().is_online() && written > 0).then_some(())
    })
}

fn record(device: &mut Sdk, seq: u32) -> Option<()> {
    let mut event = device.event("environment").ok()?;
    event.push_reading(Reading::new("celsius", Value::F32(20.0 + seq as f32)).ok()?).ok()?;
    device.publish(&mut event).ok()?;
    Some(())
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
