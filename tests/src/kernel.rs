//! What the running kernel can do, probed the way the plugin meets it, and the one way a
//! test says it does not apply here.
//!
//! The suite runs on this machine's kernel and inside guests booted on the distro kernels
//! (`cargo xtask test --kernel ...`). A test that needs a capability the kernel lacks calls
//! [`not_applicable`]: it prints one marker line that the kernel-matrix runner collects and
//! reports per kernel, so nothing passes silently.

use crate::netns::unique;

/// The marker the matrix runner greps for; keep in step with `xtask/src/report.rs`.
pub const NOT_APPLICABLE_MARKER: &str = "veth-route-test: not applicable:";

/// Kernel features the datapath depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `ip link add x type dummy` works (the `dummy0` gateway).
    pub dummy: bool,
    /// TCX attach (kernel >= 6.6); below that, clsact/cls_bpf.
    pub tcx: bool,
}

impl Capabilities {
    /// Probe in a throwaway namespace (never on the machine's own interfaces).
    pub fn probe() -> Capabilities {
        Capabilities { dummy: can_create_dummy(), tcx: kernel_at_least(6, 6) }
    }
}

/// Print why `test` does not apply on this kernel. The caller returns right after.
pub fn not_applicable(test: &str, reason: &str) {
    eprintln!("{NOT_APPLICABLE_MARKER} {test}: {reason} (kernel {})", release());
}

/// `uname -r`.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into())
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = release();
    let mut parts = rel.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse::<u32>().unwrap_or(0));
    let (maj, min) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (maj, min) >= (major, minor)
}

fn can_create_dummy() -> bool {
    let ns = crate::netns::NetNs::new("kd");
    let name = unique("d");
    ns.command("ip").args(["link", "add", &name, "type", "dummy"]).output().map(|o| o.status.success()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comparison() {
        // The running kernel is at least 4.0 everywhere this suite runs.
        assert!(kernel_at_least(4, 0));
        assert!(!kernel_at_least(999, 0));
    }
}
