//! The processes of a bench run, each with its pid (for RSS) and its files (for disk use):
//! the gateway with the repository's default config, and Mosquitto as a baseline broker
//! or as the edge side of a bridge.
//!
//! The harness's [`crate::gateway::Gateway`] pins test settings (`synchronous = "normal"`,
//! short backoffs) and hides its pid, and [`crate::mosquitto::Mosquitto`] hides its pid and
//! folder; the bench needs the defaults and the pids, so it has these small wrappers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, gateway::binary, http};

/// A field of `/proc/PID/status` in KiB (`VmRSS`: resident now, `VmHWM`: peak resident).
pub fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?.split_whitespace().next()?.parse().ok()
}

/// `VmRSS` or `VmHWM` in MiB.
pub fn vm_mib(pid: u32, field: &str) -> Option<f64> {
    vm_kib(pid, field).map(|k| k as f64 / 1024.0)
}

/// Bytes of every file under `path`.
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Sends SIGTERM and waits for the exit; SIGKILL after `grace`.
fn terminate(child: &mut Child, grace: Duration) -> Duration {
    let start = Instant::now();
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    start.elapsed()
}

/// What a bench gateway is started with: the repository's `config/gateway.toml` with
/// its ports and paths changed, and optionally the route's `max_delay`.
#[derive(Debug, Clone)]
pub struct GatewayConf {
    /// Cloud broker (or proxy) port.
    pub cloud_port: u16,
    /// Embedded broker port.
    pub devices_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// Journal folder.
    pub data_dir: PathBuf,
    /// `routes[*].batch.max_delay`, when not the default.
    pub max_delay: Option<String>,
    /// Devices `d000`.. as named users (password [`super::load::DEVICE_PASSWORD`]) in place
    /// of `[devices.auth]`.
    pub named_devices: Option<usize>,
}

impl GatewayConf {
    /// Random ports, a journal under `data_dir`.
    pub fn new(cloud_port: u16, data_dir: &Path, max_delay: Option<&str>) -> GatewayConf {
        GatewayConf {
            cloud_port,
            devices_port: free_port(),
            http_port: free_port(),
            data_dir: data_dir.to_owned(),
            max_delay: max_delay.map(str::to_owned),
            named_devices: None,
        }
    }

    /// The default config file (`$EDGE_BENCH_CONFIG`, or the repository's
    /// `config/gateway.toml`) with this run's ports and paths.
    pub fn toml(&self) -> Result<String, String> {
        let path = std::env::var_os("EDGE_BENCH_CONFIG")
            .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.toml"), PathBuf::from);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut config: toml::Table = text.parse().map_err(|e| format!("{}: {e}", path.display()))?;
        let mut set = |section: &str, key: &str, value: String| {
            if let Some(toml::Value::Table(table)) = config.get_mut(section) {
                table.insert(key.into(), toml::Value::String(value));
            }
        };
        set("gateway", "data_dir", self.data_dir.to_string_lossy().into_owned());
        set("devices", "listen", format!("127.0.0.1:{}", self.devices_port));
        set("cloud", "url", format!("mqtt://127.0.0.1:{}", self.cloud_port));
        set("http", "listen", format!("127.0.0.1:{}", self.http_port));
        if let (Some(count), Some(toml::Value::Table(devices))) = (self.named_devices, config.get_mut("devices")) {
            // One argon2 hash for all: the check costs the same per connect.
            static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let hash = HASH.get_or_init(|| crate::gateway::hash_password(super::load::DEVICE_PASSWORD));
            let users: toml::Table =
                (0..count).map(|i| (super::load::device(i), toml::Value::String(hash.clone()))).collect();
            let mut auth = toml::Table::new();
            auth.insert("users".into(), toml::Value::Table(users));
            devices.insert("auth".into(), toml::Value::Table(auth));
        }
        if let (Some(delay), Some(toml::Value::Array(routes))) = (&self.max_delay, config.get_mut("routes")) {
            for route in routes.iter_mut().filter_map(toml::Value::as_table_mut) {
                if let Some(toml::Value::Table(batch)) = route.get_mut("batch") {
                    batch.insert("max_delay".into(), toml::Value::String(delay.clone()));
                }
            }
        }
        toml::to_string(&config).map_err(|e| e.to_string())
    }
}

/// A running `edge-gateway`; SIGKILLed on drop.
pub struct GatewayProc {
    /// How it was started.
    pub conf: GatewayConf,
    child: Option<Child>,
    spawned: Instant,
    dir: tempfile::TempDir,
}

impl GatewayProc {
    /// Starts the binary without waiting.
    pub fn spawn(conf: &GatewayConf) -> Result<GatewayProc, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, conf.toml()?).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("gateway.log")).map_err(|e| e.to_string())?;
        // The first call builds the binary (or waits for cargo's locks): not start-up time.
        let program = binary();
        let spawned = Instant::now();
        let child = Command::new(&program)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,rumqttd=off,rumqttc=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        Ok(GatewayProc { conf: conf.clone(), child: Some(child), spawned, dir })
    }

    /// Starts it and waits for `/readyz`; returns it with the time from spawn to ready.
    pub async fn start(conf: &GatewayConf) -> Result<(GatewayProc, Duration), String> {
        let mut gateway = GatewayProc::spawn(conf)?;
        let took = gateway.ready(Duration::from_secs(60)).await?;
        Ok((gateway, took))
    }

    /// Waits until `/readyz` answers 200 (polled every 2 ms); the time since spawn.
    pub async fn ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        loop {
            if let Some((200, _)) = http::get(self.conf.http_port, "/readyz") {
                return Ok(self.spawned.elapsed());
            }
            let exited = self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || self.spawned.elapsed() > timeout {
                return Err(format!("the gateway did not become ready:\n{}", self.log_text()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// `/api/status`, if it answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = http::get(self.conf.http_port, "/api/status")?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Events waiting in the journal, all routes.
    pub fn queue_depth(&self) -> Option<u64> {
        let status = self.status()?;
        Some(status["routes"].as_array()?.iter().filter_map(|r| r["queue_depth"].as_u64()).sum())
    }

    /// Whether the cloud link is up, by `/api/status`.
    pub fn link_up(&self) -> Option<bool> {
        self.status()?["cloud_link_up"].as_bool()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (SIGKILL after 30 s); how long the shutdown took.
    pub fn terminate(&mut self) -> Option<Duration> {
        let mut child = self.child.take()?;
        Some(terminate(&mut child, Duration::from_secs(30)))
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Mosquitto with its pid and folder (for a persistence file); SIGKILLed on drop.
pub struct MosquittoProc {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl MosquittoProc {
    /// Starts one on a free port with the harness's settings (`user root`, unlimited
    /// queues and in-flight window), persistence on or off, and `extra` lines (a bridge
    /// section goes last); waits until it accepts connections.
    pub async fn start(persistence: bool, extra: &str) -> Result<MosquittoProc, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let persistence = if persistence {
            format!("persistence true\npersistence_location {}/\n", dir.path().display())
        } else {
            String::new()
        };
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 0\n\
             max_inflight_messages 0\n{persistence}{extra}\n"
        );
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let mut broker = MosquittoProc { port, child: None, dir, config };
        broker.restart().await?;
        Ok(broker)
    }

    /// (Re)starts it with the same config and files; the time until it accepts connections
    /// (Mosquitto loads its persistence file before it listens).
    pub async fn restart(&mut self) -> Result<Duration, String> {
        self.kill();
        let spawned = Instant::now();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mosquitto (is it installed?): {e}"))?;
        self.child = Some(child);
        listening(self.port, Duration::from_secs(120)).await?;
        Ok(spawned.elapsed())
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its folder (the persistence file `mosquitto.db` lives there when enabled).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes of its persistence file.
    pub fn persisted_bytes(&self) -> u64 {
        std::fs::metadata(self.dir.path().join("mosquitto.db")).map_or(0, |m| m.len())
    }

    /// SIGTERM (Mosquitto saves its persistence file on the way out) and wait.
    pub fn terminate(&mut self) -> Option<Duration> {
        let mut child = self.child.take()?;
        Some(terminate(&mut child, Duration::from_secs(120)))
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MosquittoProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until something accepts TCP connections on `port` (polled every 2 ms).
pub async fn listening(port: u16, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("nothing listens on port {port} after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
