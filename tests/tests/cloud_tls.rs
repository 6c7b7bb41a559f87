//! TLS and credentials on the cloud link (issue 7), against a real Mosquitto with TLS
//! listeners and certificates made here with rcgen: a pinned CA, mutual TLS, refusals for
//! each kind of bad certificate (with the reason in the log and `/api/status`, the events
//! kept in the journal and delivered once the config is fixed), and user name / password
//! from a file and from the environment, which never show in the log or the status. The
//! same settings on an external device broker, and `check-config` on bad TLS files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edge_tests::clients::{device_events, publish_all, CloudSubscriber};
use edge_tests::gateway::{binary, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{event_json, free_port, wait_until};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

const WAIT: Duration = Duration::from_secs(60);

/// Two CAs and certificates they signed, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

/// A CA that can sign.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        Pki { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A CA, written as `{name}.pem`.
    fn ca(&self, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} test CA"));
        params.distinguished_name = dn;
        self.write(&format!("{name}.pem"), &params.self_signed(&key).unwrap().pem());
        Ca { issuer: Issuer::new(params, key) }
    }

    /// A certificate signed by `ca`, written as `{name}.pem` and `{name}.key`.
    fn leaf(&self, ca: &Ca, name: &str, names: &[&str], server: bool, expired: bool) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.extended_key_usages =
            vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        self.write(&format!("{name}.pem"), &params.signed_by(&key, &ca.issuer).unwrap().pem());
        self.write(&format!("{name}.key"), &key.serialize_pem());
    }

    /// Mosquitto lines for a TLS listener on `port` with server certificate `cert`.
    fn listener(&self, port: u16, cert: &str, client_certs: bool) -> String {
        format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {client_certs}\n",
            self.path("ca.pem").display(),
            self.path(&format!("{cert}.pem")).display(),
            self.path(&format!("{cert}.key")).display(),
        )
    }
}

/// The trusted CA, another one, and the certificates every test uses.
fn pki() -> Pki {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let other = pki.ca("other-ca");
    pki.leaf(&ca, "server", &["127.0.0.1", "localhost"], true, false);
    pki.leaf(&ca, "server-expired", &["127.0.0.1", "localhost"], true, true);
    pki.leaf(&ca, "server-other-name", &["other.example"], true, false);
    pki.leaf(&ca, "client", &["gw-test"], false, false);
    pki.leaf(&other, "client-other-ca", &["gw-test"], false, false);
    pki
}

/// A gateway config for `mqtts://127.0.0.1:{port}` with `keys` in `[cloud]`.
fn tls_setup(port: u16, data: &Path, keys: String) -> Setup {
    let mut setup = Setup::new(port, data);
    setup.cloud_url = format!("mqtts://127.0.0.1:{port}");
    setup.cloud.push_str(&keys);
    setup
}

fn ca_file(pki: &Pki, name: &str) -> String {
    format!("ca_file = \"{}\"\n", pki.path(&format!("{name}.pem")).display())
}

fn client_cert(pki: &Pki, name: &str) -> String {
    format!(
        "cert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.path(&format!("{name}.pem")).display(),
        pki.path(&format!("{name}.key")).display()
    )
}

/// `/api/status` `last_error.message`, or "".
fn last_error(gateway: &Gateway) -> String {
    gateway.status()["last_error"]["message"].as_str().unwrap_or_default().to_owned()
}

/// Waits until the gateway reports a link error containing `reason` in its status, and
/// checks the same reason is in its log and the link is down.
fn wait_refused(gateway: &Gateway, reason: &str) -> String {
    let message = wait_until(WAIT, reason, || Some(last_error(gateway)).filter(|m| m.contains(reason)));
    assert!(message.starts_with("cloud link down: TLS: "), "{message}");
    assert_eq!(gateway.status()["cloud_link_up"], false);
    // The log line follows the status update (same code path, a moment later).
    wait_until(WAIT, "the reason in the log", || gateway.log_text().contains(reason).then_some(()));
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_with_a_pinned_ca_delivers_and_bad_server_certificates_are_refused_kept_then_delivered() {
    let pki = pki();
    let (good, expired, other_name) = (free_port(), free_port(), free_port());
    let listeners = [
        pki.listener(good, "server", false),
        pki.listener(expired, "server-expired", false),
        pki.listener(other_name, "server-other-name", false),
    ];
    let cloud = Mosquitto::start_with(free_port(), "", &listeners.concat());
    let sub = CloudSubscriber::connect(cloud.port).await;

    // (1) The right CA: delivered.
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&tls_setup(good, data.path(), ca_file(&pki, "ca")));
    publish_all(gateway.setup.devices_port, "ok", device_events("ok", 1, 50)).await.unwrap();
    sub.wait_distinct(50, WAIT);
    assert_eq!(gateway.status()["cloud_link_up"], true);
    assert!(gateway.log_text().contains("cloud link up"));

    // (3) Each bad case: refused with its reason; the events stay in the journal.
    let cases = [
        ("wrongca", good, "other-ca", "is not signed by the CA in cloud.ca_file"),
        ("expired", expired, "ca", "certificate has expired (valid until 2021-01-01 00:00:00Z)"),
        ("wrongname", other_name, "ca", "is not valid for \"127.0.0.1\" (wrong host name; it is for other.example)"),
    ];
    let mut bad = Vec::new();
    for (device, port, ca, reason) in cases {
        let data = tempfile::tempdir().unwrap();
        let gateway = Gateway::start(&tls_setup(port, data.path(), ca_file(&pki, ca)));
        bad.push((device, reason, gateway, data));
    }
    for (device, reason, gateway, _) in &bad {
        publish_all(gateway.setup.devices_port, device, device_events(device, 1, 20)).await.unwrap();
        let message = wait_refused(gateway, reason);
        if *device == "wrongca" {
            assert!(message.contains(&pki.path("other-ca.pem").display().to_string()), "names the file: {message}");
        }
        wait_until(WAIT, "the events committed", || (gateway.queue_depth() == 20).then_some(()));
        assert_eq!(gateway.status()["routes"][0]["forwarded"], 0);
    }
    // The link keeps retrying with backoff (still refused, still kept).
    for (_, _, gateway, _) in &bad {
        let line = "cloud link down";
        assert!(gateway.log_text().contains(line));
        assert_eq!(gateway.queue_depth(), 20);
    }

    // Fixed config, same journal: everything arrives.
    for (device, _, gateway, data) in &mut bad {
        gateway.terminate();
        let fixed = Gateway::start(&tls_setup(good, data.path(), ca_file(&pki, "ca")));
        let want = 50 + 20 * (cases.iter().position(|c| c.0 == *device).unwrap() + 1);
        let got = sub.wait_distinct(want, WAIT);
        assert_eq!(got.distinct().iter().filter(|id| id.0 == *device).count(), 20, "all of {device}'s events");
        wait_until(WAIT, "the journal drained", || (fixed.queue_depth() == 0).then_some(()));
    }

    // A name override verifies the certificate for the name it gives; turning checks off
    // accepts even an expired one, with a warning at start and on every connect.
    let named = tempfile::tempdir().unwrap();
    let keys = format!("{}server_name = \"other.example\"\n", ca_file(&pki, "ca"));
    let named = Gateway::start(&tls_setup(other_name, named.path(), keys));
    let unverified = tempfile::tempdir().unwrap();
    let unverified = Gateway::start(&tls_setup(expired, unverified.path(), "insecure_skip_verify = true\n".into()));
    publish_all(named.setup.devices_port, "named", device_events("named", 1, 10)).await.unwrap();
    publish_all(unverified.setup.devices_port, "unverified", device_events("unverified", 1, 10)).await.unwrap();
    let got = sub.wait_distinct(130, WAIT);
    assert_eq!(got.distinct().len(), 130);
    got.in_order_per_device().unwrap();
    let log = unverified.log_text();
    assert!(log.contains("cloud.insecure_skip_verify = true: the broker's certificate is NOT verified"), "{log}");
    assert!(log.contains("connected WITHOUT verifying the cloud's certificate"), "{log}");
    assert!(!named.log_text().contains("NOT verified"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_the_right_client_certificate_delivers_none_or_another_cas_is_refused() {
    let pki = pki();
    let mtls = free_port();
    let cloud = Mosquitto::start_with(free_port(), "", &pki.listener(mtls, "server", true));
    let sub = CloudSubscriber::connect(cloud.port).await;

    let data = tempfile::tempdir().unwrap();
    let keys = format!("{}{}", ca_file(&pki, "ca"), client_cert(&pki, "client"));
    let gateway = Gateway::start(&tls_setup(mtls, data.path(), keys));
    publish_all(gateway.setup.devices_port, "mtls", device_events("mtls", 1, 30)).await.unwrap();
    let got = sub.wait_distinct(30, WAIT);
    assert_eq!(got.distinct().len(), 30);
    assert!(gateway.log_text().contains("(mutual TLS)"), "the start-up summary says so");

    let cases = [
        ("nocert", ca_file(&pki, "ca"), "wants a client certificate".to_owned()),
        (
            "otherca",
            format!("{}{}", ca_file(&pki, "ca"), client_cert(&pki, "client-other-ca")),
            format!("refused our client certificate {}", pki.path("client-other-ca.pem").display()),
        ),
    ];
    let mut refused = Vec::new();
    for (device, keys, reason) in cases {
        let data = tempfile::tempdir().unwrap();
        let gateway = Gateway::start(&tls_setup(mtls, data.path(), keys));
        refused.push((device, reason, gateway, data));
    }
    for (device, reason, gateway, _) in &refused {
        publish_all(gateway.setup.devices_port, device, device_events(device, 1, 10)).await.unwrap();
        wait_refused(gateway, reason);
        wait_until(WAIT, "the events committed", || (gateway.queue_depth() == 10).then_some(()));
    }
    assert_eq!(sub.snapshot().distinct().len(), 30, "nothing from a refused gateway reached the cloud");
}

/// A Mosquitto password file with one user.
fn password_file(pki: &Pki, user: &str, password: &str) -> PathBuf {
    let path = pki.path(&format!("{user}.passwd"));
    let made = Command::new("mosquitto_passwd").arg("-c").arg("-b").arg(&path).args([user, password]).status();
    assert!(made.unwrap().success(), "mosquitto_passwd failed");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_name_and_password_from_a_file_or_the_environment_and_the_secret_never_shows() {
    const SECRET: &str = "Pa55-edge-gw-S3cret";
    const WRONG: &str = "not-the-Pa55word-42";
    let pki = pki();
    let passwords = password_file(&pki, "gw", SECRET);
    let secured = free_port();
    // Per-listener security: the plain listener (the test's subscriber) stays anonymous.
    let listener = format!(
        "{}allow_anonymous false\npassword_file {}\n",
        pki.listener(secured, "server", false),
        passwords.display()
    );
    let cloud = Mosquitto::start_with(free_port(), "per_listener_settings true", &listener);
    let sub = CloudSubscriber::connect(cloud.port).await;
    let password_file = pki.write("cloud-password", &format!("{SECRET}\n"));

    let from_file = tempfile::tempdir().unwrap();
    let keys = format!("{}username = \"gw\"\npassword_file = \"{}\"\n", ca_file(&pki, "ca"), password_file.display());
    let mut setup = tls_setup(secured, from_file.path(), keys);
    // Debug logs too: the secret must not show there either.
    setup.env.push(("RUST_LOG".into(), "debug,rumqttd=off".into()));
    let by_file = Gateway::start(&setup);

    let from_env = tempfile::tempdir().unwrap();
    let keys = format!("{}username = \"gw\"\npassword_env = \"EDGE_TEST_CLOUD_PASSWORD\"\n", ca_file(&pki, "ca"));
    let mut setup = tls_setup(secured, from_env.path(), keys);
    setup.env.push(("EDGE_TEST_CLOUD_PASSWORD".into(), SECRET.into()));
    setup.env.push(("RUST_LOG".into(), "debug,rumqttd=off".into()));
    let by_env = Gateway::start(&setup);

    let wrong = tempfile::tempdir().unwrap();
    let keys = format!("{}username = \"gw\"\npassword = \"{WRONG}\"\n", ca_file(&pki, "ca"));
    let refused = Gateway::start(&tls_setup(secured, wrong.path(), keys));

    publish_all(by_file.setup.devices_port, "file", device_events("file", 1, 20)).await.unwrap();
    publish_all(by_env.setup.devices_port, "env", device_events("env", 1, 20)).await.unwrap();
    publish_all(refused.setup.devices_port, "wrong", device_events("wrong", 1, 20)).await.unwrap();
    let got = sub.wait_distinct(40, WAIT);
    for device in ["file", "env"] {
        assert_eq!(got.distinct().iter().filter(|id| id.0 == device).count(), 20, "{device}");
    }
    let message =
        wait_until(WAIT, "the refusal", || Some(last_error(&refused)).filter(|m| m.contains("refused the connection")));
    // Mosquitto answers a wrong password on MQTT 3.1.1 with "not authorized".
    assert!(message.contains("check cloud.username and the password"), "{message}");
    wait_until(WAIT, "the events committed", || (refused.queue_depth() == 20).then_some(()));
    assert_eq!(sub.snapshot().distinct().len(), 40);

    for gateway in [&by_file, &by_env, &refused] {
        let log = gateway.log_text();
        let status = gateway.status().to_string();
        for secret in [SECRET, WRONG] {
            assert!(!log.contains(secret), "a password in the log:\n{log}");
            assert!(!status.contains(secret), "a password in /api/status: {status}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_device_broker_over_tls_with_a_password_feeds_the_cloud() {
    const SECRET: &str = "ingest-Pa55-on-the-box";
    let pki = pki();
    let passwords = password_file(&pki, "ingest", SECRET);
    let secured = free_port();
    let listener = format!(
        "{}allow_anonymous false\npassword_file {}\n",
        pki.listener(secured, "server", false),
        passwords.display()
    );
    // Devices publish on the plain listener; the gateway reads over TLS with a password.
    let local = Mosquitto::start_with(free_port(), "per_listener_settings true", &listener);
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.devices = format!(
        "mode = \"external\"\nurl = \"mqtts://127.0.0.1:{secured}\"\n{}username = \"ingest\"\npassword_env = \"EDGE_TEST_DEVICES_PASSWORD\"\n",
        ca_file(&pki, "ca")
    );
    setup.env.push(("EDGE_TEST_DEVICES_PASSWORD".into(), SECRET.into()));
    let gateway = Gateway::start(&setup);

    // It subscribes once connected; until then the broker drops what nobody takes.
    let port = local.port.to_string();
    let probe = event_json("probe", 1, 1);
    wait_until(WAIT, "the gateway's subscription over TLS", || {
        let args = ["-p", &port, "-q", "1", "-t", "devices/probe/events", "-m", &probe];
        assert!(Command::new("mosquitto_pub").args(args).status().ok()?.success());
        (gateway.status()["events_committed"].as_u64()? >= 1).then_some(())
    });
    publish_all(local.port, "ext", device_events("ext", 1, 30)).await.unwrap();
    let got = sub.wait_distinct(31, WAIT);
    assert_eq!(got.distinct().iter().filter(|id| id.0 == "ext").count(), 30);
    let log = gateway.log_text();
    assert!(log.contains("connected to the device broker"), "{log}");
    assert!(!log.contains(SECRET) && !gateway.status().to_string().contains(SECRET));
}

#[test]
fn check_config_names_key_and_file_of_bad_tls_files_and_warns_about_readable_keys() {
    use std::os::unix::fs::PermissionsExt;
    let pki = pki();
    let ca = pki.ca("ca2");
    pki.leaf(&ca, "client-expired", &["gw-test"], false, true);
    let data = tempfile::tempdir().unwrap();
    let check = |keys: String| {
        let mut setup = tls_setup(free_port(), data.path(), keys);
        setup.cloud_url = "mqtts://127.0.0.1".into();
        let config = pki.write("gateway.toml", &setup.toml());
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = Command::new(binary()).arg("check-config").arg("--config").arg(&config).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let expired = pki.path("client-expired.pem");
    let (code, _, stderr) = check(format!("{}{}", ca_file(&pki, "ca"), client_cert(&pki, "client-expired")));
    assert_eq!(code, Some(1), "{stderr}");
    let want = format!("cloud.cert_file: {}: the certificate expired at 2021-01-01 00:00:00Z", expired.display());
    assert!(stderr.contains(&want), "{stderr}");

    let (code, _, stderr) = check(format!(
        "{}cert_file = \"{}\"\nkey_file = \"{}\"\n",
        ca_file(&pki, "ca"),
        pki.path("client.pem").display(),
        pki.path("server.key").display()
    ));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is not the key of the certificate in"), "{stderr}");

    let key = pki.path("client.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stdout, stderr) = check(format!("{}{}", ca_file(&pki, "ca"), client_cert(&pki, "client")));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("mqtts://127.0.0.1:8883 (mutual TLS)"), "{stdout}");
    let want = format!("warning: cloud.key_file: {} is readable by other users (mode 644)", key.display());
    assert!(stderr.contains(&want), "{stderr}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, stderr) = check(format!("{}{}", ca_file(&pki, "ca"), client_cert(&pki, "client")));
    assert_eq!((code, stderr.contains("warning")), (Some(0), false), "{stderr}");
}
