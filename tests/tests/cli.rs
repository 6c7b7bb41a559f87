//! The binary's command line: `check-config`, refusing bad configs, and start-up errors a
//! user can act on (port taken, damaged journal).

use std::net::TcpListener;
use std::process::Command;

use edge_tests::gateway::{binary, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

#[test]
fn help_lists_the_subcommands() {
    let out = Command::new(binary()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run") && text.contains("check-config"), "{text}");
}

#[test]
fn check_config_accepts_the_shipped_default_with_a_one_line_summary() {
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(workspace().join("config/gateway.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("ok") && text.contains("gw-01") && text.contains("telemetry"), "{text}");
}

#[test]
fn check_config_lists_every_error_with_its_key_path_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[store]\nmax_bytes = \"64kb\"\nwhen_full = \"sometimes\"\n[cloud]\nurl = \"mqtt://h:port\"\n\
         [[routes]]\nname = \"a\"\nfrom = \"devices/+/events\"\nto = \"t\"\nbatch = { max_bytes = \"1GiB\" }\n",
    )
    .unwrap();
    let out = Command::new(binary()).args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("bad.toml"), "names the file: {text}");
    for path in ["store.max_bytes:", "store.when_full:", "cloud.url:", "routes[0].batch.max_bytes:"] {
        assert!(text.contains(path), "missing {path} in:\n{text}");
    }
    assert!(text.contains("4 error(s)"), "{text}");
}

#[test]
fn run_refuses_a_bad_config_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, format!("[gateway]\ndata_dir = \"{}/data\"\nunknown = 1\n", dir.path().display())).unwrap();
    let out = Command::new(binary()).args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("gateway.unknown: unknown field"), "{text}");
    assert!(text.contains("routes: at least one"), "{text}");
    assert!(!dir.path().join("data").exists(), "nothing is created for a refused config");
}

#[test]
fn a_device_port_already_in_use_is_a_clear_start_up_error() {
    let cloud = Mosquitto::start();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.devices_port = taken.local_addr().unwrap().port();
    let mut gateway = Gateway::spawn(&setup);
    let status = gateway.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let log = gateway.log_text();
    assert!(log.contains(&format!("cannot listen for devices on 127.0.0.1:{}", setup.devices_port)), "{log}");
}

#[test]
fn a_damaged_journal_stops_start_up_with_advice_and_is_left_in_place() {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let journal = data.path().join("journal.db");
    std::fs::write(&journal, b"this is not a database, but it is somebody's data".repeat(100)).unwrap();
    let before = std::fs::read(&journal).unwrap();
    let mut gateway = Gateway::spawn(&Setup::new(cloud.port, data.path()));
    assert_eq!(gateway.wait().unwrap().code(), Some(1));
    let log = gateway.log_text();
    assert!(log.contains("journal.db") && log.contains("damaged") && log.contains("move the file"), "{log}");
    assert_eq!(std::fs::read(&journal).unwrap(), before, "never deleted or rewritten");
}

#[test]
fn log_lines_follow_the_log_section() {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = "[log]\nformat = \"json\"\nfilter = \"info\"\n\n[[routes]]\nname = \"telemetry\"\n\
                    from = \"devices/+/events\"\nto = \"gateways/{gateway}/telemetry\"\n"
        .into();
    let mut gateway = Gateway::start(&setup);
    gateway.terminate();
    let log = gateway.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string() && value["fields"]["message"].is_string(), "{line}");
    }
    assert!(log.contains("gateway ready"));
}

#[test]
fn a_bearer_token_guards_everything_but_liveness_and_the_cli_sends_it() {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let token_file = data.path().join("http.token");
    std::fs::write(&token_file, "s3cret-token-of-some-length\n").unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = format!(
        "[http]\nlisten = \"127.0.0.1:{}\"\ntoken_file = \"{}\"\n\n[[routes]]\nname = \"telemetry\"\n\
         from = \"devices/+/events\"\nto = \"gateways/{{gateway}}/telemetry\"\n",
        setup.http_port,
        token_file.display()
    );
    // The harness's [http] section comes first; this config repeats it, so write it by hand.
    let text = setup.toml().replacen(&format!("[http]\nlisten = \"127.0.0.1:{}\"\n", setup.http_port), "", 1);
    let config = data.path().join("gw.toml");
    std::fs::write(&config, &text).unwrap();
    let mut child = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let port = setup.http_port;
    edge_tests::wait_until(std::time::Duration::from_secs(30), "HTTP", || edge_tests::http::get(port, "/healthz"));
    assert_eq!(edge_tests::http::get(port, "/healthz").unwrap().0, 200, "liveness needs no token");
    assert_eq!(edge_tests::http::get(port, "/").unwrap().0, 200, "the page itself holds no data");
    for path in ["/metrics", "/readyz", "/api/status", "/api/dlq", "/api/devices", "/api/devices/d1"] {
        assert_eq!(edge_tests::http::get(port, path).unwrap().0, 401, "{path} wants the token");
    }
    let out = Command::new(binary()).args(["status", "--config"]).arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("gateway gw-test"), "the CLI sends the token: {text}");
    assert!(!text.contains("s3cret"), "and never prints it");
    let _ = child.kill();
    let _ = child.wait();
}
