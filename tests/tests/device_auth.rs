//! Device security on the embedded broker, with real mosquitto_pub / mosquitto_sub against
//! the real binary: argon2 passwords (made by `edge-gateway hash-password`), refusals by
//! CONNACK and their counts, per-device topic rights (a foreign publish is a dead letter),
//! the connection and payload limits, `edge_gateway_devices_connected`, and TLS with and
//! without client certificates (certificates made by the openssl CLI).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use edge_tests::clients::CloudSubscriber;
use edge_tests::gateway::{hash_password, Gateway, Setup};
use edge_tests::http::{get, metric};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{event_json, wait_until};

const WAIT: Duration = Duration::from_secs(30);
const PASSWORD_1: &str = "correct-horse-battery-1";
const PASSWORD_2: &str = "correct-horse-battery-2";
const WRONG: &str = "wrong-password-xyz";

/// mosquitto_pub once, QoS 1: its exit status and what it said.
fn publish(port: u16, args: &[&str], topic: &str, message: &str) -> Output {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-m", message])
        .args(args)
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)")
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn counter(setup: &Setup, series: &str) -> u64 {
    metric(setup.http_port, series).unwrap_or(-1.0) as u64
}

fn wait_counter(setup: &Setup, series: &str, value: u64) {
    wait_until(WAIT, &format!("{series} = {value}"), || (counter(setup, series) == value).then_some(()));
}

/// A mosquitto_sub that stays connected as `user`, on its own ack topic.
fn subscriber(port: u16, user: &str, password: &str) -> Child {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", user, "-u", user, "-P", password])
        .args(["-t", &format!("devices/{user}/ack"), "-q", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_rights_and_limits_on_the_device_listener() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    // sensor-1 in the config, sensor-2 in a users file.
    let users_file = data.path().join("devices.passwd");
    std::fs::write(&users_file, format!("# devices\nsensor-2:{}\n", hash_password(PASSWORD_2))).unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.devices = "max_connections = 2\nmax_payload = \"1KiB\"\n".into();
    setup.devices_auth = format!(
        "users = {{ \"sensor-1\" = \"{}\" }}\nusers_file = \"{}\"\n",
        hash_password(PASSWORD_1),
        users_file.display()
    );
    let gateway = Gateway::start(&setup);
    let port = setup.devices_port;
    let as_user = |user: &'static str, password: &'static str| vec!["-i", user, "-u", user, "-P", password];

    // The right password delivers, for a user from the config and one from the file.
    let out = publish(port, &as_user("sensor-1", PASSWORD_1), "devices/sensor-1/events", &event_json("sensor-1", 1, 1));
    assert!(out.status.success(), "{}", said(&out));
    let out = publish(port, &as_user("sensor-2", PASSWORD_2), "devices/sensor-2/events", &event_json("sensor-2", 1, 1));
    assert!(out.status.success(), "{}", said(&out));
    let got = sub.wait_distinct(2, WAIT);
    assert!(got.seen.contains(&("sensor-1".into(), 1, 1)) && got.seen.contains(&("sensor-2".into(), 1, 1)));

    // Refusals: by CONNACK, counted by reason.
    let refused = [
        (as_user("sensor-1", WRONG), "bad user name or password", "bad_password"),
        (as_user("nobody", PASSWORD_1), "bad user name or password", "unknown_user"),
        (vec!["-i", "sensor-1"], "bad user name or password", "anonymous"),
        (vec!["-i", "other-id", "-u", "sensor-1", "-P", PASSWORD_1], "not authorised", "client_id_mismatch"),
    ];
    for (args, message, reason) in &refused {
        let out = publish(port, args, "devices/sensor-1/events", &event_json("sensor-1", 1, 2));
        assert!(!out.status.success() && said(&out).contains(message), "{reason}: {}", said(&out));
        wait_counter(&setup, &format!("edge_gateway_device_auth_failures_total{{reason=\"{reason}\"}}"), 1);
    }
    wait_counter(&setup, "edge_gateway_device_connections_refused_total{reason=\"auth\"}", 4);

    // Rights: a publish under another device's topic is a dead letter with the reason.
    let out = publish(port, &as_user("sensor-1", PASSWORD_1), "devices/sensor-2/events", &event_json("sensor-2", 1, 9));
    assert!(!out.status.success(), "the device is disconnected: {}", said(&out));
    wait_counter(&setup, "edge_gateway_events_dropped_total{reason=\"denied\"}", 1);
    wait_counter(&setup, "edge_gateway_device_denied_total{action=\"publish\"}", 1);
    let (_, dlq) = get(setup.http_port, "/api/dlq").unwrap();
    let letters: serde_json::Value = serde_json::from_str(&dlq).unwrap();
    assert_eq!(letters[0]["topic"], "devices/sensor-2/events", "{dlq}");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("device \"sensor-1\" may not publish on \"devices/sensor-2/events\""),
        "{dlq}"
    );
    // ... and a subscription to other devices' topics is refused.
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", "sensor-1", "-u", "sensor-1", "-P", PASSWORD_1])
        .args(["-t", "devices/+/ack", "-C", "1", "-W", "5", "--quiet"])
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty(), "{}", said(&out));
    assert!(counter(&setup, "edge_gateway_device_denied_total{action=\"subscribe\"}") >= 1);
    // Its own ack topic is allowed: the gateway's retained mark arrives.
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", "sensor-1", "-u", "sensor-1", "-P", PASSWORD_1])
        .args(["-t", "devices/sensor-1/ack", "-C", "1", "-W", "10"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{"boot":1,"seq":1}"#, "{}", said(&out));

    // Connected devices: up with each subscriber, over the limit refused, back down to 0.
    wait_counter(&setup, "edge_gateway_devices_connected", 0);
    let mut first = subscriber(port, "sensor-1", PASSWORD_1);
    wait_counter(&setup, "edge_gateway_devices_connected", 1);
    let mut second = subscriber(port, "sensor-2", PASSWORD_2);
    wait_counter(&setup, "edge_gateway_devices_connected", 2);
    assert_eq!(gateway.status()["devices_connected"], 2);
    // The read model knows who: /api/devices shows both connected.
    let connected = |device: &str| {
        let (_, body) = get(setup.http_port, &format!("/api/devices/{device}")).unwrap();
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        view["connected"].as_bool()
    };
    wait_until(WAIT, "sensor-1 and sensor-2 connected in /api/devices", || {
        (connected("sensor-1") == Some(true) && connected("sensor-2") == Some(true)).then_some(())
    });
    let out = publish(port, &as_user("sensor-1", PASSWORD_1), "devices/sensor-1/events", &event_json("sensor-1", 1, 3));
    assert!(!out.status.success() && said(&out).contains("unavailable"), "{}", said(&out));
    wait_counter(&setup, "edge_gateway_device_connections_refused_total{reason=\"limit\"}", 1);
    first.kill().unwrap();
    first.wait().unwrap();
    wait_counter(&setup, "edge_gateway_devices_connected", 1);
    second.kill().unwrap();
    second.wait().unwrap();
    wait_counter(&setup, "edge_gateway_devices_connected", 0);
    wait_until(WAIT, "both disconnected in /api/devices", || {
        (connected("sensor-1") == Some(false) && connected("sensor-2") == Some(false)).then_some(())
    });

    // An oversized payload: counted, the device disconnected, nothing committed.
    let committed = gateway.status()["events_committed"].as_u64().unwrap();
    let out = publish(port, &as_user("sensor-1", PASSWORD_1), "devices/sensor-1/events", &"x".repeat(2048));
    assert!(!out.status.success(), "{}", said(&out));
    wait_counter(&setup, "edge_gateway_device_packets_too_large_total", 1);
    assert_eq!(gateway.status()["events_committed"].as_u64().unwrap(), committed);

    // Passwords appear nowhere: not in the log, not in /api/status or /metrics.
    let (_, status) = get(setup.http_port, "/api/status").unwrap();
    let (_, metrics) = get(setup.http_port, "/metrics").unwrap();
    for text in [gateway.log_text(), status, metrics] {
        for password in [PASSWORD_1, PASSWORD_2, WRONG] {
            assert!(!text.contains(password), "a password leaked:\n{text}");
        }
    }
    assert!(gateway.log_text().contains("device login refused"), "refusals are logged");
}

#[test]
fn without_auth_in_the_config_nobody_gets_in() {
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(edge_tests::free_port(), data.path());
    setup.devices_auth = String::new();
    let gateway = Gateway::start(&setup);
    let out = publish(setup.devices_port, &["-i", "d1"], "devices/d1/events", &event_json("d1", 1, 1));
    assert!(!out.status.success(), "{}", said(&out));
    wait_counter(&setup, "edge_gateway_device_auth_failures_total{reason=\"anonymous\"}", 1);
    assert!(gateway.log_text().contains("every device connection will be refused"), "{}", gateway.log_text());
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", said(&out));
}

/// In `dir`: a CA (`ca.pem`), a server certificate for 127.0.0.1 (`server.pem`/`.key`) and a
/// client certificate (`client.pem`/`.key`) signed by it; and an unrelated CA
/// (`rogue-ca.pem`) with its own client certificate (`rogue.pem`/`.key`).
fn make_certs(dir: &Path) {
    std::fs::write(
        dir.join("ext.cnf"),
        "[server]\nsubjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n\
         [client]\nextendedKeyUsage = clientAuth\nbasicConstraints = CA:FALSE\n",
    )
    .unwrap();
    let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    for ca in ["ca", "rogue-ca"] {
        let (key, pem, subject) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN=edge test {ca}"));
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject, "-keyout", &key, "-out", &pem];
        args.extend(new_key);
        openssl(dir, &args);
    }
    for (name, ca, ext, cn) in [
        ("server", "ca", "server", "127.0.0.1"),
        ("client", "ca", "client", "sensor-1"),
        ("rogue", "rogue-ca", "client", "sensor-1"),
    ] {
        let (key, csr, pem, subject) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("/CN={cn}"));
        let mut args = vec!["req", "-subj", &subject, "-keyout", &key, "-out", &csr];
        args.extend(new_key);
        openssl(dir, &args);
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-extfile",
                "ext.cnf",
                "-extensions",
                ext,
            ],
        );
    }
}

#[test]
fn tls_listener_with_and_without_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path();
    make_certs(certs);
    let file = |name: &str| certs.join(name).display().to_string();
    let mut setup = Setup::new(edge_tests::free_port(), &certs.join("data"));
    setup.devices = format!("tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n", file("server.pem"), file("server.key"));
    let mut gateway = Gateway::start(&setup);
    let port = setup.devices_port;
    let committed = |setup: &Setup, n: u64| {
        wait_until(WAIT, &format!("{n} events committed"), || {
            (edge_tests::http::status(setup.http_port)["events_committed"].as_u64() == Some(n)).then_some(())
        })
    };

    // A client that opens a connection and says nothing does not hold up the others.
    let silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let ca = file("ca.pem");
    let out = publish(port, &["-i", "d1", "--cafile", &ca], "devices/d1/events", &event_json("d1", 1, 1));
    assert!(out.status.success(), "{}", said(&out));
    committed(&setup, 1);
    // Plain MQTT on the TLS port is refused and counted.
    let out = publish(port, &["-i", "d1"], "devices/d1/events", &event_json("d1", 1, 2));
    assert!(!out.status.success(), "{}", said(&out));
    wait_until(WAIT, "the plain client counted", || {
        (counter(&setup, "edge_gateway_device_connections_refused_total{reason=\"tls\"}") >= 1).then_some(())
    });
    drop(silent);
    assert!(gateway.terminate().unwrap().success());

    // Client certificates required, and passwords too.
    setup.devices.push_str(&format!("tls_client_ca_file = \"{ca}\"\n"));
    setup.devices_auth = format!("users = {{ \"sensor-1\" = \"{}\" }}\n", hash_password(PASSWORD_1));
    let gateway = Gateway::start(&setup);
    let login = ["-i", "sensor-1", "-u", "sensor-1", "-P", PASSWORD_1, "--cafile", &ca];
    let event = event_json("sensor-1", 1, 1);
    let out = publish(port, &login, "devices/sensor-1/events", &event);
    assert!(!out.status.success(), "no client certificate: {}", said(&out));
    let (rogue_cert, rogue_key) = (file("rogue.pem"), file("rogue.key"));
    let rogue = [&login[..], &["--cert", &rogue_cert, "--key", &rogue_key]].concat();
    let out = publish(port, &rogue, "devices/sensor-1/events", &event);
    assert!(!out.status.success(), "a certificate from another CA: {}", said(&out));
    wait_until(WAIT, "both TLS refusals counted", || {
        (counter(&setup, "edge_gateway_device_connections_refused_total{reason=\"tls\"}") == 2).then_some(())
    });
    let (client_cert, client_key) = (file("client.pem"), file("client.key"));
    let good = [&login[..], &["--cert", &client_cert, "--key", &client_key]].concat();
    let out = publish(port, &good, "devices/sensor-1/events", &event);
    assert!(out.status.success(), "{}", said(&out));
    committed(&setup, 1);
    assert!(!gateway.log_text().contains(PASSWORD_1));
}
