//! The datapath benchmark's report: medians with spreads, ratios of medians with the spread
//! of the per-round ratios and a verdict per target, the fast path's own cost, the chart.

use std::fmt::Write as _;

use super::datapath::{Config, Load, Quantity, Samples, Topology, Variant};

/// The programs' run time and counters during one run on the loaded fast-path VM.
#[derive(Default)]
pub struct Cost {
    pub runs: Vec<CostRun>,
    /// `(datapath, connections, CPU µs per kernel function group)` of a profiled
    /// connection-rate run (`bench::profile`).
    pub profiles: Vec<(&'static str, f64, super::profile::Shares)>,
    /// `(datapath, connections/s, connections/s with the pods' SYNs skipping KUBE-SERVICES)`.
    pub early_return: Vec<(&'static str, f64, f64)>,
}

pub struct CostRun {
    pub name: &'static str,
    /// Transactions of the run (connections for the connection rate), if counted exactly.
    pub transactions: Option<f64>,
    /// `(program, runs, ns)`.
    pub programs: Vec<(String, u64, u64)>,
    /// `(program.counter, increase)`.
    pub counters: Vec<(String, u64)>,
}

/// Median, minimum and maximum of `v` (not empty).
pub fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    (median, s[0], s[n - 1])
}

/// A target on a ratio.
#[derive(Clone, Copy)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn holds(self, x: f64) -> bool {
        match self {
            Target::AtMost(t) => x <= t,
            Target::AtLeast(t) => x >= t,
        }
    }
}

/// "met" only when the ratio of medians and every per-round ratio are on the right side;
/// "not met" when the ratio of medians is on the wrong side; otherwise the spread crosses it.
fn verdict(ratio: f64, per_round: &[f64], target: Target) -> &'static str {
    if target.holds(ratio) && per_round.iter().all(|r| target.holds(*r)) {
        "met"
    } else if !target.holds(ratio) {
        "**not met**"
    } else {
        "unclear (spread crosses)"
    }
}

const LOADS: [Load; 2] = [Load::Idle, Load::KubeProxy];

fn fmt(x: f64, q: Quantity) -> String {
    match q {
        Quantity::LatencyUs | Quantity::Gbps1 | Quantity::Gbps4 => format!("{x:.2}"),
        Quantity::Tps | Quantity::ConnRate => format!("{x:.0}"),
    }
}

fn cell(samples: &Samples, load: Load, t: Topology, v: Variant, q: Quantity) -> String {
    match samples.get(&(load, t, v, q)) {
        Some(s) if !s.is_empty() => {
            let (m, lo, hi) = spread(s);
            format!("{} ({}–{})", fmt(m, q), fmt(lo, q), fmt(hi, q))
        }
        _ => "–".into(),
    }
}

/// `a / b`: ratio of medians and the per-round ratios (rounds are paired: the two ran in
/// the same round, one after the other).
fn ratio(samples: &Samples, load: Load, t: Topology, a: Variant, b: Variant, q: Quantity) -> Option<(f64, Vec<f64>)> {
    let (x, y) = (samples.get(&(load, t, a, q))?, samples.get(&(load, t, b, q))?);
    if x.is_empty() || y.is_empty() {
        return None;
    }
    let per_round = x.iter().zip(y).map(|(x, y)| x / y).collect();
    Some((spread(x).0 / spread(y).0, per_round))
}

fn ratio_cell(r: Option<(f64, Vec<f64>)>, target: Option<Target>) -> String {
    let Some((ratio, per_round)) = r else { return "–".into() };
    let (_, lo, hi) = spread(&per_round);
    let v = target.map(|t| format!(" {}", verdict(ratio, &per_round, t))).unwrap_or_default();
    format!("{ratio:.3} ({lo:.3}–{hi:.3}){v}")
}

/// The section body: method, the table of medians, the ratio table, the fast path's cost.
pub fn render(samples: &Samples, cfg: &Config, cost: &Cost) -> String {
    let mut s = format!(
        "Measured on {stamp}. Each cell: median over {rounds} rounds (min–max). Per round, every datapath runs each measurement once, \
         the datapaths taking turns in an order rotated every round; clients on CPU 0, servers on CPU 1 \
         (`taskset`, `sched_setaffinity`) for every datapath. Tools, {secs} s per run: sockperf TCP ping-pong \
         (latency: its p50, half the round trip; transactions/s: round trips completed per second), \
         `bench::crr` (connections/s: connect, 3-byte request, 3-byte answer, close, one at a time, \
         the netperf TCP_CRR pattern), iperf3 TCP with 1 and 4 streams (receiver's rate). \
         Every VM runs {pods} pods (endpoint map, routes and host veths at a node's size), two of them measured. \
         kube-proxy: the VM carries the rules kube-proxy writes in iptables mode for {svcs} Services × 3 endpoints \
         (`bench::kube_proxy`: nat PREROUTING/OUTPUT → KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-* with \
         `statistic --mode random`, DNAT, KUBE-MARK-MASQ, KUBE-POSTROUTING; filter KUBE-FORWARD with ctstate), \
         loaded with iptables-restore; the measured traffic is pod to pod, not to a Service, as most of a node's is. \
         Before each connection-rate run the VM's conntrack table, where it has one (kube-proxy), is flushed. \
         uplink<->pod: the client is the router namespace, so both directions cross the VM's uplink. \
         IPv6: the same pods (dual-stack) and tools over their IPv6 addresses, on the idle host only (the kube-proxy \
         rules are IPv4 iptables); ping-pong by qperf `tcp_lat` instead (latency: its mean, half the round trip; \
         transactions/s: derived from it), because Debian 12's sockperf (3.7) takes no IPv6 address. \
         The direct veth pair has no VM: it is measured again in every block as the limit.\n\n\
         | host | traffic | datapath | latency p50 (us; IPv6: mean) | transactions/s | connections/s | Gbit/s, 1 stream | Gbit/s, 4 streams |\n\
         |---|---|---|---:|---:|---:|---:|---:|\n",
        stamp = super::machine_stamp(),
        rounds = cfg.rounds,
        secs = cfg.seconds,
        pods = cfg.pods,
        svcs = cfg.services,
    );
    for load in LOADS {
        for t in Topology::ALL.into_iter().filter(|t| t.measured_under(load)) {
            for v in Variant::ALL {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    load.label(),
                    t.label(),
                    v.label(),
                    cell(samples, load, t, v, Quantity::LatencyUs),
                    cell(samples, load, t, v, Quantity::Tps),
                    cell(samples, load, t, v, Quantity::ConnRate),
                    cell(samples, load, t, v, Quantity::Gbps1),
                    cell(samples, load, t, v, Quantity::Gbps4),
                );
            }
        }
    }
    s.push_str(
        "\nRatios of medians, with the min–max of the per-round ratios. Targets: latency fast/direct ≤ 1.05 and \
         throughput fast/direct ≥ 0.95 on both hosts; on the kube-proxy host fast/kernel path ≥ 1.5 for transactions \
         and ≥ 2 for connections (the kernel path is veth-route with `fastPath: off`). A target is \"met\" only when \
         every per-round ratio is on its side. direct/kernel path is the ceiling of fast/kernel path: no datapath \
         between two pods is faster than a veth pair with nothing in between.\n\n\
         | host | traffic | latency fast/direct | Gbit/s 1 stream fast/direct | Gbit/s 4 streams fast/direct | \
         tps fast/kernel path | conn/s fast/kernel path | tps direct/kernel path | conn/s direct/kernel path |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    use Variant::*;
    for load in LOADS {
        let loaded = load == Load::KubeProxy;
        for t in Topology::ALL.into_iter().filter(|t| t.measured_under(load)) {
            let r = |a, b, q| ratio(samples, load, t, a, b, q);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                load.label(),
                t.label(),
                ratio_cell(r(FastPath, Direct, Quantity::LatencyUs), Some(Target::AtMost(1.05))),
                ratio_cell(r(FastPath, Direct, Quantity::Gbps1), Some(Target::AtLeast(0.95))),
                ratio_cell(r(FastPath, Direct, Quantity::Gbps4), Some(Target::AtLeast(0.95))),
                ratio_cell(r(FastPath, KernelPath, Quantity::Tps), loaded.then_some(Target::AtLeast(1.5))),
                ratio_cell(r(FastPath, KernelPath, Quantity::ConnRate), loaded.then_some(Target::AtLeast(2.0))),
                ratio_cell(r(Direct, KernelPath, Quantity::Tps), None),
                ratio_cell(r(Direct, KernelPath, Quantity::ConnRate), None),
            );
        }
    }
    s.push_str(
        "\nWhy a target is not met, measured, and what would change it: \
         [fastpath.md, \"What limits the fast path\"](fastpath.md#what-limits-the-fast-path).\n",
    );
    render_per_connection(&mut s, samples);
    render_cost(&mut s, cost);
    s
}

/// Time per transaction and per connection (1 / median rate), idle and loaded: the
/// difference is what the kube-proxy rules cost each one.
fn render_per_connection(s: &mut String, samples: &Samples) {
    s.push_str(
        "\nTime per ping-pong transaction and per connection, µs (1 / median rate), and what the kube-proxy rules add:\n\n\
         | traffic | datapath | transaction idle | kube-proxy | added | connection idle | kube-proxy | added |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    // Idle against loaded: only the traffic measured under both.
    for t in Topology::ALL.into_iter().filter(|t| t.measured_under(Load::KubeProxy)) {
        for v in Variant::ALL {
            let us = |load, q| samples.get(&(load, t, v, q)).filter(|x| !x.is_empty()).map(|x| 1e6 / spread(x).0);
            let mut row = format!("| {} | {} |", t.label(), v.label());
            for q in [Quantity::Tps, Quantity::ConnRate] {
                match (us(Load::Idle, q), us(Load::KubeProxy, q)) {
                    (Some(i), Some(k)) => row += &format!(" {i:.1} | {k:.1} | {:+.1} |", k - i),
                    _ => row += " – | – | – |",
                }
            }
            s.push_str(&row);
            s.push('\n');
        }
    }
}

fn render_cost(s: &mut String, cost: &Cost) {
    if cost.runs.is_empty() && cost.profiles.is_empty() && cost.early_return.is_empty() {
        return;
    }
    s.push_str(
        "\nThe fast path's own cost, on the kube-proxy host, pod<->pod (one run each after the rounds, with the \
         kernel's BPF run-time statistics on, `BPF_ENABLE_STATS`: they include the statistics' own clock reads):\n\n\
         | run | program | runs | ns per run | runs per transaction |\n|---|---|---:|---:|---:|\n",
    );
    for run in &cost.runs {
        for (prog, runs, ns) in &run.programs {
            let per_txn = run.transactions.map(|t| format!("{:.1}", *runs as f64 / t)).unwrap_or_else(|| "–".into());
            let _ = writeln!(s, "| {} | {prog} | {runs} | {:.0} | {per_txn} |", run.name, *ns as f64 / (*runs).max(1) as f64);
        }
        let counters: Vec<String> = run
            .counters
            .iter()
            .map(|(c, n)| match run.transactions {
                Some(t) => format!("`{c}` {:.2}", *n as f64 / t),
                None => format!("`{c}` {n}"),
            })
            .collect();
        let unit = if run.transactions.is_some() { "per connection" } else { "in the run" };
        let _ = writeln!(s, "| {} | counters {unit} | {} | | |", run.name, counters.join(", "));
    }
    if !cost.early_return.is_empty() {
        s.push_str(
            "\nConnections/s on the kube-proxy host, pod<->pod, one run each: as loaded, and with \
             `iptables -t nat -I PREROUTING 1 -d 10.10.0.0/16 -j RETURN` (the SYN of a flow to a pod skips KUBE-SERVICES):\n\n\
             | datapath | kube-proxy rules | SYN skips KUBE-SERVICES |\n|---|---:|---:|\n",
        );
        for (label, loaded, skipping) in &cost.early_return {
            let _ = writeln!(s, "| {label} | {loaded:.0} | {skipping:.0} |");
        }
    }
    if cost.profiles.is_empty() {
        return;
    }
    s.push_str(
        "\nCPU time per connection of the client and server threads (softirq work included: a packet is processed \
         in the thread that sends it), by kernel function group, one connection-rate run each on the kube-proxy host, \
         pod<->pod, sampled with `perf record -e cpu-clock` (software clock, every 100 µs of CPU):\n\n",
    );
    let _ = write!(s, "| group |");
    for (label, _, _) in &cost.profiles {
        let _ = write!(s, " {label}: µs per connection |");
    }
    s.push('\n');
    s.push_str("|---");
    s.push_str(&"|---:".repeat(cost.profiles.len()));
    s.push_str("|\n");
    let mut groups: Vec<&str> = Vec::new();
    for (_, _, shares) in &cost.profiles {
        for (g, _) in shares {
            if !groups.contains(g) {
                groups.push(g);
            }
        }
    }
    for g in groups.iter().copied().chain(["total"]) {
        let _ = write!(s, "| {g} |");
        for (_, connections, shares) in &cost.profiles {
            let us: f64 = shares.iter().filter(|(n, _)| g == "total" || *n == g).map(|(_, us)| us).sum();
            // + 0.0: an empty f64 sum is -0.0.
            let _ = write!(s, " {:.1} |", us / connections.max(1.0) + 0.0);
        }
        s.push('\n');
    }
}

/// Horizontal bar chart of the median p50 latencies with min–max whiskers, into
/// `docs/benchmarks-datapath.svg` (and `.png` through librsvg); the file to link, if written.
pub fn write_chart(samples: &Samples) -> Option<&'static str> {
    let chart = crate::cni_runner::workspace_root().join("docs/benchmarks-datapath.svg");
    std::fs::write(&chart, svg_chart(samples)).ok()?;
    let png = chart.with_extension("png");
    let converted = std::process::Command::new("rsvg-convert")
        .args(["--format", "png", "--background-color", "white", "--output"])
        .arg(&png)
        .arg(&chart)
        .output()
        .is_ok_and(|o| o.status.success());
    Some(if converted { "benchmarks-datapath.png" } else { "benchmarks-datapath.svg" })
}

fn svg_chart(samples: &Samples) -> String {
    let (label_w, bar_w, row_h) = (380.0, 420.0, 22.0);
    let rows: Vec<(String, Variant, (f64, f64, f64))> = samples
        .iter()
        .filter(|((_, _, _, q), v)| *q == Quantity::LatencyUs && !v.is_empty())
        .map(|((load, t, v, _), s)| (format!("{} / {} / {}", load.label(), t.label(), v.label()), *v, spread(s)))
        .collect();
    let max = rows.iter().map(|r| r.2 .2).fold(1.0, f64::max);
    let height = row_h * rows.len() as f64 + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"4\" y=\"16\" font-weight=\"bold\">TCP ping-pong latency (us, p50; IPv6: mean; lower is better): median, min-max over rounds</text>\n",
        w = label_w + bar_w + 80.0
    );
    for (i, (label, variant, (median, lo, hi))) in rows.iter().enumerate() {
        let y = 28.0 + row_h * i as f64;
        let len = bar_w * median / max;
        let color = match variant {
            Variant::Direct => "#888888",
            Variant::FastPath => "#2a9d8f",
            Variant::KernelPath => "#e76f51",
            Variant::Ptp => "#f4a261",
        };
        let label = label.replace('<', "&lt;").replace('>', "&gt;");
        let (x0, x1, wy) = (label_w + bar_w * lo / max, label_w + bar_w * hi / max, y + (row_h - 6.0) / 2.0);
        let _ = writeln!(
            s,
            "<text x=\"4\" y=\"{ty}\">{label}</text><rect x=\"{label_w}\" y=\"{y}\" width=\"{len:.1}\" height=\"{bh}\" fill=\"{color}\"/>\
             <line x1=\"{x0:.1}\" y1=\"{wy}\" x2=\"{x1:.1}\" y2=\"{wy}\" stroke=\"black\"/><text x=\"{tx:.1}\" y=\"{ty}\">{median:.1}</text>",
            ty = y + 14.0,
            bh = row_h - 6.0,
            tx = x1.max(label_w + len) + 4.0,
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_met_only_when_every_round_is_on_its_side() {
        assert_eq!(verdict(1.02, &[1.01, 1.03, 1.04], Target::AtMost(1.05)), "met");
        assert_eq!(verdict(1.02, &[1.01, 1.03, 1.07], Target::AtMost(1.05)), "unclear (spread crosses)");
        assert_eq!(verdict(1.10, &[1.01, 1.10, 1.20], Target::AtMost(1.05)), "**not met**");
        assert_eq!(verdict(2.1, &[2.0, 2.2], Target::AtLeast(2.0)), "met");
        assert_eq!(spread(&[3.0, 1.0, 2.0, 10.0]), (2.5, 1.0, 10.0));
    }

    #[test]
    fn ratios_pair_the_rounds_and_divide_the_medians() {
        let mut s = Samples::new();
        s.insert((Load::Idle, Topology::PodToPod, Variant::FastPath, Quantity::LatencyUs), vec![10.0, 12.0, 11.0]);
        s.insert((Load::Idle, Topology::PodToPod, Variant::Direct, Quantity::LatencyUs), vec![10.0, 10.0, 11.0]);
        let (r, per_round) = ratio(&s, Load::Idle, Topology::PodToPod, Variant::FastPath, Variant::Direct, Quantity::LatencyUs).unwrap();
        assert_eq!(r, 1.1);
        assert_eq!(per_round, vec![1.0, 1.2, 1.0]);
        assert_eq!(ratio_cell(Some((r, per_round)), Some(Target::AtMost(1.05))), "1.100 (1.000–1.200) **not met**");
    }

    #[test]
    fn chart_has_one_bar_and_whisker_per_case_scaled_to_the_slowest() {
        let mut s = Samples::new();
        s.insert((Load::Idle, Topology::PodToPod, Variant::Direct, Quantity::LatencyUs), vec![8.0, 8.0]);
        s.insert((Load::KubeProxy, Topology::UplinkToPod, Variant::KernelPath, Quantity::LatencyUs), vec![32.0, 40.0, 36.0]);
        s.insert((Load::Idle, Topology::PodToPod, Variant::Direct, Quantity::Gbps1), vec![8.0]);
        let svg = svg_chart(&s);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert_eq!(svg.matches("<line").count(), 2);
        assert!(svg.contains("kube-proxy / uplink&lt;-&gt;pod / veth-route fastPath off"));
        assert!(svg.contains("width=\"378.0\""), "the median bar scales to the slowest maximum: {svg}");
        assert!(svg.contains("width=\"84.0\""), "bars scale linearly");
    }
}
