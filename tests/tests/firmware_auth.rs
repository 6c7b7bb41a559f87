//! Simulated devices (the firmware's device code in `edge-sensor-sim`) log in to the real
//! gateway with passwords from `edge-gateway hash-password`, configured in a `users_file`:
//! with the right password every event reaches the cloud (Mosquitto); with a wrong one the
//! simulator says the login was refused and exits non-zero.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use edge_tests::clients::CloudSubscriber;
use edge_tests::gateway::{binary, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::sim::Sim;

const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "sensor-fleet-password-1";

/// `edge-gateway hash-password` with the password on stdin.
fn hash_password(password: &str) -> String {
    let mut child =
        Command::new(binary()).arg("hash-password").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_devices_log_in_with_the_right_password_and_are_refused_with_a_wrong_one() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let hash = hash_password(PASSWORD);
    let users_file = data.path().join("devices.passwd");
    std::fs::write(&users_file, format!("auth-0000:{hash}\nauth-0001:{hash}\n")).unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.devices_auth = format!("users_file = \"{}\"\n", users_file.display());
    let gateway = Gateway::start(&setup);
    let right = data.path().join("right.txt");
    std::fs::write(&right, format!("{PASSWORD}\n")).unwrap();
    let wrong = data.path().join("wrong.txt");
    std::fs::write(&wrong, "not-the-password\n").unwrap();

    let common = ["--devices", "2", "--prefix", "auth", "--boot", "5", "--rate", "500", "--timeout", "50s"];
    let (right, wrong) = (right.display().to_string(), wrong.display().to_string());
    // The file is an argument, the password never is.
    let mut sim =
        Sim::start(setup.devices_port, &[&common[..], &["--events", "300", "--password-file", &right]].concat());
    let status = sim.wait(WAIT);
    assert!(status.success(), "({status}):\n{}\n{}", sim.output(), gateway.log_text());
    assert_eq!(sim.summary("confirmed"), 600);
    let got = sub.wait_distinct(600, WAIT);
    for device in ["auth-0000", "auth-0001"] {
        let ids: BTreeSet<(u32, u32)> =
            got.events.iter().filter(|(d, _, _)| d == device).map(|(_, b, s)| (*b, *s)).collect();
        assert_eq!(ids, (1..=300).map(|seq| (5, seq)).collect(), "{device}");
    }

    let args = [&common[..], &["--events", "10", "--password-file", &wrong]].concat();
    let mut refused = Sim::start(setup.devices_port, &args);
    let status = refused.wait(WAIT);
    let output = refused.output();
    assert!(!status.success(), "a wrong password must fail the run:\n{output}");
    assert!(output.contains("refused the login: bad user name or password"), "{output}");
    assert!(gateway.log_text().contains("device login refused"), "{}", gateway.log_text());
    assert!(!gateway.log_text().contains(PASSWORD) && !output.contains(PASSWORD), "the password leaked");
}
