//! Who can read the journal (issue 15 item 9, SECURITY.md): the gateway creates
//! `journal.db` and its `-wal` and `-shm` readable by their owner only, whatever the umask,
//! and warns at start and in `check-config` about an existing one that others can read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edge_tests::clients::{device_events, publish_all, CloudSubscriber};
use edge_tests::gateway::{binary, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;

const WAIT: Duration = Duration::from_secs(60);
const WARNING: &str = "is readable by other users";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// The test is only worth something when a file made without care is readable by others.
fn assert_umask_lets_others_read(dir: &Path) {
    let probe = dir.join("umask-probe");
    std::fs::write(&probe, b"").unwrap();
    assert!(mode(&probe) & 0o004 != 0, "run this test with a umask such as 022 (a file is made {:03o})", mode(&probe));
    std::fs::remove_file(&probe).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_and_its_wal_are_created_readable_by_their_owner_only() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let dir = tempfile::tempdir().unwrap();
    assert_umask_lets_others_read(dir.path());
    let data = dir.path().join("data");
    let setup = Setup::new(cloud.port, &data);
    let gateway = Gateway::start(&setup);
    // An event committed, so that the WAL and its shared memory exist.
    publish_all(setup.devices_port, "d1", device_events("d1", 1, 1)).await.unwrap();
    sub.wait_distinct(1, WAIT);
    for name in ["journal.db", "journal.db-wal", "journal.db-shm"] {
        let path = data.join(name);
        assert_eq!(format!("{:03o}", mode(&path)), "600", "{}", path.display());
    }
    assert!(!gateway.log_text().contains(WARNING), "{}", gateway.log_text());
}

#[test]
fn a_journal_others_can_read_is_warned_about_at_start_and_by_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let setup = Setup::new(edge_tests::free_port(), &data);
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, setup.toml()).unwrap();
    let check_config = || {
        let out = Command::new(binary()).args(["check-config", "--config"]).arg(&config).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mut gateway = Gateway::start(&setup);
    assert!(gateway.terminate().unwrap().success());
    let journal = data.join("journal.db");
    assert!(!check_config().contains(WARNING), "a journal the gateway made is not exposed");

    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = check_config();
    let expected = format!("warning: {} is readable by other users (mode 644)", journal.display());
    let line = said.lines().find(|l| l.contains(WARNING)).unwrap_or_else(|| panic!("no warning in: {said}"));
    assert!(line.starts_with(&expected) && line.contains("chmod 600"), "{line}");

    let gateway = Gateway::start(&setup);
    let log = gateway.log_text();
    let line = log.lines().find(|l| l.contains(WARNING)).unwrap_or_else(|| panic!("no warning in: {log}"));
    assert!(line.contains("WARN") && line.contains(&journal.display().to_string()), "{line}");
    assert_eq!(mode(&journal), 0o644, "warned about, not changed behind the operator's back");
}
