//! Datapath benchmark (issue 3): sockperf TCP ping-pong and iperf3 throughput between
//! namespaces, side by side in one run, for a direct veth pair (the limit), veth-route with
//! the eBPF fast path, veth-route `fastPath: off` and Debian's reference `ptp`; pod<->pod on
//! one VM and remote->pod through the VM's uplink; on an idle VM and on a VM with 1000
//! FORWARD rules plus conntrack. Writes a markdown report (table + ratios), stamped with
//! kernel and CPU.
//!
//! Speed is measured here, never asserted in tests. Everything runs in namespaces this
//! module creates (names `vrb<pid>...`) and removes on drop.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::process::{workspace_root, Result};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Seconds per sockperf and per iperf3 run.
    pub seconds: u32,
    /// The veth-route plugin binary (release build recommended).
    pub plugin: PathBuf,
    /// Report destination (e.g. docs/benchmarks.md).
    pub out: PathBuf,
}

impl Default for BenchOptions {
    fn default() -> Self {
        let root = workspace_root();
        let release = root.join("target/release/veth-route");
        let plugin = if release.is_file() { release } else { root.join("target/debug/veth-route") };
        Self { seconds: 5, plugin, out: root.join("docs/benchmarks.md") }
    }
}

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

/// Traffic direction.
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

/// One measured row.
#[derive(Debug, Clone)]
struct Row {
    loaded: bool,
    topology: Topology,
    variant: Variant,
    latency_p50_us: f64,
    tps: f64,
    gbps: f64,
}

/// Run the benchmark, write the report to `opts.out` and return it.
pub fn bench_datapath(opts: &BenchOptions) -> Result<String> {
    for tool in ["sockperf", "iperf3", "iptables-restore", "nsenter"] {
        if !Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status()?.success() {
            return Err(format!("{tool} not found: run `cargo xtask setup`").into());
        }
    }
    if !opts.plugin.is_file() {
        return Err(format!("{} missing: build it first (cargo build --release -p veth-route)", opts.plugin.display()).into());
    }
    let mut rows = Vec::new();
    for loaded in [false, true] {
        for topology in [Topology::PodToPod, Topology::RemoteToPod] {
            for variant in [Variant::Direct, Variant::FastPath, Variant::KernelPath, Variant::Ptp] {
                if variant == Variant::Direct && (loaded || topology == Topology::RemoteToPod) {
                    continue; // no host in between: one limit row serves all
                }
                eprintln!("bench: {} / {} / {}", if loaded { "loaded" } else { "idle" }, topology.label(), variant.label());
                let bed = Bed::new(variant, loaded, &opts.plugin)?;
                let (client, server, server_ip) = match topology {
                    Topology::PodToPod => (&bed.pods[0], &bed.pods[1], bed.pod_ips[1].clone()),
                    Topology::RemoteToPod => (&bed.router, &bed.pods[1], bed.pod_ips[1].clone()),
                };
                let (latency_p50_us, tps) = sockperf(client, server, &server_ip, opts.seconds)?;
                let gbps = iperf3(client, server, &server_ip, opts.seconds)?;
                rows.push(Row { loaded, topology, variant, latency_p50_us, tps, gbps });
            }
        }
    }
    let add = add_latency(&opts.plugin, 30)?;
    let report = render(&rows, &add, opts.seconds);
    if let Some(dir) = opts.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&opts.out, &report)?;
    eprintln!("bench: wrote {}", opts.out.display());
    Ok(report)
}

/// A namespace removed on drop.
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Result<Ns> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ns = Ns(format!("vrb{}{tag}{n}", std::process::id()));
        ok(Command::new("ip").args(["netns", "add", &ns.0]))?;
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path())).arg("--").arg(prog);
        c
    }

    fn ip(&self, args: &str) -> Result<Output> {
        ok(self.cmd("ip").args(args.split_whitespace()))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ok(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(out)
}

/// A router, a VM behind it and two pods wired by `variant` (or two bare namespaces).
struct Bed {
    pods: Vec<Ns>,
    pod_ips: Vec<String>,
    router: Ns,
    _vm: Option<Ns>,
    scratch: PathBuf,
}

impl Bed {
    fn new(variant: Variant, loaded: bool, plugin: &Path) -> Result<Bed> {
        let router = Ns::new("r")?;
        let scratch = std::env::temp_dir().join(format!("vrb-{}-{}", std::process::id(), router.0));
        std::fs::create_dir_all(&scratch)?;
        if variant == Variant::Direct {
            let (a, b) = (Ns::new("a")?, Ns::new("b")?);
            ok(Command::new("ip").args(["link", "add", "eth0", "netns", &a.0, "type", "veth", "peer", "name", "eth0", "netns", &b.0]))?;
            a.ip("addr add 10.10.1.2/24 dev eth0")?;
            b.ip("addr add 10.10.1.3/24 dev eth0")?;
            a.ip("link set eth0 up")?;
            b.ip("link set eth0 up")?;
            return Ok(Bed { pods: vec![a, b], pod_ips: vec!["10.10.1.2".into(), "10.10.1.3".into()], router, _vm: None, scratch });
        }
        let vm = Ns::new("v")?;
        ok(Command::new("ip").args(["link", "add", "up0", "netns", &vm.0, "type", "veth", "peer", "name", "qr0", "netns", &router.0]))?;
        vm.ip("addr add 192.168.1.2/24 dev up0")?;
        vm.ip("link set up0 up")?;
        router.ip("addr add 192.168.1.1/24 dev qr0")?;
        router.ip("link set qr0 up")?;
        router.ip("route add 10.10.1.0/24 via 192.168.1.2")?;
        vm.ip("route add default via 192.168.1.1")?;
        ok(vm.cmd("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
        if loaded {
            load_forward_rules(&vm, &scratch)?;
        }
        let conf = match variant {
            Variant::Ptp => format!(
                r#"{{"cniVersion":"1.0.0","name":"bench","type":"ptp","ipMasq":false,"ipam":{{"type":"host-local","dataDir":"{d}","ranges":[[{{"subnet":"10.10.1.0/24"}}]],"routes":[{{"dst":"0.0.0.0/0"}}]}}}}"#,
                d = scratch.join("ipam").display()
            ),
            _ => format!(
                r#"{{"cniVersion":"1.0.0","name":"bench","type":"veth-route","fastPath":"{fp}","bpfPinDir":"/sys/fs/bpf/{pin}","uplinks":["up0"],"ipam":{{"type":"host-local","dataDir":"{d}","ranges":[[{{"subnet":"10.10.1.0/24"}}]]}}}}"#,
                fp = if variant == Variant::FastPath { "auto" } else { "off" },
                pin = router.0,
                d = scratch.join("ipam").display()
            ),
        };
        let bin = if variant == Variant::Ptp { PathBuf::from("/usr/lib/cni/ptp") } else { plugin.to_path_buf() };
        let mut pods = Vec::new();
        let mut pod_ips = Vec::new();
        for i in 0..2 {
            let pod = Ns::new("p")?;
            let (out, _) = cni(&vm, &bin, "ADD", &format!("bench{i}"), &pod.path(), &conf)?;
            let v: String = String::from_utf8_lossy(&out.stdout).into_owned();
            let ip = v.split("\"address\"").nth(1).and_then(|s| s.split('"').nth(1)).and_then(|s| s.split('/').next()).ok_or("no address in result")?;
            pod_ips.push(ip.to_string());
            pods.push(pod);
        }
        Ok(Bed { pods, pod_ips, router, _vm: Some(vm), scratch })
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf").join(&self.router.0));
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// 1000 non-matching FORWARD rules, then a conntrack state match: every forwarded packet
/// walks the list and is tracked.
fn load_forward_rules(vm: &Ns, scratch: &Path) -> Result<()> {
    let mut rules = String::from("*filter\n:FORWARD ACCEPT [0:0]\n");
    for i in 0..1000u32 {
        let _ = writeln!(rules, "-A FORWARD -s 10.250.{}.{}/32 -p tcp --dport 9 -j DROP", i / 250, i % 250 + 1);
    }
    rules.push_str("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED,NEW -j ACCEPT\nCOMMIT\n");
    let file = scratch.join("rules");
    std::fs::write(&file, rules)?;
    ok(vm.cmd("iptables-restore").arg(&file))?;
    Ok(())
}

/// Run a CNI plugin; returns its output and wall time.
fn cni(vm: &Ns, bin: &Path, command: &str, id: &str, netns: &str, conf: &str) -> Result<(Output, Duration)> {
    use std::io::Write;
    let start = Instant::now();
    let mut child = vm
        .cmd(bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().ok_or("stdin")?.write_all(conf.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!("{} {command} failed: {}{}", bin.display(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok((out, took))
}

/// A server process in `ns`, killed on drop, started once `port` listens.
struct Server(Child);

impl Server {
    fn start(ns: &Ns, port: u16, cmd: &[&str]) -> Result<Server> {
        let child = ns.cmd(cmd[0]).args(&cmd[1..]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = ns.cmd("ss").args(["-Hltn", &format!("sport = :{port}")]).output()?;
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not start listening on {port}", cmd[0]).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// sockperf TCP ping-pong: (p50 latency in us as sockperf reports it — half the round trip —,
/// transactions/s derived from it). The observation count would give a rate too, but on a
/// small shared VM it swings with scheduling noise far more than the median does.
fn sockperf(client: &Ns, server: &Ns, ip: &str, seconds: u32) -> Result<(f64, f64)> {
    let _srv = Server::start(server, 11111, &["sockperf", "sr", "--tcp", "-i", ip, "-p", "11111"])?;
    let out = ok(client.cmd("sockperf").args(["pp", "--tcp", "-i", ip, "-p", "11111", "-t", &seconds.to_string()]))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let p50 = text
        .lines()
        .find(|l| l.contains("percentile 50.000"))
        .and_then(|l| l.rsplit('=').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no p50 in sockperf output: {text}"))?;
    Ok((p50, 1e6 / (2.0 * p50)))
}

/// iperf3 TCP throughput in Gbit/s (receiver side).
fn iperf3(client: &Ns, server: &Ns, ip: &str, seconds: u32) -> Result<f64> {
    let _srv = Server::start(server, 5201, &["iperf3", "-s", "-1", "-B", ip, "-p", "5201"])?;
    let out = ok(client.cmd("iperf3").args(["-c", ip, "-p", "5201", "-t", &seconds.to_string(), "-J"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "sum_received": { ..., "bits_per_second": N, ... }
    let bps = text
        .split("\"sum_received\"")
        .nth(1)
        .and_then(|s| s.split("\"bits_per_second\":").nth(1))
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or("no sum_received.bits_per_second in iperf3 output")?;
    Ok(bps / 1e9)
}

/// ADD latency p50/p90 in ms: (veth-route with the fast path, ptp), `runs` each.
fn add_latency(plugin: &Path, runs: usize) -> Result<[(f64, f64); 2]> {
    let mut result = [(0.0, 0.0); 2];
    for (slot, variant) in [Variant::FastPath, Variant::Ptp].into_iter().enumerate() {
        let bed = Bed::new(variant, false, plugin)?; // programs loaded once by its two pods
        let vm = bed._vm.as_ref().ok_or("bed without VM")?;
        let conf = match variant {
            Variant::Ptp => format!(r#"{{"cniVersion":"1.0.0","name":"bench","type":"ptp","ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.10.1.0/24"}}]]}}}}"#, bed.scratch.join("ipam").display()),
            _ => format!(r#"{{"cniVersion":"1.0.0","name":"bench","type":"veth-route","fastPath":"auto","bpfPinDir":"/sys/fs/bpf/{}","uplinks":["up0"],"ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.10.1.0/24"}}]]}}}}"#, bed.router.0, bed.scratch.join("ipam").display()),
        };
        let bin = if variant == Variant::Ptp { PathBuf::from("/usr/lib/cni/ptp") } else { plugin.to_path_buf() };
        let mut times = Vec::new();
        for i in 0..runs {
            let pod = Ns::new("l")?;
            let id = format!("lat{i}");
            let (_, took) = cni(vm, &bin, "ADD", &id, &pod.path(), &conf)?;
            times.push(took.as_secs_f64() * 1e3);
            cni(vm, &bin, "DEL", &id, &pod.path(), &conf)?;
        }
        times.sort_by(f64::total_cmp);
        result[slot] = (times[times.len() / 2], times[times.len() * 9 / 10]);
    }
    Ok(result)
}

fn render(rows: &[Row], add: &[(f64, f64); 2], seconds: u32) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(s, "# Datapath benchmark\n");
    let _ = writeln!(s, "Generated by `cargo xtask bench` on kernel {kernel}, {cpu} ({cores} CPUs); {seconds} s per run.");
    let _ = writeln!(s, "sockperf TCP ping-pong (p50 latency as sockperf reports it, i.e. half the round trip; transactions/s = 1 / median round trip) and iperf3 TCP throughput (one stream).");
    let _ = writeln!(s, "\"loaded\": the VM has 1000 non-matching FORWARD rules and a conntrack state match.\n");
    let _ = writeln!(s, "| host | traffic | datapath | latency p50 (us) | transactions/s | Gbit/s |");
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.0} | {:.2} |",
            if r.loaded { "loaded" } else { "idle" },
            if r.variant == Variant::Direct { "direct" } else { r.topology.label() },
            r.variant.label(),
            r.latency_p50_us,
            r.tps,
            r.gbps
        );
    }
    let direct = rows.iter().find(|r| r.variant == Variant::Direct);
    let find = |loaded: bool, topo: Topology, var: Variant| rows.iter().find(|r| r.loaded == loaded && r.topology == topo && r.variant == var);
    let _ = writeln!(s, "\n## Ratios\n");
    let _ = writeln!(s, "| host | traffic | fast path latency / direct | fast path Gbit/s / direct | fast path tps / kernel path tps |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|");
    for loaded in [false, true] {
        for topo in [Topology::PodToPod, Topology::RemoteToPod] {
            if let (Some(d), Some(f), Some(k)) = (direct, find(loaded, topo, Variant::FastPath), find(loaded, topo, Variant::KernelPath)) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.3} | {:.3} | {:.2} |",
                    if loaded { "loaded" } else { "idle" },
                    topo.label(),
                    f.latency_p50_us / d.latency_p50_us,
                    f.gbps / d.gbps,
                    f.tps / k.tps
                );
            }
        }
    }
    let _ = writeln!(s, "\n## ADD latency (30 runs each, same host-local IPAM)\n");
    let _ = writeln!(s, "| plugin | p50 (ms) | p90 (ms) |\n|---|---:|---:|");
    let _ = writeln!(s, "| veth-route, fast path (programs already pinned) | {:.1} | {:.1} |", add[0].0, add[0].1);
    let _ = writeln!(s, "| Debian ptp | {:.1} | {:.1} |", add[1].0, add[1].1);
    s
}
