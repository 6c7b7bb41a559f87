//! The firmware footprint table in `firmware/README.md` is what the firmware measures today,
//! and within budget: `scripts/firmware-footprint --check` rebuilds the `footprint` binary
//! of `firmware/qemu` for every target and `edge-firmware` feature, measures it (`size`,
//! and the peak stack under QEMU), and fails on any difference from the README's table,
//! or when the blocking SDK (with `flash`, once that feature exists) takes 32 KiB of text
//! or 8 KiB of static RAM on thumbv7em.
//!
//! Needs the thumb targets, a `size` tool and `qemu-system-arm`; the script adds the first
//! two with rustup when missing, `scripts/test` installs QEMU.

use std::path::Path;
use std::process::Command;

#[test]
fn the_readme_footprint_table_is_current_and_within_budget() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let output = Command::new(workspace.join("scripts/firmware-footprint"))
        .arg("--check")
        .current_dir(workspace)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cannot run scripts/firmware-footprint");
    assert!(
        output.status.success(),
        "scripts/firmware-footprint --check failed ({}); if the firmware changed on purpose, run \
         `scripts/firmware-footprint --write` and commit firmware/README.md:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
