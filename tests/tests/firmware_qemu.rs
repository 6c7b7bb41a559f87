//! The firmware on an emulated 32-bit ARM core: `firmware/qemu` is built for
//! `thumbv7m-none-eabi` and run under `qemu-system-arm -machine lm3s6965evb`; every COBS
//! frame and MQTT publish it prints is decoded with the gateway's decoder and checked
//! field by field, and byte for byte against the same events encoded on this host.
//!
//! Needs `qemu-system-arm` (Debian: `apt-get install -y --no-install-recommends
//! qemu-system-arm`) and the target (`rustup target add thumbv7m-none-eabi`); without
//! them the test fails and says so.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use edge_event::{decode, decode_cobs, encode, encode_cobs, Event, Reading, Timestamp, Value};
use edge_tests::wait_until;

const DEVICE: &str = "qemu-m3";
const BOOT: u32 = 7;
const EVENTS: u32 = 12;
const EPOCH_MS: u64 = 1_764_000_000_000;

/// The lines the emulated firmware printed (built and run once for all tests).
fn output() -> &'static Vec<String> {
    static OUTPUT: OnceLock<Vec<String>> = OnceLock::new();
    OUTPUT.get_or_init(|| {
        let elf = build();
        let (status, stdout, stderr) = run_qemu(&elf);
        assert!(status.success(), "the firmware failed under QEMU ({status}):\n{stdout}\n{stderr}");
        stdout.lines().map(str::to_owned).collect()
    })
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

/// `cargo build --release` in `firmware/qemu` (its `.cargo/config.toml` picks the target
/// and the linker script); returns the ELF.
fn build() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace().join("target"));
    let target = target.join("firmware-qemu");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace().join("firmware/qemu"))
        .args(["build", "--release", "--quiet", "--bin", "edge-firmware-qemu", "--target-dir"])
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cannot run cargo");
    assert!(
        output.status.success(),
        "building firmware/qemu failed (is the target installed? `rustup target add thumbv7m-none-eabi`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    target.join("thumbv7m-none-eabi/release/edge-firmware-qemu")
}

/// A child process killed when dropped, so that a hung QEMU does not outlive a failed test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the ELF under QEMU with a 60 s limit; returns its status, stdout and stderr.
fn run_qemu(elf: &Path) -> (std::process::ExitStatus, String, String) {
    let child = Command::new("qemu-system-arm")
        .args(["-machine", "lm3s6965evb", "-cpu", "cortex-m3", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run qemu-system-arm ({e}): install it with \
                 `apt-get install -y --no-install-recommends qemu-system-arm`"
            )
        });
    let mut qemu = KillOnDrop(child);
    let mut stdout = qemu.0.stdout.take().expect("stdout");
    let mut stderr = qemu.0.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let status = wait_until(Duration::from_secs(60), "the firmware to exit under QEMU", || {
        qemu.0.try_wait().expect("qemu status")
    });
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    (status, reader.join().expect("reader"), err)
}

/// The event the firmware builds for `seq` (see `fill` in firmware/qemu/src/main.rs).
fn expected(seq: u32, ts: Timestamp) -> Event {
    let mut event = Event::new(DEVICE, BOOT, seq, ts, "environment").unwrap();
    event
        .push_reading(Reading::new("celsius", Value::F32(20.0 + seq as f32 * 0.25)).unwrap().with_unit("C").unwrap())
        .unwrap();
    event.push_reading(Reading::new("pulses", Value::I64(i64::from(seq) * 100)).unwrap()).unwrap();
    event.push_reading(Reading::new("open", Value::Bool(seq.is_multiple_of(2))).unwrap()).unwrap();
    event.push_meta("fw", "0.1.0").unwrap();
    event
}

fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length: {text}");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

fn lines(prefix: &str) -> Vec<Vec<u8>> {
    output().iter().filter_map(|l| l.strip_prefix(prefix)).map(hex).collect()
}

/// Topic and payload of an MQTT 3.1.1 QoS 1 PUBLISH, read by hand (the test does not use
/// the firmware's own decoder to check the firmware).
fn publish_parts(packet: &[u8]) -> (String, Vec<u8>) {
    assert_eq!(packet[0], 0x32, "a QoS 1 PUBLISH, not retained, not DUP");
    let (mut remaining, mut at, mut shift) = (0usize, 1, 0);
    loop {
        let byte = packet[at];
        remaining |= usize::from(byte & 0x7f) << shift;
        at += 1;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    assert_eq!(packet.len(), at + remaining, "the remaining length matches");
    let topic_len = usize::from(u16::from_be_bytes([packet[at], packet[at + 1]]));
    let topic = String::from_utf8(packet[at + 2..at + 2 + topic_len].to_vec()).expect("UTF-8 topic");
    let pkid = u16::from_be_bytes([packet[at + 2 + topic_len], packet[at + 3 + topic_len]]);
    assert_ne!(pkid, 0);
    (topic, packet[at + 4 + topic_len..].to_vec())
}

#[test]
fn every_cobs_frame_from_the_emulated_cortex_m3_decodes_with_the_gateway_decoder_field_by_field() {
    let frames = lines("frame ");
    assert_eq!(frames.len(), EVENTS as usize, "output:\n{}", output().join("\n"));
    for (i, mut frame) in frames.into_iter().enumerate() {
        let seq = i as u32 + 1;
        let want = expected(seq, Timestamp::Millis(EPOCH_MS + u64::from(seq) * 1000));
        let mut host = [0u8; edge_event::MAX_COBS_FRAME_LEN];
        let len = encode_cobs(&want, &mut host).unwrap();
        assert_eq!(frame, &host[..len], "seq {seq}: the ARM bytes are the host bytes");
        let event = decode_cobs(&mut frame).unwrap_or_else(|e| panic!("seq {seq}: {e}"));
        assert_eq!((event.device.as_str(), event.boot, event.seq), (DEVICE, BOOT, seq));
        assert_eq!(event.ts, Timestamp::Millis(EPOCH_MS + u64::from(seq) * 1000));
        assert_eq!(event.kind, "environment");
        assert_eq!(
            event.reading("celsius").map(|r| (&r.value, r.unit.as_deref())),
            Some((&Value::F32(20.0 + seq as f32 * 0.25), Some("C")))
        );
        assert_eq!(event.reading("pulses").map(|r| &r.value), Some(&Value::I64(i64::from(seq) * 100)));
        assert_eq!(event.reading("open").map(|r| &r.value), Some(&Value::Bool(seq.is_multiple_of(2))));
        assert_eq!(event.meta_value("fw"), Some("0.1.0"));
        assert_eq!(event.validate(None), Ok(()));
    }
}

#[test]
fn the_emulated_device_publishes_every_event_over_mqtt_and_resends_the_unconfirmed_ones_after_a_cut() {
    let publishes = lines("mqtt ");
    let mut seqs = Vec::new();
    for packet in &publishes {
        let (topic, payload) = publish_parts(packet);
        assert_eq!(topic, format!("devices/{DEVICE}/events"));
        let event = decode(&payload).unwrap_or_else(|e| panic!("{e}: {payload:02x?}"));
        let want = expected(event.seq, Timestamp::Millis(EPOCH_MS));
        let mut host = [0u8; edge_event::MAX_ENCODED_LEN];
        let len = encode(&want, &mut host).unwrap();
        assert_eq!(payload, &host[..len], "seq {}: the ARM bytes are the host bytes", event.seq);
        assert_eq!(event, want);
        seqs.push(event.seq);
    }
    // The loopback gateway commits every 4th publish and crashes at the 6th, losing 5 and
    // 6: the device sends them again, in order, then the rest.
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 5, 6, 7, 8, 9, 10, 11, 12]);
    let stats = output().iter().find(|l| l.starts_with("stats ")).expect("a stats line");
    assert_eq!(stats, "stats recorded=12 confirmed=12 published=14 resent=2 connects=2 link_errors=1");
    assert_eq!(output().last().map(String::as_str), Some("done"));
}
