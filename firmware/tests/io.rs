//! `Io<TcpLink>`: a std `TcpStream` through the `embedded-io` traits as the device's
//! transport, against a scripted broker on a loopback socket: the device connects,
//! subscribes and publishes, never blocks on a read, and notices the peer closing.

#![cfg(feature = "std")]
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use edge_firmware::host::TcpLink;
use edge_firmware::{BootId, Device, Io, NoClock, Settings};

#[test]
fn a_device_over_io_tcp_link_gets_online_publishes_and_sees_the_peer_close() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        // CONNECT -> CONNACK; SUBSCRIBE (pkid 1) -> SUBACK; then read until a PUBLISH on the events topic.
        let _ = socket.read(&mut buf).unwrap();
        socket.write_all(&[0x20, 2, 0, 0]).unwrap();
        let _ = socket.read(&mut buf).unwrap();
        socket.write_all(&[0x90, 4, 0, 1, 1, 1]).unwrap();
        while !got.windows(17).any(|w| w == b"devices/io-1/even") {
            let n = socket.read(&mut buf).unwrap();
            assert!(n > 0, "the device closed first");
            got.extend_from_slice(&buf[..n]);
        }
    });
    let mut device: Device<_, _, 8, 1024> =
        Device::new("io-1", BootId::new(1), Io::new(TcpLink::new(addr)), NoClock, Settings::default()).unwrap();
    let mut event = device.event("counter").unwrap();
    device.publish(&mut event).unwrap();
    let started = Instant::now();
    while device.stats().published == 0 {
        let polled = Instant::now();
        let _ = device.poll(started.elapsed().as_millis() as u64);
        assert!(polled.elapsed() < Duration::from_secs(1), "a poll blocked");
        assert!(started.elapsed() < Duration::from_secs(10), "never published: {:?}", device.stats());
    }
    assert!(device.is_online());
    broker.join().unwrap(); // the broker closes its socket
    while device.is_online() {
        let _ = device.poll(started.elapsed().as_millis() as u64);
        assert!(started.elapsed() < Duration::from_secs(10), "the closed link went unnoticed");
    }
    assert_eq!(device.stats().link_errors, 1);
    assert_eq!(device.pending(), 1, "unconfirmed, so kept");
}
