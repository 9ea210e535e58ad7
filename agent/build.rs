//! Builds `drove-monitor` (`monitor/main.rs`), the supervisor that sits beside every container
//! instance, on its own: std only, statically linked, `panic=abort`, size-optimised, so that
//! it stays ~1.3 MB resident (2.1 MB linked like the rest, most of it the C library's pages).
//! The agent embeds the result and writes it out at start (`container::install_monitor`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "monitor/main.rs";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        panic!("cargo sets OUT_DIR for build scripts");
    };
    let out = PathBuf::from(out_dir).join("drove-monitor");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "x86_64-unknown-linux-gnu".into());
    let status = Command::new(&rustc)
        .args([
            "--edition=2021",
            "--crate-name=drove_monitor",
            "--crate-type=bin",
            "-Copt-level=s",
            "-Cpanic=abort",
            "-Ctarget-feature=+crt-static",
            "-Cstrip=symbols",
            "--target",
            &target,
            src,
            "-o",
        ])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "building drove-monitor from agent/{src} failed ({other:?}); a static build needs \
             the C library's archives (apt install libc6-dev)"
        ),
    }
}
