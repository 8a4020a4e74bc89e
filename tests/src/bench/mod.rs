//! Benchmarks (`cargo xtask bench`): each measures veth-route beside a reference in the
//! same run and returns a Markdown section; the runner prints them and writes
//! `docs/benchmarks.md`. Numbers are reported, never asserted.

mod bpf_stats;
pub mod cni_latency;
pub mod crr;
pub mod datapath;
mod datapath_report;
pub mod ipam;
pub mod kube_proxy;
mod profile;
pub mod reliability;
mod tools;

use std::time::Duration;

/// One benchmark's report.
pub struct Section {
    /// Heading.
    pub title: String,
    /// Markdown body (tables, notes).
    pub body: String,
}

/// Percentile `p` (0..=100) of `samples` (nearest rank).
pub fn percentile(samples: &[Duration], p: u32) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p as usize * s.len()).div_ceil(100)).clamp(1, s.len());
    s[rank - 1]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Where the machine's identity goes in every report: kernel and CPU.
pub fn machine_stamp() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("kernel {}, {cpu} ({cores} cores)", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let s: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50), Duration::from_millis(5));
        assert_eq!(percentile(&s, 90), Duration::from_millis(9));
        assert_eq!(percentile(&s, 100), Duration::from_millis(10));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }
}
