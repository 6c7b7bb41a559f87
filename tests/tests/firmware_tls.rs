//! The firmware over TLS against the real gateway's TLS device listener: a `Device` whose
//! transport is `Io<TlsLink>` (rustls over TCP, `embedded-io` traits) logs in with its
//! password and delivers every event to the cloud (Mosquitto); a device that does not
//! trust the gateway's certificate never gets a session and keeps its events; and
//! `edge-sensor-sim --tls-ca` runs the same path.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge_event::{Reading, Value};
use edge_firmware::host::tls::{client_config, TlsLink};
use edge_firmware::{BootId, Device, Io, NoClock, Password, Settings};
use edge_tests::clients::CloudSubscriber;
use edge_tests::gateway::{binary, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::sim::Sim;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "tls-device-password-1";

/// A CA named `name` (PEM) and, signed by it, a server certificate and key for 127.0.0.1.
fn certificates(name: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (ca_pem, server.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
}

fn hash_password(password: &str) -> String {
    let mut child =
        Command::new(binary()).arg("hash-password").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_owned()
}

type TlsDevice = Device<Io<TlsLink>, NoClock, 256, 16384>;

fn device(port: u16, ca_pem: &str, boot: u32) -> TlsDevice {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let link = TlsLink::new(addr, "127.0.0.1", client_config(ca_pem.as_bytes()).unwrap()).unwrap();
    let settings = Settings {
        password: Some(Password::new(PASSWORD.as_bytes())),
        retry_min_ms: 50,
        retry_max_ms: 500,
        ..Settings::default()
    };
    Device::new("tls-1", BootId::new(boot), Io::new(link), NoClock, settings).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_tls_logs_in_and_delivers_every_event_and_an_untrusted_certificate_keeps_it_out() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let (ca_pem, server_pem, server_key) = certificates("edge test CA");
    let (cert, key) = (data.path().join("server.pem"), data.path().join("server.key"));
    std::fs::write(&cert, server_pem).unwrap();
    std::fs::write(&key, server_key).unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.devices = format!("tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n", cert.display(), key.display());
    let hash = hash_password(PASSWORD);
    setup.devices_auth = format!("users = {{ \"tls-1\" = \"{hash}\", \"tlssim-0000\" = \"{hash}\" }}\n");
    let gateway = Gateway::start(&setup);

    // A device that trusts another CA: the handshake fails, again and again; nothing leaves.
    let (rogue_ca, _, _) = certificates("rogue test CA");
    let mut rogue = device(setup.devices_port, &rogue_ca, 1);
    let mut event = rogue.event("counter").unwrap();
    rogue.publish(&mut event).unwrap();
    let started = Instant::now();
    while rogue.stats().link_errors < 3 {
        let now = started.elapsed().as_millis() as u64;
        let _ = rogue.poll(now);
        assert!(started.elapsed() < WAIT, "the untrusted handshake never failed");
        // The device's own pacing: asleep until its reconnect time.
        std::thread::sleep(Duration::from_millis(rogue.next_deadline(now).saturating_sub(now).min(50)));
    }
    assert!(!rogue.is_online() && rogue.stats().connects == 0 && rogue.pending() == 1);
    let why = rogue.transport().get_ref().last_error().unwrap_or_default().to_owned();
    assert!(why.contains("UnknownIssuer"), "{why}");

    let mut device = device(setup.devices_port, &ca_pem, 4);
    for i in 0..200 {
        let mut event = device.event("counter").unwrap();
        event.push_reading(Reading::new("pulses", Value::I64(i)).unwrap()).unwrap();
        device.publish(&mut event).unwrap();
    }
    let started = Instant::now();
    while device.pending() > 0 {
        let now = started.elapsed().as_millis() as u64;
        let _ = device.poll(now);
        assert!(started.elapsed() < WAIT, "not confirmed: {:?}\n{}", device.stats(), gateway.log_text());
        std::thread::sleep(Duration::from_millis(device.next_deadline(now).saturating_sub(now).min(2)));
    }
    assert_eq!((device.stats().connects, device.stats().link_errors), (1, 0));
    let got = sub.wait_distinct(200, WAIT);
    let ids: BTreeSet<(u32, u32)> =
        got.events.iter().filter(|(d, _, _)| d == "tls-1").map(|(_, b, s)| (*b, *s)).collect();
    assert_eq!(ids, (1..=200).map(|seq| (4, seq)).collect());
    device.disconnect(0);

    // The simulator takes the same path: --tls-ca, and the password from a file.
    let (ca_file, password_file) = (data.path().join("ca.pem"), data.path().join("password.txt"));
    std::fs::write(&ca_file, &ca_pem).unwrap();
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let (ca_file, password_file) = (ca_file.display().to_string(), password_file.display().to_string());
    let args = ["--devices", "1", "--prefix", "tlssim", "--events", "100", "--rate", "500", "--boot", "8"];
    let tls = ["--tls-ca", &ca_file, "--password-file", &password_file, "--timeout", "50s"];
    let mut sim = Sim::start(setup.devices_port, &[&args[..], &tls[..]].concat());
    let status = sim.wait(WAIT);
    assert!(status.success(), "({status}):\n{}\n{}", sim.output(), gateway.log_text());
    let got = sub.wait_distinct(300, WAIT);
    let ids: BTreeSet<(u32, u32)> =
        got.events.iter().filter(|(d, _, _)| d == "tlssim-0000").map(|(_, b, s)| (*b, *s)).collect();
    assert_eq!(ids, (1..=100).map(|seq| (8, seq)).collect());
}
