//! [`Control`]: what a new `[devices]` changes live, what it reports, what needs a restart.

use super::*;
use crate::config::Config;
use crate::devices::auth::{hash_password, Grant};

const ROUTE: &str = "[[routes]]\nname = \"t\"\nfrom = \"devices/+/events\"\nto = \"x/{gateway}\"\n";

fn devices(text: &str) -> DevicesConfig {
    match Config::parse(&format!("{text}\n{ROUTE}")) {
        Ok(config) => config.devices,
        Err(errors) => panic!("{errors:?}"),
    }
}

fn users(list: &[(&str, &str)]) -> String {
    let entries: Vec<String> = list.iter().map(|(name, hash)| format!("\"{name}\" = \"{hash}\"")).collect();
    format!("[devices.auth]\nusers = {{ {} }}\n", entries.join(", "))
}

/// A control and its live state, as `devices::start` makes them.
fn started(config: &DevicesConfig) -> (Control, Arc<Live>) {
    let DevicesMode::Embedded { max_connections, access, tls, .. } = &config.mode else { panic!("embedded") };
    let tls = tls.as_ref().map(|tls| super::super::gate::server_config(tls).unwrap());
    let live = Live::new(access.clone(), *max_connections, config.max_payload.bytes() as usize, tls);
    (Control::new(config, Some(live.clone())), live)
}

#[tokio::test]
async fn users_added_removed_and_rotated_are_applied_and_their_connections_closed() {
    let (h1, h2, h3) = (hash_password("p1").unwrap(), hash_password("p2").unwrap(), hash_password("p3").unwrap());
    let old = devices(&users(&[("d1", &h1), ("d2", &h2), ("d3", &h3)]));
    let (control, live) = started(&old);
    let _d1 = live.places.take(Grant::device("d1", &h1), &live.auth).unwrap();
    let mut d2 = live.places.take(Grant::device("d2", &h2), &live.auth).unwrap();
    let mut d3 = live.places.take(Grant::device("d3", &h3), &live.auth).unwrap();
    let (h2_new, h4) = (hash_password("p2-new").unwrap(), hash_password("p4").unwrap());
    let new = devices(&users(&[("d1", &h1), ("d2", &h2_new), ("d4", &h4)]));
    let lines = control.apply_users(&new).unwrap();
    assert_eq!(
        lines,
        ["device users: 1 added (d4), 1 removed (d3), 1 with a new password (d2): 1 open connection of removed \
          users, 1 open connection logged in with a replaced password closed"]
    );
    assert_eq!(d3.revoked().await, AuthFailure::UnknownUser);
    assert_eq!(d2.revoked().await, AuthFailure::BadPassword);
    assert!(live.auth.check("d4", Some("d4"), Some(b"p4")).await.is_ok());
    assert!(live.auth.check("d3", Some("d3"), Some(b"p3")).await.is_err());
    assert_eq!(
        control.apply_users(&new).unwrap(),
        Vec::<String>::new(),
        "applying the same config again changes nothing"
    );
    // Anonymous access on, then off again: its connections are closed.
    let lines = control.apply_users(&devices("[devices.auth]\nallow_anonymous = true\n")).unwrap();
    assert_eq!(
        lines,
        [
            "devices.auth.allow_anonymous: false -> true",
            "device users: 3 removed (d1, d2, d4)",
            "devices.auth.allow_anonymous = true: any client that reaches the device port may connect and publish on \
             any topic"
        ]
    );
    let mut anonymous = live.places.take(Grant::anonymous(), &live.auth).unwrap();
    let lines = control.apply_users(&new).unwrap();
    assert_eq!(
        lines,
        [
            "devices.auth.allow_anonymous: true -> false: 1 anonymous connection closed",
            "device users: 3 added (d1, d2, d4)"
        ]
    );
    assert_eq!(anonymous.revoked().await, AuthFailure::Anonymous);
    let lines = control.apply_users(&devices("[devices.auth]\n")).unwrap();
    assert_eq!(lines[1], "devices.auth: no users are listed and allow_anonymous is not set: every device connection is refused from now on");
}

#[test]
fn limits_change_live_up_to_what_the_broker_was_started_with() {
    let old =
        devices("[devices]\nmax_connections = 3\nmax_payload = \"4KiB\"\n[devices.auth]\nallow_anonymous = true\n");
    let (control, live) = started(&old);
    let held: Vec<_> = (0..3).map(|_| live.places.take(Grant::anonymous(), &live.auth).unwrap()).collect();
    let lower =
        devices("[devices]\nmax_connections = 2\nmax_payload = \"1KiB\"\n[devices.auth]\nallow_anonymous = true\n");
    assert_eq!(
        control.apply_limits(&lower).unwrap(),
        [
            "devices.max_payload: 4KiB -> 1KiB (connections made from now on; open ones keep the limit they connected \
             with)",
            "devices.max_connections: 3 -> 2 (3 connected now: none is closed; new connections are refused until \
             fewer than 2)"
        ]
    );
    assert_eq!((live.max_payload(), live.places.max(), live.places.held()), (1024, 2, 3));
    drop(held);
    // Above the start values: Err, nothing applied (not even the other limit).
    let higher =
        devices("[devices]\nmax_connections = 9\nmax_payload = \"2KiB\"\n[devices.auth]\nallow_anonymous = true\n");
    assert_eq!(
        control.apply_limits(&higher).unwrap_err(),
        "devices.max_connections = 9 needs a restart: the embedded broker was started for 3 (up to that applies live)"
    );
    let higher =
        devices("[devices]\nmax_connections = 3\nmax_payload = \"8KiB\"\n[devices.auth]\nallow_anonymous = true\n");
    assert!(control.apply_limits(&higher).unwrap_err().starts_with("devices.max_payload = 8KiB needs a restart"));
    assert_eq!((live.max_payload(), live.places.max()), (1024, 2));
    assert_eq!(control.apply_limits(&old).unwrap().len(), 2, "back to the start values");
    assert_eq!((live.max_payload(), live.places.max()), (4096, 3));
}

#[test]
fn what_cannot_change_live_is_an_error_that_changes_nothing() {
    let old = devices("[devices.auth]\nallow_anonymous = true\n");
    let (control, live) = started(&old);
    let external = devices("[devices]\nmode = \"external\"\nurl = \"mqtt://127.0.0.1:1883\"\n");
    assert_eq!(control.apply_users(&external).unwrap_err(), "devices.mode changed: needs a restart");
    assert!(control.apply_limits(&external).is_err());
    assert!(!live.auth.checks_identity(), "nothing of an external [devices] reaches the embedded gate");
    let control = Control::new(&external, None);
    assert!(control.apply_limits(&external).unwrap_err().contains("external mode"));
}

fn write_cert(dir: &std::path::Path) {
    let params = rcgen::CertificateParams::new(vec!["gw.example".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

#[test]
fn a_certificate_renewed_in_place_is_taken_and_a_broken_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path());
    let text = format!(
        "[devices]\ntls_cert_file = \"{0}/cert.pem\"\ntls_key_file = \"{0}/key.pem\"\n[devices.auth]\n\
         allow_anonymous = true\n",
        dir.path().display()
    );
    let config = devices(&text);
    let (control, live) = started(&config);
    let config_of = |live: &Live| live.acceptor().map(|a| Arc::as_ptr(a.config()));
    let first = config_of(&live);
    assert_eq!(control.apply_tls(&config).unwrap(), Vec::<String>::new(), "same files, same contents");
    assert_eq!(config_of(&live), first);
    write_cert(dir.path());
    let lines = control.apply_tls(&config).unwrap();
    assert_eq!(
        lines,
        ["devices TLS: certificate, key and client CA re-read (new handshakes use them; open connections stay)"]
    );
    let renewed = config_of(&live);
    assert_ne!(renewed, first);
    // A key that no longer matches its certificate: Err, and the renewed config stays.
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("key.pem"), other.serialize_pem()).unwrap();
    assert!(control.apply_tls(&config).is_err());
    assert_eq!(config_of(&live), renewed);
    let plain = devices("[devices.auth]\nallow_anonymous = true\n");
    assert_eq!(control.apply_tls(&plain).unwrap_err(), "devices.tls_cert_file: turning TLS off needs a restart");
    assert_eq!(config_of(&live), renewed);
}
