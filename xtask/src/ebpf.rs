//! Building the kernel programs (`veth-route-ebpf`) for `bpfel-unknown-none`.
//!
//! The eBPF crate needs `-Z build-std=core`, i.e. a nightly-capable rustc with the matching
//! library source, and `bpf-linker` built against the same LLVM major as that rustc. Two
//! toolchains qualify (see docs): Debian's `rustc-web` + `rust-web-src` (rustc at
//! /usr/bin/rustc, nightly features through RUSTC_BOOTSTRAP=1), or rustup nightly with the
//! `rust-src` component. The build runs in its own workspace with a scrubbed environment so
//! nothing from the outer cargo (RUSTFLAGS, wrappers, target dir...) leaks in.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{run, workspace_root, Result};

/// The compiler toolchain used for the kernel programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EbpfToolchain {
    /// Debian `rustc-web` with `rust-web-src` (library source under /usr/lib/rustlib/src).
    DebianRustcWeb,
    /// `rustup` nightly with the `rust-src` component.
    RustupNightly,
}

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_LIBRARY_SRC: &str = "/usr/lib/rustlib/src/rust/library";

/// Where the built object lands for `release`.
pub fn object_path(release: bool) -> PathBuf {
    let profile = if release { "release" } else { "debug" };
    workspace_root().join("target/ebpf/bpfel-unknown-none").join(profile).join("veth-route-ebpf")
}

/// Pick the toolchain that can build the programs here, or say what is missing.
pub fn detect_toolchain() -> Result<EbpfToolchain> {
    if Path::new(DEBIAN_RUSTC).is_file() && Path::new(DEBIAN_LIBRARY_SRC).is_dir() {
        return Ok(EbpfToolchain::DebianRustcWeb);
    }
    let sysroot = Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]).output();
    if let Ok(out) = sysroot {
        let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && root.join("lib/rustlib/src/rust/library").is_dir() {
            return Ok(EbpfToolchain::RustupNightly);
        }
    }
    Err("no toolchain can build the eBPF programs: need Debian's rustc-web + rust-web-src \
         (apt-get install rustc-web rust-web-src) or rustup nightly with rust-src \
         (rustup toolchain install nightly --component rust-src); `cargo xtask setup` installs one"
        .into())
}

/// Build `veth-route-ebpf` and return the path of the object the plugin embeds.
pub fn build_ebpf(release: bool) -> Result<PathBuf> {
    let toolchain = detect_toolchain()?;
    if !has_bpf_linker() {
        return Err("bpf-linker not found on PATH or in ~/.cargo/bin: run `cargo xtask setup` \
                    (cargo install bpf-linker, built against the LLVM your rustc uses)"
            .into());
    }
    let root = workspace_root();
    let mut cmd = Command::new(cargo_program());
    scrub_outer_cargo_env(&mut cmd);
    if toolchain == EbpfToolchain::RustupNightly {
        cmd.arg("+nightly");
    }
    cmd.current_dir(root.join("veth-route-ebpf"))
        .args(["build", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(root.join("target/ebpf"));
    if release {
        cmd.arg("--release");
    }
    if toolchain == EbpfToolchain::DebianRustcWeb {
        cmd.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
    }
    if let Some(home) = std::env::var_os("HOME") {
        // bpf-linker is usually a `cargo install` away from PATH.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
        cmd.env("PATH", std::env::join_paths(dirs)?);
    }
    eprintln!("building eBPF programs with {toolchain:?}");
    run(&mut cmd)?;
    let object = object_path(release);
    if !object.is_file() {
        return Err(format!("eBPF build succeeded but {} is missing", object.display()).into());
    }
    Ok(object)
}

/// The user's cargo (rustup proxy or distro cargo), not the outer build's `$CARGO`, which
/// may pin a toolchain that cannot build for BPF.
fn cargo_program() -> PathBuf {
    match std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/cargo")) {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("cargo"),
    }
}

fn has_bpf_linker() -> bool {
    let on_path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("bpf-linker").is_file())).unwrap_or(false);
    on_path || std::env::var_os("HOME").is_some_and(|h| PathBuf::from(h).join(".cargo/bin/bpf-linker").is_file())
}

/// Remove what the outer `cargo xtask` invocation exported: flags, wrappers, target dir,
/// toolchain pins and the per-package CARGO_* variables.
fn scrub_outer_cargo_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leaks = (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE")
            || matches!(
                key,
                "CARGO"
                    | "RUSTC"
                    | "RUSTDOC"
                    | "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTC_BOOTSTRAP"
                    | "RUSTUP_TOOLCHAIN"
                    | "RUST_RECURSION_COUNT"
                    | "VETH_ROUTE_EBPF_OBJ"
            );
        if leaks {
            cmd.env_remove(key);
        }
    }
}
