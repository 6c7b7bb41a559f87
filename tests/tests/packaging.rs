//! Installing on edge hardware: the systemd unit is valid for systemd itself.

use std::process::Command;

use edge_tests::gateway::binary;

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let unit = std::fs::read_to_string(workspace.join("config/edge-gateway.service")).unwrap();
    // Point the unit at the binary this test run built (verify checks that it exists).
    let unit = unit.replace("/usr/bin/edge-gateway", &binary().display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge-gateway.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze not installed: run scripts/test, which installs Debian's systemd");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("edge-gateway.service:"), "systemd complains about the unit:\n{text}");
}
