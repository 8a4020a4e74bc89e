//! Datapath benchmark (issue 11): for a direct veth pair (the limit), veth-route with the
//! eBPF fast path, veth-route `fastPath: off` and Debian's reference `ptp`, measure TCP
//! ping-pong latency and transaction rate (sockperf; qperf over IPv6), connection rate (`crr`), and TCP
//! throughput with 1 and 4 streams (iperf3); pod<->pod on one VM and uplink->pod (the
//! client in the router namespace), over IPv4 and, on the idle VM, over IPv6 (the pods are
//! dual-stack); on an idle VM and on one loaded like a kube-proxy node in iptables mode
//! (`kube_proxy`). Every VM runs `pods` pods (100 by default: the
//! endpoint map and routing table at a node's size), of which two are measured.
//!
//! Method: clients on CPU 0, servers on CPU 1, for every datapath. Each measurement runs
//! `rounds` times; within a round the datapaths take turns per measurement, in an order
//! rotated each round, so drift of a shared machine spreads over all of them. Rows give
//! the median and the min-max over rounds; ratios are ratios of medians, with the spread
//! of the per-round ratios (`datapath_report`). After the rounds, `diagnose` measures
//! where the time goes on the loaded VMs (program run time, counters, a CPU profile).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::crr;
use super::datapath_report as report;
use super::kube_proxy;
use super::profile;
use super::tools::{self, CLIENT_CPU, SERVER_CPU};
use crate::bench::Section;
use crate::cni_runner::REFERENCE_PLUGINS;
use crate::fastpath_support::{forget_conntrack, Pod, Router, Vm};
use crate::netns::{NetNs, TempDir};

/// The datapaths compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    Direct,
    FastPath,
    KernelPath,
    Ptp,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::Direct, Variant::FastPath, Variant::KernelPath, Variant::Ptp];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Direct => "direct veth pair (limit)",
            Variant::FastPath => "veth-route fast path",
            Variant::KernelPath => "veth-route fastPath off",
            Variant::Ptp => "Debian ptp",
        }
    }
}

/// Who talks to the measured pod, and over which IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Topology {
    PodToPod,
    UplinkToPod,
    PodToPod6,
    UplinkToPod6,
}

impl Topology {
    pub const ALL: [Topology; 4] = [Topology::PodToPod, Topology::UplinkToPod, Topology::PodToPod6, Topology::UplinkToPod6];

    pub fn label(self) -> &'static str {
        match self {
            Topology::PodToPod => "pod<->pod, one VM",
            Topology::UplinkToPod => "uplink<->pod",
            Topology::PodToPod6 => "pod<->pod, one VM, IPv6",
            Topology::UplinkToPod6 => "uplink<->pod, IPv6",
        }
    }

    pub fn ipv6(self) -> bool {
        matches!(self, Topology::PodToPod6 | Topology::UplinkToPod6)
    }

    fn client_is_the_router(self) -> bool {
        matches!(self, Topology::UplinkToPod | Topology::UplinkToPod6)
    }

    /// Whether this traffic is measured under `load`: IPv6 on the idle VM only, since the
    /// kube-proxy rules loaded here are IPv4 iptables, which IPv6 never passes.
    pub fn measured_under(self, load: Load) -> bool {
        !self.ipv6() || load == Load::Idle
    }
}

/// What the VM carries besides the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Load {
    Idle,
    KubeProxy,
}

impl Load {
    pub fn label(self) -> &'static str {
        match self {
            Load::Idle => "idle",
            Load::KubeProxy => "kube-proxy",
        }
    }
}

/// A measured quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Quantity {
    /// Half a round trip, microseconds: sockperf's p50 (IPv6: qperf's mean).
    LatencyUs,
    /// Ping-pong round trips per second.
    Tps,
    /// `crr` connections (transactions) per second.
    ConnRate,
    /// iperf3, one stream, Gbit/s.
    Gbps1,
    /// iperf3, four streams, Gbit/s.
    Gbps4,
}

/// One run of a tool, which yields one or two quantities.
#[derive(Debug, Clone, Copy)]
enum Measurement {
    PingPong,
    Crr,
    Stream1,
    Stream4,
}

const MEASUREMENTS: [Measurement; 4] = [Measurement::PingPong, Measurement::Crr, Measurement::Stream1, Measurement::Stream4];

/// Which case a sample belongs to.
pub type Key = (Load, Topology, Variant, Quantity);
/// Per case, one sample per round, in round order.
pub type Samples = BTreeMap<Key, Vec<f64>>;

/// How much to measure.
pub struct Config {
    /// Seconds per tool run.
    pub seconds: u32,
    /// Runs of every case.
    pub rounds: usize,
    /// Pods on each VM (at least the two measured).
    pub pods: usize,
    /// kube-proxy Services (3 endpoints each) on the loaded VM.
    pub services: usize,
}

/// Client, server and the address the client connects to.
struct Ends<'a> {
    client: &'a NetNs,
    server: &'a NetNs,
    ip: IpAddr,
    /// The VM in between, if any (its conntrack is flushed before a connection-rate run).
    vm: Option<&'a Vm>,
}

/// Measure every case; also writes the chart `docs/benchmarks-datapath.svg` (and `.png`)
/// that the section links to.
pub fn run(cfg: &Config) -> Section {
    let started = std::time::Instant::now();
    let (da, db) = (NetNs::new("da"), NetNs::new("db"));
    da.ip(&format!("link add eth0 type veth peer name eth0 netns {}", db.name()));
    da.ip("addr add 10.10.9.2/24 dev eth0");
    db.ip("addr add 10.10.9.3/24 dev eth0");
    da.ip("addr add fd00:10:9::2/64 dev eth0 nodad");
    db.ip("addr add fd00:10:9::3/64 dev eth0 nodad");
    da.ip("link set eth0 up");
    db.ip("link set eth0 up");
    let direct = |topology: Topology| {
        let ip = if topology.ipv6() {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0x9, 0, 0, 0, 0, 3))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 10, 9, 3))
        };
        Ends { client: &da, server: &db, ip, vm: None }
    };

    let router = Router::new();
    let vms: Vec<(Variant, Vm)> = [Variant::FastPath, Variant::KernelPath, Variant::Ptp]
        .into_iter()
        .zip(1u8..)
        .map(|(v, index)| (v, vm_for(v, &router, index)))
        .collect();
    let pods: Vec<Vec<Pod>> = vms
        .iter()
        .map(|(v, vm)| {
            eprintln!("bench datapath: {} pods for {}", cfg.pods.max(2), v.label());
            (0..cfg.pods.max(2)).map(|_| vm.add_pod()).collect()
        })
        .collect();
    let ends = |variant: Variant, topology: Topology| -> Ends {
        if variant == Variant::Direct {
            return direct(topology);
        }
        let i = vms.iter().position(|(v, _)| *v == variant).expect("a VM per variant");
        let (client, server) = (&pods[i][0], &pods[i][1]);
        let client = if topology.client_is_the_router() { &router.ns } else { &client.ns };
        let ip = if topology.ipv6() { IpAddr::V6(server.ip6.expect("dual-stack pods")) } else { IpAddr::V4(server.ip) };
        Ends { client, server: &server.ns, ip, vm: Some(&vms[i].1) }
    };

    let scratch = TempDir::new("bench");
    let mut samples = Samples::new();
    for load in [Load::Idle, Load::KubeProxy] {
        if load == Load::KubeProxy {
            let rules = kube_proxy::Rules::synthetic(cfg.services, 3);
            for (v, vm) in &vms {
                eprintln!("bench datapath: kube-proxy rules ({} Services) on the {} VM", cfg.services, v.label());
                rules.apply(&vm.ns, scratch.path());
            }
        }
        for round in 0..cfg.rounds {
            for topology in Topology::ALL.into_iter().filter(|t| t.measured_under(load)) {
                for m in MEASUREMENTS {
                    for k in 0..Variant::ALL.len() {
                        let variant = Variant::ALL[(k + round) % Variant::ALL.len()];
                        for (q, value) in measure(m, &ends(variant, topology), cfg.seconds) {
                            eprintln!(
                                "bench datapath: round {}/{} {} {} {} {q:?} = {value:.2}",
                                round + 1,
                                cfg.rounds,
                                load.label(),
                                topology.label(),
                                variant.label()
                            );
                            samples.entry((load, topology, variant, q)).or_default().push(value);
                        }
                    }
                }
            }
        }
    }
    let cost = diagnose(&ends, scratch.path(), cfg.seconds);
    let mut body = report::render(&samples, cfg, &cost);
    body.push_str(&format!("\nThis section took {} s.\n", started.elapsed().as_secs()));
    if let Some(file) = report::write_chart(&samples) {
        body.push_str(&format!("\n![p50 latency per datapath]({file})\n"));
    }
    Section { title: "Datapath: latency, transaction and connection rate, throughput".into(), body }
}

/// A dual-stack VM with `variant`'s plugin: veth-route with the fast path (`auto`) or
/// without, or ptp.
fn vm_for(variant: Variant, router: &Router, index: u8) -> Vm {
    let mut vm = Vm::new(router, index, if variant == Variant::FastPath { "auto" } else { "off" });
    if variant == Variant::Ptp {
        vm.conf = json!({"cniVersion": "1.0.0", "name": "bench", "type": "ptp", "ipam": vm.host_local()});
        vm.conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        vm.bin = Path::new(REFERENCE_PLUGINS).join("ptp");
    }
    vm.add_ipv6(router);
    vm
}

fn measure(m: Measurement, e: &Ends, seconds: u32) -> Vec<(Quantity, f64)> {
    match m {
        Measurement::PingPong => {
            let pp = tools::ping_pong(e.client, e.server, e.ip, seconds);
            vec![(Quantity::LatencyUs, pp.latency_us), (Quantity::Tps, pp.tps)]
        }
        Measurement::Crr => {
            // Every datapath starts from an empty conntrack table (where the VM has one).
            if let Some(vm) = e.vm.filter(|vm| vm.ns.sh("iptables-save", &[]).contains("conntrack")) {
                forget_conntrack(&vm.ns);
            }
            let server = crr::Server::start(e.server, e.ip, 8080, SERVER_CPU);
            let out = crr::client(e.client, SocketAddr::new(e.ip, 8080), CLIENT_CPU, crr::Limit::Time(Duration::from_secs(seconds.into())));
            server.finish();
            vec![(Quantity::ConnRate, out.rate())]
        }
        Measurement::Stream1 => vec![(Quantity::Gbps1, tools::iperf3(e.client, e.server, e.ip, seconds, 1))],
        Measurement::Stream4 => vec![(Quantity::Gbps4, tools::iperf3(e.client, e.server, e.ip, seconds, 4))],
    }
}

/// Where the time goes, on the kube-proxy-loaded VMs after the rounds, pod<->pod: the fast
/// path's own cost, a CPU profile of a connection-rate run per datapath, and the connection
/// rate when the SYN skips KUBE-SERVICES. One run each: causes, not the table's numbers.
fn diagnose<'a>(ends: &dyn Fn(Variant, Topology) -> Ends<'a>, scratch: &Path, seconds: u32) -> report::Cost {
    let fast = ends(Variant::FastPath, Topology::PodToPod);
    let mut cost = fast_path_cost(fast.vm.expect("a VM"), &fast, seconds).unwrap_or_default();
    for v in [Variant::KernelPath, Variant::FastPath] {
        let e = ends(v, Topology::PodToPod);
        let mut connections = 0.0;
        let shares = profile::record(scratch, "crr", || connections = measure(Measurement::Crr, &e, seconds)[0].1 * seconds as f64);
        if let Some(shares) = shares {
            cost.profiles.push((v.label(), connections, shares));
        }
    }
    for v in [Variant::KernelPath, Variant::FastPath] {
        let e = ends(v, Topology::PodToPod);
        let vm = e.vm.expect("a VM");
        let loaded = measure(Measurement::Crr, &e, seconds)[0].1;
        vm.iptables(&["-t", "nat", "-I", "PREROUTING", "1", "-d", "10.10.0.0/16", "-j", "RETURN"]);
        let skipping = measure(Measurement::Crr, &e, seconds)[0].1;
        vm.iptables(&["-t", "nat", "-D", "PREROUTING", "1"]);
        cost.early_return.push((v.label(), loaded, skipping));
    }
    cost
}

/// Where the fast path's time goes, measured after the rounds on the kube-proxy-loaded
/// fast-path VM: the programs' own run time (kernel BPF statistics) and counters during a
/// ping-pong and a connection-rate run.
fn fast_path_cost(vm: &Vm, e: &Ends, seconds: u32) -> Option<report::Cost> {
    let stats = super::bpf_stats::Enabled::new().map_err(|err| eprintln!("bench datapath: no BPF run-time statistics: {err}")).ok()?;
    let mut cost = report::Cost::default();
    for (name, m) in [("ping-pong", Measurement::PingPong), ("connection rate", Measurement::Crr)] {
        let before = (stats.programs(&vm.pins()), vm.stats());
        let result = measure(m, e, seconds);
        let after = (stats.programs(&vm.pins()), vm.stats());
        cost.runs.push(report::CostRun {
            name,
            // The connection-rate client runs for the whole `seconds`; sockperf's warm-up is
            // outside its count but inside the programs' statistics.
            transactions: matches!(m, Measurement::Crr).then(|| result[0].1 * seconds as f64),
            programs: super::bpf_stats::delta(&before.0, &after.0),
            counters: super::bpf_stats::counter_delta(&before.1, &after.1),
        });
    }
    Some(cost)
}
