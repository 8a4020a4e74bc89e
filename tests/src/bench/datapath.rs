//! Datapath benchmark (issue 3): sockperf TCP ping-pong and iperf3 throughput, side by side
//! in one run, for a direct veth pair (the limit), veth-route with the eBPF fast path,
//! veth-route `fastPath: off` and Debian's reference `ptp`; pod<->pod on one VM and
//! remote->pod through the VM's uplink; on an idle VM and on a VM with 1000 FORWARD rules
//! plus conntrack. Namespaces come from `fastpath_support`, so they are unique and removed.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bench::Section;
use crate::cni_runner::REFERENCE_PLUGINS;
use crate::fastpath_support::{Router, Vm};
use crate::netns::{run_ok, NetNs, TempDir};

/// The datapaths compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Direct,
    FastPath,
    KernelPath,
    Ptp,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Direct => "direct veth pair (limit)",
            Variant::FastPath => "veth-route fast path",
            Variant::KernelPath => "veth-route fastPath off",
            Variant::Ptp => "Debian ptp",
        }
    }
}

/// Who talks to the measured pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    PodToPod,
    RemoteToPod,
}

impl Topology {
    fn label(self) -> &'static str {
        match self {
            Topology::PodToPod => "pod<->pod, one VM",
            Topology::RemoteToPod => "remote->pod via uplink",
        }
    }
}

struct Row {
    loaded: bool,
    topology: Topology,
    variant: Variant,
    /// sockperf's p50 (half the round trip), microseconds.
    latency_us: f64,
    gbps: f64,
}

impl Row {
    /// Transactions per second: one per median round trip.
    fn tps(&self) -> f64 {
        1e6 / (2.0 * self.latency_us)
    }
}

/// Measure every combination for `seconds` per tool run; also writes the chart
/// `docs/benchmarks-datapath.svg` that the section links to.
pub fn run(seconds: u32) -> Section {
    let mut rows = Vec::new();
    rows.push(measure_direct(seconds));
    for loaded in [false, true] {
        for topology in [Topology::PodToPod, Topology::RemoteToPod] {
            for variant in [Variant::FastPath, Variant::KernelPath, Variant::Ptp] {
                rows.push(measure(variant, topology, loaded, seconds));
            }
        }
    }
    let mut body = render(&rows, seconds);
    let chart = crate::cni_runner::workspace_root().join("docs/benchmarks-datapath.svg");
    if std::fs::write(&chart, svg_chart(&rows)).is_ok() {
        // The PNG is rendered from the SVG by librsvg (installed by `cargo xtask setup`).
        let png = chart.with_extension("png");
        let converted = std::process::Command::new("rsvg-convert")
            .args(["--format", "png", "--background-color", "white", "--output"])
            .arg(&png)
            .arg(&chart)
            .output()
            .is_ok_and(|o| o.status.success());
        let file = if converted { "benchmarks-datapath.png" } else { "benchmarks-datapath.svg" };
        body.push_str(&format!("\n![p50 latency per datapath]({file})\n"));
    }
    Section { title: "Datapath: latency and throughput".into(), body }
}

/// Horizontal bar chart of the p50 latencies (SVG: text labels without an image library).
fn svg_chart(rows: &[Row]) -> String {
    let (label_w, bar_w, row_h) = (360.0, 420.0, 22.0);
    let max = rows.iter().map(|r| r.latency_us).fold(1.0, f64::max);
    let height = row_h * rows.len() as f64 + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"4\" y=\"16\" font-weight=\"bold\">TCP ping-pong p50 latency (us, lower is better)</text>\n",
        w = label_w + bar_w + 80.0
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 28.0 + row_h * i as f64;
        let len = bar_w * r.latency_us / max;
        let color = match r.variant {
            Variant::Direct => "#888888",
            Variant::FastPath => "#2a9d8f",
            Variant::KernelPath => "#e76f51",
            Variant::Ptp => "#f4a261",
        };
        let host = if r.loaded { "loaded" } else { "idle" };
        let traffic = if r.variant == Variant::Direct { "direct" } else { r.topology.label() };
        let traffic = traffic.replace('<', "&lt;").replace('>', "&gt;");
        let _ = writeln!(
            s,
            "<text x=\"4\" y=\"{ty}\">{host} / {traffic} / {}</text><rect x=\"{label_w}\" y=\"{y}\" width=\"{len:.1}\" height=\"{bh}\" fill=\"{color}\"/><text x=\"{tx:.1}\" y=\"{ty}\">{:.1}</text>",
            r.variant.label(),
            r.latency_us,
            ty = y + 14.0,
            bh = row_h - 6.0,
            tx = label_w + len + 4.0,
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Two namespaces joined by one veth pair: nothing in between.
fn measure_direct(seconds: u32) -> Row {
    let (a, b) = (NetNs::new("da"), NetNs::new("db"));
    a.ip(&format!("link add eth0 type veth peer name eth0 netns {}", b.name()));
    a.ip("addr add 10.10.9.2/24 dev eth0");
    b.ip("addr add 10.10.9.3/24 dev eth0");
    a.ip("link set eth0 up");
    b.ip("link set eth0 up");
    let ip = Ipv4Addr::new(10, 10, 9, 3);
    let latency_us = sockperf(&a, &b, ip, seconds);
    let gbps = iperf3(&a, &b, ip, seconds);
    Row { loaded: false, topology: Topology::PodToPod, variant: Variant::Direct, latency_us, gbps }
}

fn measure(variant: Variant, topology: Topology, loaded: bool, seconds: u32) -> Row {
    eprintln!("bench datapath: {} / {} / {}", if loaded { "loaded" } else { "idle" }, topology.label(), variant.label());
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, if variant == Variant::FastPath { "auto" } else { "off" });
    if variant == Variant::Ptp {
        vm.conf = json!({"cniVersion": "1.0.0", "name": "bench", "type": "ptp", "ipam": vm.host_local()});
        vm.conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        vm.bin = Path::new(REFERENCE_PLUGINS).join("ptp");
    }
    let scratch = TempDir::new("bench");
    if loaded {
        load_forward_rules(&vm, scratch.path());
    }
    let client = vm.add_pod();
    let server = vm.add_pod();
    let client_ns = match topology {
        Topology::PodToPod => &client.ns,
        Topology::RemoteToPod => &router.ns,
    };
    let latency_us = sockperf(client_ns, &server.ns, server.ip, seconds);
    let gbps = iperf3(client_ns, &server.ns, server.ip, seconds);
    Row { loaded, topology, variant, latency_us, gbps }
}

/// 1000 non-matching FORWARD rules, then a conntrack state match: every forwarded packet
/// walks the list and is tracked.
fn load_forward_rules(vm: &Vm, scratch: &Path) {
    let mut rules = String::from("*filter\n:FORWARD ACCEPT [0:0]\n");
    for i in 0..1000u32 {
        let _ = writeln!(rules, "-A FORWARD -s 10.250.{}.{}/32 -p tcp --dport 9 -j DROP", i / 250, i % 250 + 1);
    }
    rules.push_str("-A FORWARD -m conntrack --ctstate NEW,RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n");
    let file = scratch.join("rules");
    std::fs::write(&file, rules).expect("write rules");
    run_ok(vm.ns.command("iptables-restore").arg(&file));
}

/// A server process in a namespace, killed on drop; `start` returns once it listens.
struct Server(Child);

impl Server {
    fn start(ns: &NetNs, port: u16, args: &[&str]) -> Server {
        let child = ns.command(args[0]).args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start server");
        let server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while run_ok(ns.command("ss").args(["-Hltn", &format!("sport = :{port}")])).trim().is_empty() {
            assert!(Instant::now() < deadline, "{} never listened on {port}", args[0]);
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// sockperf TCP ping-pong p50 (half the round trip, as sockperf reports), microseconds.
fn sockperf(client: &NetNs, server: &NetNs, ip: Ipv4Addr, seconds: u32) -> f64 {
    let ip = ip.to_string();
    let _srv = Server::start(server, 11111, &["sockperf", "sr", "--tcp", "-i", &ip, "-p", "11111"]);
    let out =
        client.command("sockperf").args(["pp", "--tcp", "-i", &ip, "-p", "11111", "-t", &seconds.to_string()]).output().expect("sockperf");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find(|l| l.contains("percentile 50.000"))
        .and_then(|l| l.rsplit('=').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no p50 in sockperf output: {text}"))
}

/// iperf3 TCP throughput (one stream, receiver side), Gbit/s.
fn iperf3(client: &NetNs, server: &NetNs, ip: Ipv4Addr, seconds: u32) -> f64 {
    let ip = ip.to_string();
    let _srv = Server::start(server, 5201, &["iperf3", "-s", "-1", "-B", &ip, "-p", "5201"]);
    let out = run_ok(client.command("iperf3").args(["-c", &ip, "-p", "5201", "-t", &seconds.to_string(), "-J"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    v["end"]["sum_received"]["bits_per_second"].as_f64().expect("bits_per_second") / 1e9
}

fn render(rows: &[Row], seconds: u32) -> String {
    let mut s = format!(
        "sockperf TCP ping-pong ({seconds} s; p50 latency as sockperf reports it, i.e. half the round trip; \
         transactions/s = 1 / median round trip) and iperf3 TCP throughput ({seconds} s, one stream). \
         \"loaded\": the VM has 1000 non-matching FORWARD rules and a conntrack state match. \
         remote->pod: the client is the vrouter namespace; both directions cross the VM.\n\n\
         | host | traffic | datapath | latency p50 (us) | transactions/s | Gbit/s |\n|---|---|---|---:|---:|---:|\n"
    );
    for r in rows {
        let traffic = if r.variant == Variant::Direct { "direct" } else { r.topology.label() };
        let host = if r.loaded { "loaded" } else { "idle" };
        let _ = writeln!(s, "| {host} | {traffic} | {} | {:.2} | {:.0} | {:.2} |", r.variant.label(), r.latency_us, r.tps(), r.gbps);
    }
    let direct = rows.iter().find(|r| r.variant == Variant::Direct);
    let find = |loaded: bool, t: Topology, v: Variant| rows.iter().find(|r| r.loaded == loaded && r.topology == t && r.variant == v);
    s.push_str(
        "\nTargets: fast path within 5% of the direct pair; on the loaded host at least 1.5x the kernel path's transaction rate.\n\n\
         | host | traffic | latency fast/direct | Gbit/s fast/direct | tps fast/kernel path |\n|---|---|---:|---:|---:|\n",
    );
    for loaded in [false, true] {
        for t in [Topology::PodToPod, Topology::RemoteToPod] {
            if let (Some(d), Some(f), Some(k)) = (direct, find(loaded, t, Variant::FastPath), find(loaded, t, Variant::KernelPath)) {
                let host = if loaded { "loaded" } else { "idle" };
                let _ = writeln!(
                    s,
                    "| {host} | {} | {:.3} | {:.3} | {:.2} |",
                    t.label(),
                    f.latency_us / d.latency_us,
                    f.gbps / d.gbps,
                    f.tps() / k.tps()
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_one_labelled_bar_per_row_scaled_to_the_slowest() {
        let rows = [
            Row { loaded: false, topology: Topology::PodToPod, variant: Variant::Direct, latency_us: 8.0, gbps: 10.0 },
            Row { loaded: true, topology: Topology::RemoteToPod, variant: Variant::KernelPath, latency_us: 32.0, gbps: 5.0 },
        ];
        let svg = svg_chart(&rows);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("loaded / remote-&gt;pod via uplink / veth-route fastPath off"));
        assert!(svg.contains("width=\"420.0\""), "the slowest bar spans the full width");
        assert!(svg.contains("width=\"105.0\""), "bars scale linearly");
    }
}
