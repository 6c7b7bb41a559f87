//! The async device on a host: `edge-firmware`'s [`AsyncDevice`] over tokio's `TcpStream`
//! through `embedded-io-adapters` (`FromTokio`), timed by tokio's clock. The same code runs
//! on an embassy board with embassy-net's `TcpSocket` and embassy-time (see the README,
//! "Porting to an embassy board").
//!
//! ```text
//! cargo run -p edge-firmware --features async,std --example async_tokio -- PORT DEVICE EVENTS BOOT
//! ```
//!
//! Records EVENTS events, one every 2 ms, sleeping between polls until the device's next
//! deadline or the next sample; exits 0 once the gateway confirmed every one, 1 after 60 s.
//! It has no wall clock, as a board without RTC or SNTP: its clock is [`Uptime`] on the
//! timer's own milliseconds, so each event goes out with its age and the gateway dates it.
//! `tests/tests/firmware_async.rs` runs it against the real gateway binary.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use edge_event::{Reading, Value};
use edge_firmware::asynch::{AsyncDevice, AsyncLink, Timer};
use edge_firmware::{BootId, Settings, TransportError, Uptime};
use embedded_io_adapters::tokio_1::FromTokio;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A TCP connection that `open` (re)makes.
struct TokioLink {
    addr: SocketAddr,
    stream: Option<FromTokio<TcpStream>>,
}

impl TokioLink {
    fn stream(&mut self) -> std::io::Result<&mut FromTokio<TcpStream>> {
        self.stream.as_mut().ok_or_else(|| std::io::ErrorKind::NotConnected.into())
    }
}

impl embedded_io_async::ErrorType for TokioLink {
    type Error = std::io::Error;
}

impl embedded_io_async::Read for TokioLink {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream()?.read(buf).await
    }
}

impl embedded_io_async::Write for TokioLink {
    async fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream()?.write(buf).await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.stream()?.flush().await
    }
}

impl AsyncLink for TokioLink {
    async fn open(&mut self) -> Result<(), TransportError> {
        let stream = TcpStream::connect(self.addr).await.map_err(|_| TransportError::Open)?;
        stream.set_nodelay(true).map_err(|_| TransportError::Open)?;
        self.stream = Some(FromTokio::new(stream));
        Ok(())
    }

    fn close(&mut self) {
        self.stream = None;
    }
}

/// Milliseconds since the program started, on tokio's clock.
struct TokioTimer(Instant);

impl Timer for TokioTimer {
    fn now_ms(&mut self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }

    async fn wait_until(&mut self, at_ms: u64) {
        tokio::time::sleep_until(self.0 + Duration::from_millis(at_ms)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, device_id, events, boot] = args.as_slice() else {
        eprintln!("usage: async_tokio PORT DEVICE EVENTS BOOT");
        return ExitCode::from(2);
    };
    let (Ok(port), Ok(events), Ok(boot)) = (port.parse::<u16>(), events.parse::<u64>(), boot.parse::<u32>()) else {
        eprintln!("async_tokio: PORT, EVENTS and BOOT are numbers");
        return ExitCode::from(2);
    };
    let link = TokioLink { addr: SocketAddr::from(([127, 0, 0, 1], port)), stream: None };
    let settings = Settings { retry_min_ms: 50, retry_max_ms: 1_000, ..Settings::default() };
    let start = Instant::now();
    let timer = TokioTimer(start);
    // The very milliseconds the timer gives `poll`: the age at a send is `now - uptime`.
    let clock = Uptime(move || start.elapsed().as_millis() as u64);
    let mut device: AsyncDevice<_, _, _, 256, 16384> =
        match AsyncDevice::new(device_id, BootId::new(boot), link, timer, clock, settings) {
            Ok(device) => device,
            Err(err) => {
                eprintln!("async_tokio: {err}");
                return ExitCode::from(2);
            }
        };
    let (period_ms, give_up_ms) = (2, 60_000);
    let (mut next_sample, mut recorded, mut waits) = (0u64, 0u64, 0u64);
    loop {
        let polled = device.poll().await;
        let now = device.timer().now_ms();
        let stats = device.device().stats();
        if recorded == events && device.device().pending() == 0 {
            println!(
                "async_tokio: all confirmed: recorded {recorded} confirmed {} connects {} waits {waits}",
                stats.confirmed, stats.connects
            );
            return ExitCode::SUCCESS;
        }
        if now >= give_up_ms {
            eprintln!("async_tokio: timed out: recorded {recorded} pending {}", device.device().pending());
            return ExitCode::FAILURE;
        }
        while recorded < events && now >= next_sample {
            let dev = device.device();
            let Ok(mut event) = dev.event("counter") else { break };
            let kept = Reading::new("pulses", Value::I64(recorded as i64))
                .map_err(edge_firmware::Error::from)
                .and_then(|reading| Ok(event.push_reading(reading)?))
                .and_then(|()| dev.publish(&mut event));
            if kept.is_err() {
                break; // the ring is full: try again after the gateway confirms
            }
            recorded += 1;
            next_sample += period_ms;
        }
        let deadline = if recorded < events { polled.deadline_ms.min(next_sample) } else { polled.deadline_ms };
        waits += 1;
        device.wait(deadline.min(give_up_ms)).await;
    }
}
