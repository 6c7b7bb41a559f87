//! One journal, one gateway: a second gateway on the same `data_dir` (other ports, so the
//! embedded broker's bind check cannot be what stops it) is refused with a message that
//! says why, and a `kill -9` of the first never leaves a stale lock behind.

use edge_tests::free_port;
use edge_tests::gateway::{Gateway, Setup};

#[test]
fn a_second_gateway_on_the_same_journal_is_refused_and_a_killed_one_leaves_no_lock() {
    let data = tempfile::tempdir().unwrap();
    let first_setup = Setup::new(free_port(), data.path());
    let mut first = Gateway::start(&first_setup);

    let second_setup = Setup::new(free_port(), data.path());
    assert_ne!(second_setup.devices_port, first_setup.devices_port);
    let mut second = Gateway::spawn(&second_setup);
    let status = second.wait().expect("the second gateway exits by itself");
    let log = second.log_text();
    assert!(!status.success(), "a second gateway on the same journal must not run:\n{log}");
    assert!(log.contains("another edge-gateway is running on"), "the refusal says why:\n{log}");
    assert!(log.contains("journal.lock"), "and names the lock:\n{log}");
    // The first one is untouched.
    assert_eq!(first.status()["ready"], serde_json::json!(true), "{}", first.log_text());

    first.kill();
    let third = Gateway::start(&second_setup);
    assert_eq!(third.status()["ready"], serde_json::json!(true));
}
