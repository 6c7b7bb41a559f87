//! The real `edge-gateway` binary: built once per test run, started with a generated
//! config on random ports, observed through its HTTP endpoints, stopped with real signals.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{free_port, http};

/// Path of the binary: `$EDGE_GATEWAY_BIN`, or `cargo build -p edge-gateway` once
/// (release when `EDGE_TEST_PROFILE=release`).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("EDGE_GATEWAY_BIN") {
            return PathBuf::from(path);
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned();
        let release = std::env::var("EDGE_TEST_PROFILE").is_ok_and(|p| p == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(&workspace).args(["build", "-q", "-p", "edge-gateway", "--bin", "edge-gateway"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cannot run cargo to build edge-gateway");
        assert!(status.success(), "building edge-gateway failed");
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace.join("target"));
        target.join(if release { "release" } else { "debug" }).join("edge-gateway")
    })
    .clone()
}

/// An argon2 hash for `[devices.auth]`, made by `edge-gateway hash-password` with the
/// password on stdin (as an operator makes one).
pub fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edge-gateway hash-password");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("write the password");
    let out = child.wait_with_output().expect("edge-gateway hash-password");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(hash.starts_with("$argon2id$v=19$") && !hash.contains(password), "{hash}");
    hash
}

/// What a test gateway is configured with; the rest comes from the defaults.
#[derive(Clone)]
pub struct Setup {
    /// Cloud broker port.
    pub cloud_port: u16,
    /// Device broker port (embedded).
    pub devices_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// Journal folder (kept across restarts of the same Setup).
    pub data_dir: PathBuf,
    /// Extra lines for `[store]`.
    pub store: String,
    /// Extra lines for `[cloud]`.
    pub cloud: String,
    /// `[cloud].url`; empty: `mqtt://127.0.0.1:{cloud_port}`.
    pub cloud_url: String,
    /// Environment variables for the process (e.g. a `password_env`).
    pub env: Vec<(String, String)>,
    /// Extra lines for `[devices]` (replaces `listen` when it sets `mode`).
    pub devices: String,
    /// The `[devices.auth]` table's lines (embedded mode only): anonymous access unless a
    /// test says otherwise.
    pub devices_auth: String,
    /// The `batch = {...}` of the route.
    pub batch: String,
    /// When not empty, replaces the default `[[routes]]` entry (TOML text).
    pub routes: String,
    /// Extra lines for `[log]`; the process then runs without `RUST_LOG`, so that
    /// `[log].filter` is what filters (by default the tests set `RUST_LOG`).
    pub log: Option<String>,
}

impl Setup {
    /// Random ports, a journal under `data_dir`.
    pub fn new(cloud_port: u16, data_dir: &Path) -> Setup {
        Setup {
            cloud_port,
            devices_port: free_port(),
            http_port: free_port(),
            data_dir: data_dir.to_owned(),
            store: String::new(),
            cloud: "backoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n".into(),
            cloud_url: String::new(),
            env: Vec::new(),
            devices: String::new(),
            devices_auth: "allow_anonymous = true\n".into(),
            batch: "{ max_events = 500, max_bytes = \"64KiB\", max_delay = \"20ms\" }".into(),
            routes: String::new(),
            log: None,
        }
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        let devices = if self.devices.contains("mode") {
            self.devices.clone()
        } else {
            format!(
                "listen = \"127.0.0.1:{}\"\n{}\n[devices.auth]\n{}",
                self.devices_port, self.devices, self.devices_auth
            )
        };
        let routes = if self.routes.is_empty() {
            format!(
                "[[routes]]\nname = \"telemetry\"\nfrom = \"devices/+/events\"\n\
                 to = \"gateways/{{gateway}}/telemetry\"\nbatch = {}\n",
                self.batch
            )
        } else {
            self.routes.clone()
        };
        format!(
            "[gateway]\nid = \"gw-test\"\ndata_dir = \"{data}\"\n\n[devices]\n{devices}\n[store]\nsynchronous = \"normal\"\n{store}\n\
             [cloud]\nurl = \"{cloud_url}\"\n{cloud_extra}\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n{log}{routes}",
            data = self.data_dir.display(),
            store = self.store,
            cloud_url = if self.cloud_url.is_empty() {
                format!("mqtt://127.0.0.1:{}", self.cloud_port)
            } else {
                self.cloud_url.clone()
            },
            cloud_extra = self.cloud,
            http = self.http_port,
            log = self.log.as_ref().map(|log| format!("[log]\n{log}\n")).unwrap_or_default(),
        )
    }
}

/// A running gateway process; SIGKILLed on drop.
pub struct Gateway {
    /// How it was configured.
    pub setup: Setup,
    child: Option<Child>,
    /// Its stderr log file.
    pub log: PathBuf,
    _config_dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the binary and waits until `/readyz` answers 200.
    pub fn start(setup: &Setup) -> Gateway {
        let gateway = Gateway::spawn(setup);
        let port = setup.http_port;
        let log = gateway.log.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = http::get(port, "/readyz") {
                return gateway;
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(!text.contains("edge-gateway: "), "the gateway failed to start:\n{text}");
            // The log says how far it got (the pipeline test once timed out here, unexplained).
            assert!(std::time::Instant::now() < deadline, "the gateway was not ready within 30 s; its log:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the binary without waiting.
    pub fn spawn(setup: &Setup) -> Gateway {
        let config_dir = tempfile::tempdir().expect("temp dir");
        let config = config_dir.path().join("gateway.toml");
        std::fs::write(&config, setup.toml()).expect("write config");
        let log = config_dir.path().join("gateway.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(binary());
        command.args(["run", "--config"]).arg(&config);
        if setup.log.is_some() {
            command.env_remove("RUST_LOG");
        } else {
            command.env("RUST_LOG", std::env::var("EDGE_TEST_LOG").unwrap_or_else(|_| "info,rumqttd=off".into()));
        }
        let child = command
            .envs(setup.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("cannot start edge-gateway");
        Gateway { setup: setup.clone(), child: Some(child), log, _config_dir: config_dir }
    }

    /// The config file it was started with (a test may edit it, then [`Gateway::reload`]).
    pub fn config_path(&self) -> PathBuf {
        self._config_dir.path().join("gateway.toml")
    }

    /// Replaces `from` with `to` in its config file (which must contain `from`).
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config_path()).expect("config file");
        assert!(text.contains(from), "{from:?} is not in the config:\n{text}");
        std::fs::write(self.config_path(), text.replace(from, to)).expect("write config");
    }

    /// Sends SIGHUP and waits for the outcome of that reload in `/api/status`
    /// (`last_reload`, newer than the one before); returns it.
    pub fn reload(&self) -> serde_json::Value {
        let before = self.status()["last_reload"]["at_ms"].as_u64();
        let pid = self.pid().expect("the gateway runs").to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
        crate::wait_until(Duration::from_secs(30), "the outcome of the reload in /api/status", || {
            let last = self.status()["last_reload"].clone();
            (last["at_ms"].as_u64().is_some() && last["at_ms"].as_u64() != before).then_some(last)
        })
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        child.wait().ok()
    }

    /// Whether the process has ended (without waiting).
    pub fn has_exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self) -> Option<ExitStatus> {
        self.child.take()?.wait().ok()
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory (`VmRSS` of `/proc/PID/status`) in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// `/api/status`.
    pub fn status(&self) -> serde_json::Value {
        http::status(self.setup.http_port)
    }

    /// Queue depth of the route.
    pub fn queue_depth(&self) -> u64 {
        self.status()["routes"][0]["queue_depth"].as_u64().unwrap_or(0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}
