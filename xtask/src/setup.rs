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
    "qperf",
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

/// Setup steps still running. They are bound by a mirror's speed more than by the CPU
/// (debootstrap, pip, `apt-get download`), so `cargo xtask test` lets them run during the
/// build; on a fresh machine that hides minutes. Each is a no-op once its result exists.
pub struct Pending {
    steps: Vec<(&'static str, std::thread::JoinHandle<std::result::Result<(), String>>)>,
}

impl Pending {
    /// Start `step` beside the others. Its error is carried as text: the task runner's
    /// errors are not `Send`.
    pub fn also(&mut self, what: &'static str, step: impl FnOnce() -> Result<()> + Send + 'static) {
        self.steps.push((what, std::thread::spawn(move || step().map_err(|e| e.to_string()))));
    }

    /// Wait for every step; fail naming each one that failed.
    pub fn finish(self) -> Result<()> {
        let failures: Vec<String> = self
            .steps
            .into_iter()
            .filter_map(|(what, handle)| match handle.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{what}: {e}")),
                Err(_) => Some(format!("{what}: panicked")),
            })
            .collect();
        if failures.is_empty() {
            return Ok(());
        }
        Err(format!("setup failed: {}", failures.join("; ")).into())
    }
}

/// Install the Debian packages (everything else comes from them) and bpf-linker (the build
/// needs it at once); start the rest.
pub fn begin() -> Result<Pending> {
    apt_packages()?;
    mount_bpffs()?;
    let mut pending = Pending { steps: Vec::new() };
    pending.also("the Debian 11 userland", crate::userland::prepare);
    pending.also("the OpenStack venv", crate::openstack::install_venv);
    pending.also("the virtme-ng venv", crate::vng::install_venv);
    bpf_linker()?;
    Ok(pending)
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
    eprintln!("setup: building bpf-linker against LLVM 22 (about 2 minutes)");
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
