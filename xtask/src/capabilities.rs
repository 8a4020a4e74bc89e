//! What the running kernel offers the datapath, printed at the start of each kernel's run so
//! a result can be read against it: attach mode, dummy, conntrack, BTF and where the
//! conntrack kfuncs live, and the redirect helpers.
//!
//! Probed without side effects on the machine: the dummy device is created in a throwaway
//! network namespace (`unshare --net`), BTF is read with `bpftool btf dump`. Helper support is
//! read from the `enum bpf_func_id` in vmlinux BTF, which is one dump instead of the hundreds
//! of program loads `bpftool feature probe` makes (slow under TCG).

use std::path::Path;
use std::process::Command;

/// Where a piece of the kernel comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into the kernel image.
    BuiltIn,
    /// A loaded module.
    Module,
    /// Neither.
    Absent,
}

/// Where `bpf_skb_ct_lookup` is defined, which decides how a program calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kfuncs {
    /// In vmlinux BTF: callable by BTF id alone.
    Vmlinux,
    /// In the `nf_conntrack` module's BTF: the loader must pass the module BTF in `fd_array`.
    ModuleBtf,
    /// Nowhere (no BTF, conntrack not loaded, or kernel without the kfuncs).
    Absent,
}

/// How [`Capabilities::summary`] begins: the attach modes follow, up to ", dummy".
pub const ATTACH_PREFIX: &str = "tc attach: ";

/// The probed capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `uname -r`.
    pub release: String,
    /// TCX attach (6.6 and later); otherwise clsact + cls_bpf.
    pub tcx: bool,
    /// `ip link add ... type dummy` works.
    pub dummy: bool,
    /// nf_conntrack.
    pub conntrack: Origin,
    /// /sys/kernel/btf/vmlinux exists.
    pub btf: bool,
    /// The conntrack kfuncs.
    pub kfuncs: Kfuncs,
    /// `bpf_redirect_peer` is a known helper.
    pub redirect_peer: bool,
    /// `bpf_redirect_neigh` is a known helper.
    pub redirect_neigh: bool,
}

impl Capabilities {
    /// Probe the running kernel.
    pub fn probe() -> Capabilities {
        let release = release();
        let vmlinux = btf_dump(Path::new("/sys/kernel/btf/vmlinux"));
        let module_btf = Path::new("/sys/kernel/btf/nf_conntrack");
        let kfunc = "FUNC 'bpf_skb_ct_lookup'";
        let kfuncs = if vmlinux.contains(kfunc) {
            Kfuncs::Vmlinux
        } else if module_btf.exists() && btf_dump(module_btf).contains(kfunc) {
            Kfuncs::ModuleBtf
        } else {
            Kfuncs::Absent
        };
        Capabilities {
            tcx: version_at_least(&release, 6, 6),
            dummy: can_create_dummy(),
            conntrack: conntrack_origin(&release),
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            kfuncs,
            redirect_peer: vmlinux.contains("'BPF_FUNC_redirect_peer'"),
            redirect_neigh: vmlinux.contains("'BPF_FUNC_redirect_neigh'"),
            release,
        }
    }

    /// One line for the summary.
    pub fn summary(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        format!(
            "{ATTACH_PREFIX}{}, dummy {}, nf_conntrack {}, BTF {}, conntrack kfuncs {}, bpf_redirect_peer {}, bpf_redirect_neigh {}",
            // What the plugin does with the kernel's TCX support (see veth-route's tc.rs).
            if self.tcx { "pods cls_bpf, uplinks TCX" } else { "pods and uplinks cls_bpf (no TCX before 6.6)" },
            yes(self.dummy),
            match self.conntrack {
                Origin::BuiltIn => "built in",
                Origin::Module => "module",
                Origin::Absent => "absent",
            },
            yes(self.btf),
            match self.kfuncs {
                Kfuncs::Vmlinux => "in vmlinux BTF",
                Kfuncs::ModuleBtf => "in nf_conntrack module BTF (needs fd_array)",
                Kfuncs::Absent => "absent",
            },
            yes(self.redirect_peer),
            yes(self.redirect_neigh),
        )
    }
}

/// `uname -r`.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// Whether `release` (e.g. `6.1.0-57-amd64`) is at least `major.minor`.
pub fn version_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// nf_conntrack: a loaded module has `/sys/module/nf_conntrack/initstate`; built-in code is
/// listed in `modules.builtin`, or, on a kernel without a module tree (this machine's),
/// shows by its sysctl alone. Ask after loading the modules.
pub fn conntrack_origin(release: &str) -> Origin {
    if Path::new("/sys/module/nf_conntrack/initstate").exists() {
        return Origin::Module;
    }
    let builtin = std::fs::read_to_string(Path::new("/lib/modules").join(release).join("modules.builtin")).unwrap_or_default();
    if builtin.lines().any(|l| l.ends_with("/nf_conntrack.ko")) || Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists() {
        Origin::BuiltIn
    } else {
        Origin::Absent
    }
}

fn btf_dump(file: &Path) -> String {
    if !file.exists() {
        return String::new();
    }
    Command::new("bpftool")
        .args(["btf", "dump", "file"])
        .arg(file)
        .args(["format", "raw"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn can_create_dummy() -> bool {
    Command::new("unshare")
        .args(["--net", "ip", "link", "add", "vr-probe0", "type", "dummy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("6.12.117+deb12-amd64", 6, 6));
        assert!(!version_at_least("6.1.0-57-amd64", 6, 6));
        assert!(version_at_least("6.18.44-fc-v669", 6, 6));
        assert!(!version_at_least("5.15.0", 6, 1));
    }
}
