//! Live reload of the real binary (issue 17; docs/architecture.md, "Live reload"): `SIGHUP`
//! and `edge-gateway reload` re-read the config; an invalid file changes nothing and is
//! reported in the log, `/api/status` and the metrics; what can change live does, while
//! devices stay connected and events keep flowing; what cannot is named as needing a
//! restart; `check-config --diff` shows the difference from the running config.

use std::process::Command;
use std::time::Duration;

use edge_tests::clients::{publish_all, CloudSubscriber};
use edge_tests::gateway::{binary, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{event_json, http, wait_until};

const WAIT: Duration = Duration::from_secs(60);

fn metric(gateway: &Gateway, series: &str) -> f64 {
    http::metric(gateway.setup.http_port, series).unwrap_or(-1.0)
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_changes_nothing_and_is_reported_in_the_log_the_status_and_the_metrics() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let gateway = Gateway::start(&setup);
    assert_eq!(metric(&gateway, "edge_gateway_config_last_reload_successful"), 1.0);
    assert!(gateway.status()["last_reload"].is_null(), "no reload yet");

    // Two errors in two sections, and one valid change that must NOT be applied with them.
    gateway.edit_config("synchronous = \"normal\"", "synchronous = \"normal\"\nmax_bytes = \"1KiB\"");
    gateway.edit_config("to = \"gateways/{gateway}/telemetry\"", "to = \"gateways/{gateway}/other\"\nbogus = 1");
    let outcome = gateway.reload();
    assert_eq!(outcome["result"], "refused", "{outcome}");
    let errors = strings(&outcome["errors"]);
    assert_eq!(errors.len(), 2, "{outcome}");
    assert!(errors.iter().any(|e| e.starts_with("store.max_bytes:")), "{outcome}");
    assert!(errors.iter().any(|e| e.starts_with("routes[0]") && e.contains("bogus")), "{outcome}");
    assert!(strings(&outcome["applied"]).is_empty(), "{outcome}");
    let log = gateway.log_text();
    assert!(log.contains("config reload refused, nothing changed"), "{log}");
    assert!(log.contains("store.max_bytes:"), "the log names every error with its key path:\n{log}");
    assert_eq!(metric(&gateway, "edge_gateway_config_reloads_total{result=\"refused\"}"), 1.0);
    assert_eq!(metric(&gateway, "edge_gateway_config_last_reload_successful"), 0.0);
    let out = Command::new(binary()).args(["status", "--config"]).arg(gateway.config_path()).output();
    // The file is invalid, so `status` cannot read [http] from it: it says so.
    let out = out.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("store.max_bytes"), "{out:?}");

    // The old config keeps running: events still go to the old topic.
    let port = setup.devices_port.to_string();
    let event = event_json("after-refusal", 1, 1);
    let ok = Command::new("mosquitto_pub")
        .args(["-p", &port, "-q", "1", "-t", "devices/after-refusal/events", "-m", &event])
        .status()
        .unwrap();
    assert!(ok.success());
    let got = sub.wait_distinct(1, WAIT);
    assert!(got.topics.iter().all(|t| t == "gateways/gw-test/telemetry"), "{:?}", got.topics);
    assert_eq!(gateway.status()["ready"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_filter_and_the_token_change_live_and_a_listen_address_is_named_as_needing_a_restart() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.log = Some("filter = \"info,rumqttd=off\"".into());
    let gateway = Gateway::start(&setup);
    let port = setup.http_port;

    // A reload that changes nothing says so at info level...
    let outcome = gateway.reload();
    assert_eq!(outcome["result"], "applied", "{outcome}");
    let no_change = |g: &Gateway| g.log_text().matches("config reload: no change").count();
    assert_eq!(no_change(&gateway), 1, "{}", gateway.log_text());

    // ...and once the filter is "warn", the same line is no longer logged.
    gateway.edit_config("filter = \"info,rumqttd=off\"", "filter = \"warn\"");
    let outcome = gateway.reload();
    assert_eq!(strings(&outcome["applied"]), vec!["log.filter = \"warn\"".to_owned()], "{outcome}");
    gateway.reload();
    assert_eq!(no_change(&gateway), 1, "the new filter did not apply:\n{}", gateway.log_text());

    // A token added live: from now on the API wants it.
    let token = "0123456789abcdef-reload";
    gateway.edit_config("[http]\n", &format!("[http]\ntoken = \"{token}\"\n"));
    let pid = gateway.pid().unwrap().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_until(WAIT, "the API to want the new token", || {
        matches!(http::get(port, "/api/status"), Some((401, _))).then_some(())
    });
    let (code, body) = http::get_with_token(port, "/api/status", Some(token)).unwrap();
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["last_reload"]["result"], "applied", "{status}");
    assert!(strings(&status["last_reload"]["applied"]).iter().any(|l| l.starts_with("http.token")), "{status}");

    // `edge-gateway reload` (the API, with the token from the file) and `check-config --diff`
    // before it: a route change is live, a store setting needs a restart.
    gateway.edit_config("max_delay = \"20ms\"", "max_delay = \"30ms\"");
    gateway.edit_config("synchronous = \"normal\"", "synchronous = \"normal\"\nmax_age = \"2d\"");
    let config = gateway.config_path();
    let out = Command::new(binary()).args(["check-config", "--diff", "--config"]).arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("store.max_age = \"2d\" (added) (needs a restart)"), "{text}");
    assert!(text.contains("routes[\"telemetry\"].batch.max_delay: \"20ms\" -> \"30ms\""), "{text}");
    let out = Command::new(binary()).args(["reload", "--config"]).arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("needs a restart: store.max_age"), "{text}");

    // A listen address cannot move live: named, and the old one keeps serving.
    let other = edge_tests::free_port();
    gateway.edit_config(&format!("listen = \"127.0.0.1:{port}\""), &format!("listen = \"127.0.0.1:{other}\""));
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let status = wait_until(WAIT, "the listen change reported", || {
        let (_, body) = http::get_with_token(port, "/api/status", Some(token))?;
        let status: serde_json::Value = serde_json::from_str(&body).ok()?;
        strings(&status["last_reload"]["needs_restart"]).contains(&"http.listen".to_owned()).then_some(status)
    });
    assert_eq!(status["last_reload"]["result"], "applied", "{status}");
    assert!(http::get(other, "/healthz").is_none(), "the new address must not serve before a restart");
    assert!(gateway.log_text().contains("need a restart to take effect: http.listen"), "{}", gateway.log_text());

    // Events flowed through all of it.
    let device = setup.devices_port;
    publish_all(device, "d1", vec![("devices/d1/events".into(), event_json("d1", 1, 1).into_bytes())]).await.unwrap();
    sub.wait_distinct(1, WAIT);
}

#[test]
fn a_sighup_while_the_gateway_starts_is_a_reload_not_the_end_of_it() {
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(edge_tests::free_port(), data.path());
    let mut gateway = Gateway::spawn(&setup);
    let pid = gateway.pid().unwrap().to_string();
    // `systemctl reload` right after `start` (Type=simple): SIGHUPs throughout the start,
    // from the moment the process has its own signal dispositions (before that it is still
    // being exec'd: a window of well under a millisecond no program can close).
    // Polled without a pause: the whole start takes a few tens of milliseconds.
    let handled = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mask = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        };
        (mask("SigIgn:").unwrap_or(0) | mask("SigCgt:").unwrap_or(0)) & 1 == 1
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !handled() {
        assert!(std::time::Instant::now() < deadline, "SIGHUP never caught");
    }
    // Taken before the stages start (it used to be taken only once they all had).
    assert!(!gateway.log_text().contains("journal open"), "SIGHUP was taken late:\n{}", gateway.log_text());
    let mut sent = 0;
    // As fast as `kill` can be run (no pause): every moment of the start gets its SIGHUP.
    // (The log, not /readyz: the HTTP port is bound at once and answers only when ready.)
    while !gateway.log_text().contains("gateway ready") {
        assert!(!gateway.has_exited(), "a SIGHUP during the start ended the gateway:\n{}", gateway.log_text());
        assert!(std::time::Instant::now() < deadline, "not ready in {WAIT:?}:\n{}", gateway.log_text());
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
        sent += 1;
    }
    assert!(sent > 1, "no SIGHUP went out before it was ready");
    assert!(matches!(http::get(setup.http_port, "/readyz"), Some((200, _))));
    let outcome = wait_until(WAIT, "the reload after the start", || {
        let last = gateway.status()["last_reload"].clone();
        (!last.is_null()).then_some(last)
    });
    assert_eq!(outcome["trigger"], "SIGHUP", "{outcome}");
    assert_eq!(outcome["result"], "applied", "{outcome}");
    assert!(!gateway.has_exited(), "{}", gateway.log_text());
}
