//! `edge-gateway status`: a short table for people, an exit code for scripts
//! (0 healthy, 1 degraded, 2 unreachable).

use std::process::Command;
use std::time::Duration;

use edge_tests::clients::{device_events, publish_all};
use edge_tests::gateway::{binary, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::proxy::Proxy;
use edge_tests::wait_until;

fn status(setup: &Setup, dir: &std::path::Path) -> (Option<i32>, String) {
    let config = dir.join("cli.toml");
    std::fs::write(&config, setup.toml()).unwrap();
    let out = Command::new(binary()).args(["status", "--config"]).arg(&config).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_healthy_degraded_or_unreachable_with_the_exit_code() {
    let cloud = Mosquitto::start();
    let link = Proxy::start(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(link.port, data.path());
    let (code, text) = status(&setup, data.path());
    assert_eq!(code, Some(2), "nothing runs yet: {text}");
    assert!(text.contains("no gateway answers"), "{text}");

    let mut gateway = Gateway::start(&setup);
    wait_until(Duration::from_secs(30), "the cloud link", || (gateway.status()["cloud_link_up"] == true).then_some(()));
    let (code, text) = status(&setup, data.path());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("cloud link up") && text.contains("telemetry"), "{text}");

    link.cut();
    publish_all(setup.devices_port, "d1", device_events("d1", 1, 25)).await.unwrap();
    wait_until(Duration::from_secs(30), "25 queued", || (gateway.queue_depth() == 25).then_some(()));
    let (code, text) = status(&setup, data.path());
    assert_eq!(code, Some(1), "the cloud is down: degraded, still buffering: {text}");
    assert!(text.contains("DOWN (buffering)"), "{text}");
    let row = text.lines().find(|l| l.starts_with("telemetry")).unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("25"), "{text}");
    gateway.kill();
}
