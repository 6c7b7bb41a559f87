//! Installing on edge hardware: the systemd unit is valid for systemd itself, and the
//! Debian package ships the operator's kit (`contrib/`) where docs/operations.md says.

use std::process::Command;

use edge_tests::gateway::binary;

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let unit = std::fs::read_to_string(workspace.join("config/edge-gateway.service")).unwrap();
    // `systemctl reload` is SIGHUP, which the gateway takes as "re-read the config"; and no
    // RUST_LOG in the unit, or it would win over [log].filter and its live reload.
    assert!(unit.lines().any(|l| l == "ExecReload=/bin/kill -HUP $MAINPID"), "no ExecReload= in the unit");
    assert!(!unit.contains("RUST_LOG"), "the unit sets RUST_LOG, which overrides [log].filter");
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

/// `scripts/package-deb` builds the `.deb` from `gateway/Cargo.toml`'s assets and fails when
/// a path it lists is missing; CI runs it. Here, without building a package: every file of
/// `contrib/` is an asset under `/usr/share/edge-gateway/` and in package-deb's list.
#[test]
fn the_deb_ships_every_file_of_the_operators_kit() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let manifest: toml::Table = std::fs::read_to_string(workspace.join("gateway/Cargo.toml")).unwrap().parse().unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"].as_array().unwrap();
    let assets: Vec<(&str, &str)> = assets.iter().map(|a| (a[0].as_str().unwrap(), a[1].as_str().unwrap())).collect();
    let script = std::fs::read_to_string(workspace.join("scripts/package-deb")).unwrap();
    let mut kit = Vec::new();
    for dir in ["grafana", "prometheus"] {
        for entry in std::fs::read_dir(workspace.join("contrib").join(dir)).unwrap() {
            kit.push(format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy()));
        }
    }
    assert!(kit.len() >= 3, "the kit is a dashboard, the rules and their tests: {kit:?}");
    for file in kit {
        let installed = format!("usr/share/edge-gateway/{file}");
        let source = format!("../contrib/{file}");
        assert!(
            assets.iter().any(|&(from, to)| from == source && to == installed),
            "contrib/{file} is not packaged as /{installed} (gateway/Cargo.toml, [package.metadata.deb] assets)"
        );
        assert!(script.contains(&format!("./{installed}")), "scripts/package-deb does not check /{installed}");
    }
}
