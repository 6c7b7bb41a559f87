//! The firmware's simulator, `edge-sensor-sim`, as a child process: built once, started
//! against a gateway's device port, its output collected line by line, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

/// Path of the simulator: `$EDGE_SENSOR_SIM_BIN`, or built once with cargo (release when
/// `EDGE_TEST_PROFILE=release`).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("EDGE_SENSOR_SIM_BIN") {
            return PathBuf::from(path);
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned();
        let release = std::env::var("EDGE_TEST_PROFILE").is_ok_and(|p| p == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(&workspace).args([
            "build",
            "-q",
            "-p",
            "edge-firmware",
            "--features",
            "std,tls",
            "--bin",
            "edge-sensor-sim",
        ]);
        if release {
            build.arg("--release");
        }
        assert!(build.status().expect("cannot run cargo").success(), "building edge-sensor-sim failed");
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace.join("target"));
        target.join(if release { "release" } else { "debug" }).join("edge-sensor-sim")
    })
    .clone()
}

/// Path of an example of the firmware crate, built once per name with `features` (release
/// when `EDGE_TEST_PROFILE=release`).
pub fn example(name: &str, features: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().expect("lock");
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned();
    let release = std::env::var("EDGE_TEST_PROFILE").is_ok_and(|p| p == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(&workspace).args([
        "build",
        "-q",
        "-p",
        "edge-firmware",
        "--features",
        features,
        "--example",
        name,
    ]);
    if release {
        build.arg("--release");
    }
    assert!(build.status().expect("cannot run cargo").success(), "building the {name} example failed");
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace.join("target"));
    let path = target.join(if release { "release" } else { "debug" }).join("examples").join(name);
    built.push((name.to_owned(), path.clone()));
    path
}

/// A running simulator.
pub struct Sim {
    /// The process.
    pub child: Child,
    output: Arc<Mutex<String>>,
    /// The threads that copy its stdout and stderr into `output`.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Sim {
    /// Starts it against `127.0.0.1:{devices_port}` with extra arguments.
    pub fn start(devices_port: u16, args: &[&str]) -> Sim {
        let port = devices_port.to_string();
        Sim::spawn(Command::new(binary()).args(["--host", "127.0.0.1", "--port", &port]).args(args))
    }

    /// Starts another program of the firmware (an example), collecting its output the same
    /// way.
    pub fn spawn(command: &mut Command) -> Sim {
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cannot start the firmware program");
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ] {
            let Some(stream) = stream else { continue };
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().expect("lock").push_str(&(line + "\n"));
                }
            }));
        }
        Sim { child, output, readers }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("lock").clone()
    }

    /// Waits (up to `limit`) for it to exit by itself, and for its last lines: the exit
    /// alone can come before the reader threads have copied them (firmware_storm.rs once
    /// found no summary line after a successful exit).
    pub fn wait(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        let status = crate::wait_until(limit, "the simulator to exit", || self.child.try_wait().expect("sim status"));
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    /// A number from its final summary line, e.g. `resent`.
    pub fn summary(&self, key: &str) -> u64 {
        let output = self.output();
        let line = output.lines().rev().find(|l| l.starts_with("edge-sensor-sim:")).expect("a summary line");
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(2)
            .find_map(|w| (w[0] == key).then(|| w[1].parse().ok()).flatten())
            .unwrap_or_else(|| panic!("no number after {key:?} in {line}"))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
