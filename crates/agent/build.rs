//! Builds the pause program (`pause/pause.rs`) as a small static executable that the agent embeds
//! and packs into its own pause image, so that no registry is ever needed for sandboxes.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=pause/pause.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("pause");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition=2021",
            "--crate-type=bin",
            "--crate-name=pause",
            "-Copt-level=s",
            "-Cpanic=abort",
            "-Cstrip=symbols",
            "-Ctarget-feature=+crt-static",
            "-o",
        ])
        .arg(&out)
        .arg("pause/pause.rs")
        .status()
        .expect("run rustc for the pause program");
    assert!(status.success(), "building the static pause program failed");
}
