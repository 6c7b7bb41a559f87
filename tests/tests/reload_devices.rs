//! Device users reloaded live, end to end: the real binary with a `users_file`, SIGHUP after
//! the file changed, real MQTT clients (rumqttc devices, mosquitto_pub, Mosquitto as the
//! cloud). A user added can connect; a removed one's open connection is closed (counted
//! `revoked`) and it is refused from then on; the other device's connection stays up
//! through the reload and its events still reach the cloud and are acknowledged on it. A
//! limit the embedded broker cannot take live fails its own part only.

use std::process::{Command, Output};
use std::time::Duration;

use edge_tests::clients::CloudSubscriber;
use edge_tests::gateway::{hash_password, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{event_json, wait_until};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

/// What a device's connection did: its CONNACK, an ack on its ack topic, its end.
#[derive(Debug, PartialEq)]
enum Seen {
    Connected,
    Ack(String),
    Ended(String),
}

/// A device on rumqttc that stays connected, subscribed to its own ack topic, and stops
/// at the first error (no reconnect): an end is seen, never papered over.
async fn device(port: u16, user: &str, password: &str) -> (AsyncClient, mpsc::UnboundedReceiver<Seen>) {
    let mut options = MqttOptions::new(user, "127.0.0.1", port);
    options.set_credentials(user, password).set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10);
    client.subscribe(format!("devices/{user}/ack"), QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::Connected,
                Ok(Event::Incoming(Packet::Publish(p))) => Seen::Ack(String::from_utf8_lossy(&p.payload).into()),
                Ok(_) => continue,
                Err(err) => {
                    let _ = tx.send(Seen::Ended(err.to_string()));
                    return;
                }
            };
            let _ = tx.send(seen);
        }
    });
    (client, rx)
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, seen.recv()).await.expect("something in time").expect("the device task ended")
}

/// mosquitto_pub once as `user`, QoS 1.
fn publish(port: u16, user: &str, password: &str, seq: u32) -> Output {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-i", user, "-u", user, "-P", password])
        .args(["-t", &format!("devices/{user}/events"), "-m", &event_json(user, 1, seq)])
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)")
}

fn metric(setup: &Setup, series: &str) -> f64 {
    edge_tests::http::metric(setup.http_port, series).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_by_sighup_connects_and_a_removed_one_is_closed_and_refused_while_others_stay() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let users_file = data.path().join("devices.passwd");
    let line = |user: &str| format!("{user}:{}\n", hash_password(&format!("pw-{user}")));
    let keeper_line = line("keeper");
    std::fs::write(&users_file, [keeper_line.clone(), line("leaver")].concat()).unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.devices_auth = format!("users_file = \"{}\"\n", users_file.display());
    let gateway = Gateway::start(&setup);
    let port = setup.devices_port;

    let (keeper, mut keeper_seen) = device(port, "keeper", "pw-keeper").await;
    let (_leaver, mut leaver_seen) = device(port, "leaver", "pw-leaver").await;
    assert_eq!(next(&mut keeper_seen).await, Seen::Connected);
    assert_eq!(next(&mut leaver_seen).await, Seen::Connected);
    let out = publish(port, "newcomer", "pw-newcomer", 1);
    assert!(!out.status.success(), "not a user yet");

    // The file changes: leaver goes, newcomer comes; keeper's line (and hash) is the same.
    std::fs::write(&users_file, [keeper_line, line("newcomer")].concat()).unwrap();
    let status = Command::new("kill").arg("-HUP").arg(gateway.pid().unwrap().to_string()).status().unwrap();
    assert!(status.success());

    match next(&mut leaver_seen).await {
        Seen::Ended(_) => {}
        other => panic!("the removed user's connection must be closed, saw {other:?}\n{}", gateway.log_text()),
    }
    let revoked = "edge_gateway_device_disconnects_total{reason=\"revoked\"}";
    wait_until(WAIT, "one revoked disconnect counted", || (metric(&setup, revoked) == 1.0).then_some(()));
    let out = publish(port, "leaver", "pw-leaver", 1);
    assert!(!out.status.success(), "a removed user is refused from then on");
    let out = publish(port, "newcomer", "pw-newcomer", 1);
    assert!(out.status.success(), "a user added by the reload connects: {}", String::from_utf8_lossy(&out.stderr));

    // keeper's connection stayed up: an event on it reaches the cloud and is acknowledged
    // on the same connection.
    keeper.publish("devices/keeper/events", QoS::AtLeastOnce, false, event_json("keeper", 1, 7)).await.unwrap();
    let got = sub.wait_distinct(2, WAIT);
    assert!(got.seen.contains(&("keeper".into(), 1, 7)) && got.seen.contains(&("newcomer".into(), 1, 1)));
    loop {
        match next(&mut keeper_seen).await {
            Seen::Ack(ack) if ack.contains("\"seq\":7") => break,
            Seen::Ack(_) => {}
            other => panic!("keeper's connection must stay up through the reload, saw {other:?}"),
        }
    }
    for reason in ["denied", "too_large", "protocol", "takeover", "broker"] {
        let series = format!("edge_gateway_device_disconnects_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&setup, &series), 0.0, "{series}");
    }
    assert!(
        gateway.log_text().contains("device users: 1 added (newcomer), 1 removed (leaver)"),
        "{}",
        gateway.log_text()
    );
}

/// `max_payload` above what the embedded broker was started with cannot apply live: the
/// reload fails that part (named, with the restart it needs) and still applies the users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_above_the_start_value_fails_its_part_and_the_users_still_reload() {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let users_file = data.path().join("devices.passwd");
    let line = |user: &str| format!("{user}:{}\n", hash_password(&format!("pw-{user}")));
    std::fs::write(&users_file, line("first")).unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.devices = "max_payload = \"4KiB\"\n".into();
    setup.devices_auth = format!("users_file = \"{}\"\n", users_file.display());
    let gateway = Gateway::start(&setup);
    let port = setup.devices_port;

    // The config file the gateway runs from (next to its log), with a larger max_payload.
    let config = gateway.log.with_file_name("gateway.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("max_payload = \"4KiB\"", "max_payload = \"8KiB\"");
    std::fs::write(&config, text).unwrap();
    std::fs::write(&users_file, [line("first"), line("second")].concat()).unwrap();
    let status = Command::new("kill").arg("-HUP").arg(gateway.pid().unwrap().to_string()).status().unwrap();
    assert!(status.success());

    let reload = wait_until(WAIT, "the reload's outcome", || {
        let last = gateway.status()["last_reload"].clone();
        (!last.is_null()).then_some(last)
    });
    assert_eq!(reload["result"], "failed", "{reload}");
    let errors = reload["errors"].to_string();
    assert!(
        errors.contains(
            "device limits: devices.max_payload = 8KiB needs a restart: the embedded broker was started with 4KiB"
        ),
        "{reload}"
    );
    assert!(reload["applied"].to_string().contains("device users: 1 added (second)"), "{reload}");
    let out = publish(port, "second", "pw-second", 1);
    assert!(out.status.success(), "the users part applied: {}", String::from_utf8_lossy(&out.stderr));
}
