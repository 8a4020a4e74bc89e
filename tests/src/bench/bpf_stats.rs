//! What the fast-path programs cost per run, from the kernel's own BPF run-time statistics
//! (`BPF_ENABLE_STATS`: while its fd is open, each program's `run_time_ns` and `run_cnt`
//! count; closing it switches them off again, so nothing is left changed). This works in
//! VMs without hardware performance counters, where `bpftool prog profile` cannot.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use serde_json::Value;

use crate::netns::run_ok;

/// Run-time statistics switched on for as long as this lives.
pub struct Enabled {
    _fd: OwnedFd,
}

impl Enabled {
    pub fn new() -> std::io::Result<Enabled> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        // union bpf_attr { struct { __u32 type; } enable_stats; }, type BPF_STATS_RUN_TIME = 0.
        let attr = [0u64; 2];
        // SAFETY: the bpf syscall reads `size` bytes of `attr`, which we own; it returns an fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_ENABLE_STATS, attr.as_ptr(), std::mem::size_of_val(&attr) as u32) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd the kernel just returned to us.
        Ok(Enabled { _fd: unsafe { OwnedFd::from_raw_fd(fd as i32) } })
    }

    /// `(run_cnt, run_time_ns)` of each program pinned under `<pins>/progs/<build>/`.
    pub fn programs(&self, pins: &Path) -> BTreeMap<String, (u64, u64)> {
        let mut out = BTreeMap::new();
        for build in std::fs::read_dir(pins.join("progs")).into_iter().flatten().flatten() {
            for prog in std::fs::read_dir(build.path()).into_iter().flatten().flatten() {
                let info: Value = serde_json::from_str(&run_ok(
                    std::process::Command::new("bpftool").args(["-j", "prog", "show", "pinned"]).arg(prog.path()),
                ))
                .expect("bpftool JSON");
                let n = |k: &str| info[k].as_u64().unwrap_or(0);
                let e = out.entry(prog.file_name().to_string_lossy().into_owned()).or_insert((0, 0));
                e.0 += n("run_cnt");
                e.1 += n("run_time_ns");
            }
        }
        out
    }
}

/// Per program, `(runs, ns)` between two readings of [`Enabled::programs`].
pub fn delta(before: &BTreeMap<String, (u64, u64)>, after: &BTreeMap<String, (u64, u64)>) -> Vec<(String, u64, u64)> {
    after
        .iter()
        .map(|(name, (cnt, ns))| {
            let (c0, n0) = before.get(name).copied().unwrap_or((0, 0));
            (name.clone(), cnt - c0, ns - n0)
        })
        .filter(|(_, runs, _)| *runs > 0)
        .collect()
}

/// The fast-path counters (`veth-route stats --json`) that moved between two readings, as
/// `program.counter`.
pub fn counter_delta(before: &Value, after: &Value) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for prog in ["from_pod", "to_pod", "from_uplink", "to_uplink"] {
        let Some(fields) = after[prog].as_object() else { continue };
        for (name, v) in fields {
            let moved = v.as_u64().unwrap_or(0) - before[prog][name].as_u64().unwrap_or(0);
            if moved > 0 && name != "passed" && name != "dropped" {
                out.push((format!("{prog}.{name}"), moved));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_keep_what_moved() {
        let b = serde_json::json!({"from_pod": {"redirected": 5, "pass_new_flow": 1, "passed": 1}});
        let a = serde_json::json!({"from_pod": {"redirected": 9, "pass_new_flow": 1, "passed": 1}, "to_pod": {"flows_verified": 2}});
        assert_eq!(counter_delta(&b, &a), vec![("from_pod.redirected".to_string(), 4), ("to_pod.flows_verified".to_string(), 2)]);
        let before = BTreeMap::from([("from_pod".to_string(), (10, 1000))]);
        let after = BTreeMap::from([("from_pod".to_string(), (30, 3000)), ("to_pod".to_string(), (0, 0))]);
        assert_eq!(delta(&before, &after), vec![("from_pod".to_string(), 20, 2000)]);
    }
}
