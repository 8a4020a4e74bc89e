//! Where the CPU time of a connection-rate run goes, by kernel function group: a
//! system-wide `perf record` with the software `cpu-clock` event (works in VMs without
//! hardware counters), reported for the `crr` client and server threads only, so other
//! work on a shared machine does not count. Softirq processing of a packet runs in the
//! thread that sent it, so the datapath's cost is in these threads.

use std::path::Path;
use std::process::{Command, Stdio};

use super::crr;

/// One sample per this much CPU time (`perf record -c` of `cpu-clock`, in ns).
const PERIOD_NS: u64 = 100_000;

/// CPU time per group, in µs, largest first.
pub type Shares = Vec<(&'static str, f64)>;

/// Sample while `work` runs; `None` when perf cannot record here.
pub fn record(scratch: &Path, tag: &str, work: impl FnOnce()) -> Option<Shares> {
    let data = scratch.join(format!("perf-{tag}.data"));
    let mut perf = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-c", &PERIOD_NS.to_string(), "-a", "-o"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // perf takes a moment to open its per-CPU buffers; the first samples may miss that time.
    std::thread::sleep(std::time::Duration::from_millis(300));
    work();
    // SIGINT, as Ctrl-C: perf writes its data file and exits.
    // SAFETY: kill on a child we spawned and still own.
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    perf.wait().ok()?;
    let comms = format!("{},{}", crr::CLIENT_THREAD, crr::SERVER_THREAD);
    let out = Command::new("perf")
        .args(["report", "--stdio", "-n", "--no-children", "--sort", "sym", "--comm", &comms, "-i"])
        .arg(&data)
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&data);
    let shares = group(&String::from_utf8_lossy(&out.stdout));
    (!shares.is_empty()).then_some(shares)
}

/// Sum `perf report -n --sort sym` lines ("  12.34%  1234  [k] nft_do_chain") into CPU
/// time per group.
fn group(report: &str) -> Shares {
    let mut groups: Vec<(&'static str, f64)> = Vec::new();
    for line in report.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut words = line.split_whitespace();
        let (Some(pct), Some(samples), Some(_), Some(sym)) = (words.next(), words.next(), words.next(), words.next()) else { continue };
        let (false, Ok(samples)) = (pct.strip_suffix('%').is_none(), samples.parse::<u64>()) else { continue };
        let us = (samples * PERIOD_NS) as f64 / 1e3;
        let g = group_of(sym);
        match groups.iter_mut().find(|(n, _)| *n == g) {
            Some(e) => e.1 += us,
            None => groups.push((g, us)),
        }
    }
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    groups
}

fn group_of(sym: &str) -> &'static str {
    const GROUPS: &[(&str, &[&str])] = &[
        ("netfilter rules (nft, xt matches)", &["nft_", "nf_tables", "xt_", "ipt_", "statistic_mt", "addrtype", "comment_mt"]),
        (
            "conntrack and NAT",
            &["nf_conntrack", "__nf_conntrack", "nf_ct_", "nf_nat", "__nf_ct", "tcp_packet", "hash_conntrack", "nf_confirm"],
        ),
        ("netfilter hooks", &["nf_hook", "nf_iterate", "ipv4_conntrack", "ipv4_confirm"]),
        ("eBPF programs and maps", &["bpf_", "htab_", "__htab", "lru_", "tcx_", "sch_handle"]),
        ("IP routing and forwarding", &["ip_", "fib_", "__fib", "ipv4_", "ip4_", "dst_", "rt_", "__ip_", "neigh_"]),
        (
            "veth and device layer",
            &["veth_", "__dev_", "dev_", "netif_", "__netif", "napi_", "process_backlog", "skb_", "__skb", "kfree_skb", "net_rx"],
        ),
        ("TCP and sockets", &["tcp_", "__tcp", "inet_", "__inet", "sock_", "sk_", "__sk", "__sys_", "sys_", "release_sock", "lock_sock"]),
        (
            "scheduler, wakeups, idle",
            &["schedule", "__schedule", "try_to_wake", "ttwu", "finish_task", "pv_", "native_", "default_idle", "_raw_spin", "raw_spin"],
        ),
    ];
    GROUPS.iter().find(|(_, prefixes)| prefixes.iter().any(|p| sym.starts_with(p))).map(|(g, _)| *g).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_per_group() {
        let report = "# Overhead  Samples  Symbol\n    20.00%  200  [k] nft_do_chain\n     5.50%  55  [k] nf_conntrack_in\n     4.50%  45  [k] __nf_conntrack_find_get\n     3.00%  30  [k] tcp_sendmsg\n     1.00%  10  [.] main\n";
        let g = group(report);
        assert_eq!(g[0], ("netfilter rules (nft, xt matches)", 20_000.0));
        assert_eq!(g[1], ("conntrack and NAT", 10_000.0));
        assert_eq!(g.iter().find(|(n, _)| *n == "other").unwrap().1, 1_000.0);
    }
}
