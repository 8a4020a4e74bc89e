//! `cargo xtask setup`: installs what builds and tests need, idempotently.
//!
//! Each step probes first, so a machine that has everything spends well under a
//! second here; only a missing piece triggers apt, cargo install or pip.

use std::process::Command;

use crate::process::{run, succeeds, Result};

/// Debian packages: the eBPF toolchain (rustc-web + its library source, LLVM 22 for
/// bpf-linker), inspection (bpftool), the reference CNI plugins, traffic tools,
/// librsvg to render the benchmark chart as PNG, and for the kernel matrix's guests qemu,
/// kmod (depmod here, modprobe inside) and a static busybox (vng builds the initramfs
/// that loads a distro kernel's 9p modules from it; the node image's shell too), podman
/// and runc for the node image (crun fails on these machines' cgroup setup), and
/// debootstrap for the older userland the static binaries are tested in.
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "bpftool",
    "containernetworking-plugins",
    "iproute2",
    "iptables",
    "iperf3",
    "sockperf",
    "socat",
    "librsvg2-bin",
    "procps",
    "util-linux",
    "qemu-system-x86",
    "kmod",
    "busybox-static",
    "podman",
    "runc",
    "debootstrap",
];

/// Install everything that is missing.
pub fn setup() -> Result<()> {
    begin()?.finish()
}

/// A setup whose older userland may still be bootstrapping: it is bound by the mirror's
/// speed, not the CPU, so `cargo xtask test` lets it run during the build.
pub struct Pending {
    userland: std::thread::JoinHandle<std::result::Result<(), String>>,
}

impl Pending {
    /// Wait for the userland.
    pub fn finish(self) -> Result<()> {
        Ok(self.userland.join().map_err(|_| "the userland bootstrap panicked")??)
    }
}

/// Install everything that is missing; the userland only starts (debootstrap comes from apt).
pub fn begin() -> Result<Pending> {
    apt_packages()?;
    let userland = std::thread::spawn(|| crate::userland::prepare().map_err(|e| e.to_string()));
    bpf_linker()?;
    crate::openstack::install_venv()?;
    crate::vng::install_venv()?;
    mount_bpffs()?;
    Ok(Pending { userland })
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// bpf-linker must link with the same LLVM major as the rustc emitting the bitcode
/// (Debian's rustc-web uses LLVM 22), so it is built against llvm-22-dev.
fn bpf_linker() -> Result<()> {
    if succeeds(Command::new("bpf-linker").arg("--version")) {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker against LLVM 22 (about a minute)");
    run(crate::process::cargo()
        .args(["install", "bpf-linker", "--locked", "--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
}

/// Pins live on bpffs; mount it where the kernel expects it when nobody has.
fn mount_bpffs() -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/mounts")?.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"));
    if !mounted {
        run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    Ok(())
}
