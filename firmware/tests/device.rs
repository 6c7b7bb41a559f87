//! The device against an in-memory broker and gateway: events leave the ring only when
//! acked, every unconfirmed event is re-sent in order after a crash, the full policies,
//! backoff, keep-alive, commands, reboots, and a broker that sends garbage.

#![allow(clippy::unwrap_used)]

mod support;

use edge_event::command::{Command, ReplyStatus};
use edge_event::{Reading, Value};
use edge_firmware::{BootId, Clock, Device, Error, NoClock, Outcome, Password, Settings, WhenFull};
use support::FakeBroker;

type TestDevice = Device<FakeBroker, NoClock, 16, 2048>;

fn device_with(settings: Settings) -> (TestDevice, FakeBroker) {
    let broker = FakeBroker::default();
    let device = Device::new("dev-1", BootId::new(7), broker.clone(), NoClock, settings).unwrap();
    (device, broker)
}

fn device() -> (TestDevice, FakeBroker) {
    device_with(Settings::default())
}

fn record(device: &mut TestDevice, n: usize) {
    for _ in 0..n {
        let mut event = device.event("counter").unwrap();
        event.push_reading(Reading::new("pulses", Value::I64(42)).unwrap()).unwrap();
        device.publish(&mut event).unwrap();
    }
}

fn seqs(range: std::ops::RangeInclusive<u32>) -> Vec<(u32, u32)> {
    range.map(|seq| (7, seq)).collect()
}

#[test]
fn events_reach_the_broker_in_order_and_leave_the_ring_only_when_the_gateway_acks_them() {
    let (mut device, broker) = device();
    record(&mut device, 5);
    device.poll(0).unwrap();
    assert!(device.is_online());
    assert_eq!(broker.state().filters, ["devices/dev-1/ack", "devices/dev-1/commands"]);
    assert_eq!(broker.received_ids(), seqs(1..=5));
    device.poll(1).unwrap();
    assert_eq!(device.pending(), 5, "PUBACKs arrived, but a PUBACK is not a commit");
    broker.commit();
    device.poll(2).unwrap();
    assert_eq!(device.pending(), 0);
    let stats = device.stats();
    assert_eq!((stats.recorded, stats.confirmed, stats.published, stats.resent), (5, 5, 5, 0));
    let event = &broker.state().received[0];
    assert_eq!((event.device.as_str(), event.kind.as_str()), ("dev-1", "counter"));
}

#[test]
fn after_a_gateway_crash_every_unconfirmed_event_is_sent_again_in_order() {
    let (mut device, broker) = device();
    record(&mut device, 4);
    device.poll(0).unwrap();
    broker.commit();
    record(&mut device, 6);
    device.poll(1).unwrap();
    assert_eq!(device.pending(), 6, "seq 1..=4 acked, 5..=10 sent but not committed");
    broker.crash();
    assert!(device.poll(2).unwrap_err().is_link());
    assert!(!device.is_online());
    // The gateway's restart loses its retained ack too.
    broker.state().mark = None;
    let mut now = 2;
    while !device.is_online() {
        now += 10;
        let _ = device.poll(now);
    }
    assert_eq!(broker.received_ids()[10..], seqs(5..=10));
    broker.commit();
    device.poll(now + 1).unwrap();
    assert_eq!(device.pending(), 0);
    assert_eq!(device.stats().resent, 6);
    assert_eq!(device.stats().connects, 2);
}

#[test]
fn the_retained_ack_a_reconnecting_device_receives_frees_what_was_committed_meanwhile() {
    let (mut device, broker) = device();
    record(&mut device, 3);
    device.poll(0).unwrap();
    broker.state().subscribed = false; // the ack is not delivered on this link...
    broker.commit();
    broker.crash(); // ...and the link drops
    let _ = device.poll(1);
    let mut now = 1;
    while !device.is_online() {
        now += 10;
        let _ = device.poll(now);
    }
    assert_eq!(device.pending(), 0, "the retained ack came right after the SUBACK");
    assert_eq!(broker.received_ids().len(), 3, "nothing re-sent");
}

#[test]
fn a_gateway_that_is_down_is_retried_with_a_growing_backoff_up_to_the_maximum() {
    let settings = Settings { retry_min_ms: 100, retry_max_ms: 800, ..Settings::default() };
    let (mut device, broker) = device_with(settings);
    broker.state().down = true;
    record(&mut device, 2);
    let mut attempts = Vec::new();
    for now in 0..10_000 {
        let before = broker.state().opens;
        let _ = device.poll(now);
        if broker.state().opens > before {
            attempts.push(now);
        }
    }
    let gaps: Vec<u64> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() > 10, "{gaps:?}");
    assert!(gaps[0] >= 50 && gaps[0] <= 100, "first delay within [min/2, min]: {gaps:?}");
    assert!(gaps.iter().all(|&g| g <= 800), "never above the maximum: {gaps:?}");
    assert!(gaps[gaps.len() - 3..].iter().all(|&g| g >= 400), "grown to [max/2, max]: {gaps:?}");
    assert_eq!(device.pending(), 2, "nothing lost while the gateway was down");
    broker.state().down = false;
    let mut now = 10_000;
    while !device.is_online() {
        now += 10;
        let _ = device.poll(now);
    }
    assert_eq!(broker.received_ids(), seqs(1..=2));
}

#[test]
fn drop_oldest_keeps_the_newest_events_through_an_outage_and_counts_the_rest() {
    let (mut device, broker) = device();
    broker.state().down = true;
    record(&mut device, 20);
    assert_eq!(device.pending(), 16);
    assert_eq!(device.stats().dropped, 4);
    broker.state().down = false;
    device.poll(0).unwrap();
    assert_eq!(broker.received_ids(), seqs(5..=20));
}

#[test]
fn refuse_new_reports_a_full_ring_and_does_not_use_up_a_seq() {
    let settings = Settings { when_full: WhenFull::RefuseNew, ..Settings::default() };
    let (mut device, broker) = device_with(settings);
    record(&mut device, 16);
    let mut event = device.event("counter").unwrap();
    assert_eq!(device.publish(&mut event), Err(Error::RingFull));
    device.poll(0).unwrap();
    broker.commit();
    device.poll(1).unwrap();
    assert_eq!(device.publish(&mut event).unwrap().seq, 17);
    assert_eq!(device.stats().dropped, 0);
}

#[test]
fn an_event_the_gateway_would_dead_letter_is_refused_at_once_and_uses_no_seq() {
    let (mut device, _broker) = device();
    let mut event = device.event("temperature").unwrap();
    event.push_reading(Reading::new("celsius", Value::F32(f32::NAN)).unwrap()).unwrap();
    let err = device.publish(&mut event).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)) && !err.is_link(), "{err}");
    let mut bad_type = device.event("temp/rature").unwrap();
    assert!(matches!(device.publish(&mut bad_type), Err(Error::Invalid(_))));
    record(&mut device, 1);
    assert_eq!((device.pending(), device.numbering().next_id().unwrap().seq), (1, 2));
}

#[test]
fn no_more_than_max_inflight_publishes_wait_for_their_puback() {
    let settings = Settings { max_inflight: 3, ..Settings::default() };
    let (mut device, broker) = device_with(settings);
    broker.state().withhold_pubacks = true;
    record(&mut device, 10);
    device.poll(0).unwrap();
    device.poll(1).unwrap();
    assert_eq!(broker.received_ids(), seqs(1..=3));
    broker.state().withhold_pubacks = false;
    broker.send_raw(&[0x40, 2, 0, 2, 0x40, 2, 0, 3]); // PUBACKs of the first two publishes
    device.poll(2).unwrap();
    assert_eq!(broker.received_ids(), seqs(1..=5));
    for now in 3..10 {
        device.poll(now).unwrap();
    }
    assert_eq!(broker.received_ids(), seqs(1..=10));
}

#[test]
fn a_broker_that_stops_answering_pings_is_dropped_and_reconnected() {
    let settings = Settings { keep_alive_secs: 1, ..Settings::default() };
    let (mut device, broker) = device_with(settings);
    device.poll(0).unwrap();
    device.poll(1_000).unwrap();
    device.poll(1_001).unwrap();
    assert_eq!(broker.state().pings, 1);
    broker.state().silent = true;
    device.poll(2_001).unwrap();
    assert_eq!(device.poll(3_001), Err(Error::Timeout));
    assert!(!device.is_online());
    assert_eq!(device.stats().link_errors, 1);
}

#[test]
fn a_missing_connack_times_out_and_the_device_tries_again() {
    let settings = Settings { response_timeout_ms: 500, ..Settings::default() };
    let (mut device, broker) = device_with(settings);
    broker.state().mute_connack = true;
    device.poll(0).unwrap();
    assert_eq!(device.poll(499).map(|a| a.received), Ok(0));
    assert_eq!(device.poll(500), Err(Error::Timeout));
    broker.state().mute_connack = false;
    let mut now = 500;
    while !device.is_online() {
        now += 10;
        let _ = device.poll(now);
    }
    assert_eq!(broker.state().opens, 2);
}

#[test]
fn commands_reach_the_handler_and_are_acknowledged() {
    let (mut device, broker) = device();
    device.poll(0).unwrap();
    broker.publish_to_device("devices/dev-1/commands", b"{\"led\":true}", 5);
    let mut got = Vec::new();
    device.poll_with(1, |cmd| got.push(cmd.to_vec())).unwrap();
    assert_eq!(got, [b"{\"led\":true}".to_vec()]);
    device.poll(2).unwrap();
    assert_eq!(device.stats().commands, 1);
}

fn command_bytes(id: &str, name: &str, payload: &str, deadline_ms: Option<u64>) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let len = Command { id, name, payload, deadline_ms }.encode(&mut buf).unwrap();
    buf[..len].to_vec()
}

fn replies(broker: &FakeBroker) -> Vec<(String, ReplyStatus, String)> {
    broker.state().replies.clone()
}

#[test]
fn a_command_is_run_once_and_answered_delivered_then_done_and_a_repeat_from_memory() {
    let (mut device, broker) = device();
    device.poll(0).unwrap();
    assert_eq!(replies(&broker), [(String::new(), ReplyStatus::Ready, String::new())], "ready after the SUBACK");
    let set = command_bytes("c-1", "set_interval", r#"{"ms":250}"#, None);
    broker.publish_to_device("devices/dev-1/commands", &set, 5);
    let mut interval = 0;
    let mut runs = 0;
    let mut handler = |command: &Command<'_>| {
        runs += 1;
        match (command.name, command.payload_u64(Some("ms"))) {
            ("set_interval", Some(ms)) => {
                interval = ms;
                Outcome::done("interval set")
            }
            _ => Outcome::failed("unknown command"),
        }
    };
    device.poll_commands(1, &mut handler).unwrap();
    // The gateway did not get the answer and sends it again; then an unknown command.
    broker.publish_to_device("devices/dev-1/commands", &set, 6);
    broker.publish_to_device("devices/dev-1/commands", &command_bytes("c-2", "dance", "null", None), 7);
    device.poll_commands(2, &mut handler).unwrap();
    device.poll(3).unwrap();
    assert_eq!((runs, interval), (2, 250), "c-1 ran once, c-2 once");
    let got = replies(&broker);
    let expected = [
        ("c-1", ReplyStatus::Delivered, ""),
        ("c-1", ReplyStatus::Done, "interval set"),
        ("c-1", ReplyStatus::Delivered, ""),
        ("c-1", ReplyStatus::Done, "interval set"),
        ("c-2", ReplyStatus::Delivered, ""),
        ("c-2", ReplyStatus::Failed, "unknown command"),
    ];
    let expected: Vec<_> = expected.iter().map(|(i, s, m)| (i.to_string(), *s, m.to_string())).collect();
    assert_eq!(got[1..], expected[..]);
    let stats = device.stats();
    assert_eq!((stats.commands, stats.commands_run, stats.commands_repeated), (3, 2, 1));
}

#[derive(Debug, Clone, Copy)]
struct FixedClock(u64);

impl Clock for FixedClock {
    fn now_ms(&mut self) -> Option<u64> {
        Some(self.0)
    }
}

#[test]
fn a_command_past_its_deadline_fails_without_running_and_garbage_is_counted() {
    let broker = FakeBroker::default();
    let mut device: Device<FakeBroker, FixedClock, 4, 512> =
        Device::new("dev-1", BootId::new(1), broker.clone(), FixedClock(10_000), Settings::default()).unwrap();
    device.poll(0).unwrap();
    broker.publish_to_device("devices/dev-1/commands", &command_bytes("late", "ping", "null", Some(9_999)), 1);
    broker.publish_to_device("devices/dev-1/commands", b"{\"not\":\"a command\"}", 2);
    broker.publish_to_device("devices/dev-1/commands", &command_bytes("ok", "ping", "null", Some(10_000)), 3);
    let mut ran = Vec::new();
    device
        .poll_commands(1, |command| {
            ran.push(command.id.to_owned());
            Outcome::done("pong")
        })
        .unwrap();
    assert_eq!(ran, ["ok"]);
    let got = replies(&broker);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[2].1, ReplyStatus::Failed);
    assert!(got[2].2.contains("deadline"), "{got:?}");
    assert_eq!((got[4].0.as_str(), got[4].1, got[4].2.as_str()), ("ok", ReplyStatus::Done, "pong"));
    assert_eq!(device.stats().bad_commands, 1);
    assert!(device.is_online());
}

#[test]
fn a_malformed_ack_is_counted_and_ignored() {
    let (mut device, broker) = device();
    record(&mut device, 2);
    device.poll(0).unwrap();
    broker.publish_to_device("devices/dev-1/ack", b"{\"boot\":7,\"seq\":\"x\"}", 1);
    device.poll(1).unwrap();
    assert_eq!((device.pending(), device.stats().bad_acks), (2, 1));
    assert!(device.is_online());
}

#[test]
fn garbage_from_the_broker_drops_the_link_without_losing_events() {
    let (mut device, broker) = device();
    record(&mut device, 3);
    device.poll(0).unwrap();
    broker.send_raw(&[0xf0, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(matches!(device.poll(1), Err(Error::Protocol { .. })));
    assert_eq!(device.pending(), 3);
    let mut now = 1;
    while !device.is_online() {
        now += 10;
        let _ = device.poll(now);
    }
    assert_eq!(broker.received_ids(), [seqs(1..=3), seqs(1..=3)].concat());
}

#[test]
fn a_simulated_reboot_keeps_the_ring_and_numbers_the_new_boot_from_one() {
    let (mut device, broker) = device();
    broker.state().down = true;
    record(&mut device, 2);
    device.reboot(BootId::after(7), 0);
    record(&mut device, 2);
    broker.state().down = false;
    let mut now = 0;
    while !device.is_online() {
        now += 10;
        let _ = device.poll(now);
    }
    assert_eq!(broker.received_ids(), [(7, 1), (7, 2), (8, 1), (8, 2)]);
    broker.commit();
    device.poll(now + 1).unwrap();
    assert_eq!(device.pending(), 0, "the ack of boot 8 covers boot 7's events sent before");
}

#[test]
fn the_largest_command_the_gateway_sends_by_default_fits_the_default_receive_buffer() {
    // commands.max_size = "200B" and the longest device id: the whole PUBLISH must fit
    // DEFAULT_RX_LEN (256) bytes.
    let id = "d".repeat(edge_event::MAX_DEVICE_ID_LEN);
    let broker = FakeBroker::default();
    let mut device: TestDevice =
        Device::new(&id, BootId::new(1), broker.clone(), NoClock, Settings::default()).unwrap();
    device.poll(0).unwrap();
    let mut payload = String::from("\"");
    let mut bytes = command_bytes("big", "ping", &payload, None);
    while bytes.len() < 200 {
        payload.insert(1, 'x');
        bytes = command_bytes("big", "ping", &format!("{payload}\""), None);
    }
    assert_eq!(bytes.len(), 200);
    broker.publish_to_device(&format!("devices/{id}/commands"), &bytes, 9);
    let mut ran = false;
    device
        .poll_commands(1, |_| {
            ran = true;
            Outcome::done("")
        })
        .unwrap();
    assert!(ran && device.is_online());
}

#[test]
fn the_device_logs_in_with_its_id_and_password_and_a_refused_login_is_retried_with_backoff() {
    let (mut device, broker) = device();
    device.poll(0).unwrap();
    assert_eq!(broker.state().logins, [(None, None)], "anonymous without a password");

    let settings = Settings {
        password: Some(Password::new(b"s3cret")),
        retry_min_ms: 100,
        retry_max_ms: 400,
        ..Settings::default()
    };
    assert!(!format!("{settings:?}").contains("s3cret"), "Debug redacts the password");
    let (mut device, broker) = device_with(settings);
    broker.state().connack_code = 4;
    let err = device.poll(0).unwrap_err();
    assert!(err.is_login_refused() && err.is_link(), "{err:?}");
    assert_eq!(broker.state().logins, [(Some("dev-1".to_owned()), Some(b"s3cret".to_vec()))]);
    assert!(!device.is_online());
    for now in (1..2_000).step_by(10) {
        let _ = device.poll(now);
    }
    let opens = broker.state().opens;
    assert!((3..=8).contains(&opens), "a refused login backs off like any link error: {opens} opens");

    broker.state().connack_code = 0;
    let settings = Settings { username: Some("fleet-a"), password: Some(Password::new(b"pw")), ..Settings::default() };
    let (mut device, broker) = device_with(settings);
    device.poll(0).unwrap();
    assert!(device.is_online());
    assert_eq!(broker.state().logins, [(Some("fleet-a".to_owned()), Some(b"pw".to_vec()))]);
}

#[test]
fn a_session_lost_right_after_subscribing_keeps_the_backoff_growing_until_one_stays_up() {
    let settings = Settings { retry_min_ms: 100, retry_max_ms: 1_600, stable_after_ms: 5_000, ..Settings::default() };
    let (mut device, broker) = device_with(settings);
    record(&mut device, 3);
    // Every session dies just after its SUBACK: the backoff must still grow.
    let mut connects = Vec::new();
    for now in 0..20_000 {
        let _ = device.poll(now);
        if device.is_online() {
            connects.push(now);
            broker.crash();
        }
    }
    let gaps: Vec<u64> = connects.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(connects.len() < 25, "no reconnect storm: {} sessions in 20 s, gaps {gaps:?}", connects.len());
    assert!(gaps[gaps.len() - 3..].iter().all(|&g| g >= 800), "grown to [max/2, max]: {gaps:?}");
    // A session that stays up past stable_after_ms resets the backoff.
    let mut now = 20_000;
    while !device.is_online() {
        now += 1;
        let _ = device.poll(now);
    }
    for _ in 0..6_000 {
        now += 1;
        device.poll(now).unwrap();
    }
    broker.crash();
    let lost = now;
    while !device.is_online() {
        now += 1;
        let _ = device.poll(now);
    }
    assert!(now - lost <= 101, "back to retry_min_ms after a stable session: {} ms", now - lost);
}

#[test]
fn a_retained_command_larger_than_the_receive_buffer_is_skipped_and_counted_not_a_session_killer() {
    let (mut device, broker) = device();
    record(&mut device, 3);
    device.poll(0).unwrap();
    assert!(device.is_online());
    broker.publish_to_device("devices/dev-1/commands", &[b'x'; 400], 11);
    broker.commit();
    device.poll(1).unwrap();
    device.poll(2).unwrap();
    assert!(device.is_online(), "the session survives");
    assert_eq!(device.stats().oversized, 1);
    assert_eq!((device.stats().connects, device.stats().link_errors), (1, 0));
    assert_eq!(device.pending(), 0, "the ack behind the big message still arrives");
}

#[test]
fn next_deadline_says_when_the_device_must_be_polled_so_it_can_sleep_until_then() {
    let settings = Settings { keep_alive_secs: 30, retry_min_ms: 100, ..Settings::default() };
    let (mut device, broker) = device_with(settings);
    assert_eq!(device.next_deadline(0), 0, "offline and due: poll now");
    device.poll(0).unwrap();
    assert!(device.is_online());
    assert_eq!(device.next_deadline(5), 30_000, "idle online: the keep-alive ping");
    record(&mut device, 1);
    assert_eq!(device.next_deadline(6), 6, "an event to send: now");
    device.poll(6).unwrap();
    device.poll(7).unwrap();
    assert_eq!(device.next_deadline(8), 30_006, "the ping is due a keep-alive after the last send");
    broker.crash();
    let _ = device.poll(9);
    let retry = device.next_deadline(10);
    assert!((59..=109).contains(&retry), "offline: the reconnect time, {retry}");
}
