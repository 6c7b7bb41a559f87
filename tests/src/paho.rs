//! paho-mqtt, the Eclipse Python client, as a real MQTT 3.1.1 and 5 client: installed with
//! pip when it is missing, then driven by `tests/py/paho_probe.py`, one scenario per run,
//! which prints one JSON object of what the client saw.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Python with paho-mqtt 2 importable (installs it with pip once when missing).
pub fn python() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let importable =
            || Command::new("python3").args(["-c", "import paho.mqtt.client"]).status().is_ok_and(|s| s.success());
        if !importable() {
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "paho-mqtt>=2,<3"])
                .status()
                .expect("python3 runs");
            assert!(status.success() && importable(), "cannot install paho-mqtt with pip");
        }
    });
    "python3"
}

fn probe_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py").join("paho_probe.py")
}

/// Runs one scenario of the probe against 127.0.0.1:`port` with `args`; returns its JSON.
pub fn probe(scenario: &str, port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new("timeout")
        .arg("60")
        .arg(python())
        .arg(probe_script())
        .args([scenario, &port.to_string()])
        .args(args)
        .output()
        .expect("the paho probe runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paho probe {scenario} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("probe {scenario} printed no JSON ({e}): {stdout}"))
}
