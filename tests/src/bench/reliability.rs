//! Reliability and scaling of tcnp-ipam for `cargo xtask bench`: ADD/DEL over 3 nodes while
//! `FaultProxy` (a FAKE relay in front of the real Neutron) loses or withholds the answer
//! to 20% of writes, then GC; counts addresses lost, addresses on ports without a pod,
//! duplicates. And ADD latency against the number of addresses already on the port.
//! Numbers are measured, never asserted.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bench::{ms, percentile, Section};
use crate::cni_runner::{self, Attachment};
use crate::netns::{unique, TempDir};
use crate::openstack::{block_on, ipam_binary, Fault, FaultProxy, Stack, StackOptions, StackVm};

type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// Runs both parts; `ops` ADD+DEL operations in all for the fault part.
pub fn run(ops: usize) -> Section {
    let title = "IPAM reliability and scaling: tcnp-ipam under lost answers, ADD cost against port size".to_string();
    match measure(ops) {
        Ok(body) => Section { title, body },
        Err(e) => Section { title, body: format!("not measured: {e}\n") },
    }
}

struct Node<'a> {
    vm: StackVm<'a>,
    proxy: FaultProxy,
    data: TempDir,
}

impl Node<'_> {
    fn conf(&self, stack: &Stack, network_id: &str, extra: &Value, timeout_seconds: u64) -> Value {
        let mut ipam = stack.ipam_config(network_id);
        ipam["dataDir"] = json!(self.data.path());
        ipam["logFile"] = json!(self.data.path().join("tcnp-ipam.log"));
        ipam["openstackConf"]["neutronUrl"] = json!(self.proxy.url());
        ipam["openstackConf"]["timeoutSeconds"] = json!(timeout_seconds);
        if let (Some(o), Value::Object(e)) = (ipam.as_object_mut(), extra.clone()) {
            o.extend(e);
        }
        json!({ "cniVersion": "1.1.0", "name": "rel", "type": "veth-route", "ipam": ipam })
    }

    fn run(&self, command: &str, cid: &str, conf: &Value) -> cni_runner::Outcome {
        let att = Attachment { container_id: cid.to_string(), netns: Some(self.vm.ns.path().to_path_buf()), ifname: "eth0".into() };
        let att = (!cid.is_empty()).then_some(att);
        cni_runner::exec(ipam_binary(), &self.vm.ns, command, att.as_ref(), &[], conf.to_string().as_bytes())
    }

    /// Neutron requests of each ADD, from the plugin's own `api calls for ADD:` log lines.
    fn add_requests(&self) -> Vec<u64> {
        let log = std::fs::read_to_string(self.data.path().join("tcnp-ipam.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains("api calls for ADD:")).map(|l| count_after(l, "neutron_requests=")).collect()
    }
}

fn count_after(line: &str, key: &str) -> u64 {
    line.split(key).nth(1).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn address(out: &cni_runner::Outcome) -> Option<IpAddr> {
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    v["ips"][0]["address"].as_str()?.split('/').next()?.parse().ok()
}

/// What one node's churn did.
#[derive(Default)]
struct Churn {
    failures: Vec<String>,
    del_retries: usize,
    adds: Vec<Duration>,
    live: Vec<(String, IpAddr)>,
}

/// ADDs and DELs like a runtime: a failed ADD is followed by a DEL of that container (the
/// runtime cleans up a sandbox whose setup failed) and its error kept; a failed DEL is
/// retried. Each node keeps up to 6 pods and alternates.
fn churn(node: &Node, conf: &Value, ops: usize) -> Churn {
    let mut c = Churn::default();
    for i in 0..ops {
        if c.live.len() < 6 && (i % 3 != 2 || c.live.is_empty()) {
            let cid = unique("r");
            let t = Instant::now();
            let out = node.run("ADD", &cid, conf);
            c.adds.push(t.elapsed());
            match address(&out).filter(|_| out.exit == 0) {
                Some(ip) => c.live.push((cid, ip)),
                None => {
                    let err: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
                    c.failures.push(format!("code {}: {}", err["code"], err["msg"].as_str().unwrap_or(&out.stdout)));
                    while node.run("DEL", &cid, conf).exit != 0 {
                        c.del_retries += 1;
                    }
                }
            }
        } else {
            let (cid, _) = c.live.remove(i % c.live.len());
            while node.run("DEL", &cid, conf).exit != 0 {
                c.del_retries += 1;
            }
        }
    }
    c
}

/// The figures of one churn over 3 nodes, counted after a GC with the remaining pods.
#[derive(Debug, Default)]
pub struct Figures {
    /// ADD/DEL operations in all.
    pub operations: usize,
    /// ADDs among them.
    pub adds: usize,
    /// Writes whose answer the proxy lost, and all writes.
    pub faulted: u64,
    /// All writes the proxies saw.
    pub writes: u64,
    /// The failed ADDs' errors (code and message).
    pub failures: Vec<String>,
    /// DELs that failed and were repeated.
    pub del_retries: usize,
    /// Live pods' addresses missing from their port.
    pub lost: usize,
    /// Addresses on a port that are neither a pod's nor a recorded spare.
    pub orphans: usize,
    /// Spares recorded after GC (the pool's, on purpose).
    pub spares: usize,
    /// Addresses held by two live pods.
    pub duplicates: usize,
    /// Neutron requests per ADD (the plugin's own counts).
    pub requests_per_add: f64,
    /// ADD p50.
    pub add_p50: Duration,
    /// Wall time of the churn.
    pub elapsed: Duration,
}

/// `ops` ADD/DEL operations over 3 VM nodes of `stack`, each reaching Neutron through a
/// `FaultProxy` (a FAKE relay) that gives one of `kinds` to 20% of writes (seeded), with
/// `extra` merged into the `ipam` section and the client's timeout `timeout_seconds` (what a
/// `Fault::Withhold` costs); then a GC per node with its remaining pods.
pub fn faulted_churn(stack: &Stack, extra: &Value, ops: usize, kinds: &[Fault], timeout_seconds: u64) -> Result<Figures, BenchError> {
    let env = stack.env().clone();
    let nodes: Vec<Node> = (0..3)
        .map(|i| -> Result<Node, BenchError> {
            let vm = StackVm::new(stack, &env.network_id)?;
            let proxy = FaultProxy::start(&vm.ns, &env.neutron_url)?;
            proxy.fail_writes_at_random(200, kinds, 0x5eed + i);
            Ok(Node { vm, proxy, data: TempDir::new("brel") })
        })
        .collect::<Result<_, _>>()?;
    let confs: Vec<Value> = nodes.iter().map(|n| n.conf(stack, &env.network_id, extra, timeout_seconds)).collect();
    let per_node = ops / 3;
    let t = Instant::now();
    let results: Vec<Churn> = std::thread::scope(|s| {
        let hs: Vec<_> = nodes.iter().zip(&confs).map(|(n, c)| s.spawn(move || churn(n, c, per_node))).collect();
        hs.into_iter().map(|h| h.join().expect("churn thread")).collect()
    });
    let mut f = Figures { operations: per_node * 3, elapsed: t.elapsed(), ..Figures::default() };
    // GC with the pods that remain, as the runtime does.
    let mut live_ips = Vec::new();
    for ((node, conf), churn) in nodes.iter().zip(&confs).zip(&results) {
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] =
            json!(churn.live.iter().map(|(c, _)| json!({ "containerID": c, "ifname": "eth0" })).collect::<Vec<_>>());
        let mut tries = 0;
        while node.run("GC", "", &gc).exit != 0 && tries < 5 {
            tries += 1;
        }
        let port = block_on(stack.neutron().get_port(&node.vm.port.id))?;
        let on_port: HashSet<IpAddr> = port.fixed_ips.iter().map(|f| f.ip_address).filter(|ip| *ip != node.vm.primary).collect();
        let pods: HashSet<IpAddr> = churn.live.iter().map(|(_, ip)| *ip).collect();
        f.lost += pods.difference(&on_port).count();
        let state: Value =
            std::fs::read(node.data.path().join("rel/state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let spare_ips: HashSet<IpAddr> =
            state["spares"].as_array().into_iter().flatten().filter_map(|l| l["ip"].as_str()?.parse().ok()).collect();
        f.spares += spare_ips.len();
        f.orphans += on_port.iter().filter(|ip| !pods.contains(ip) && !spare_ips.contains(ip)).count();
        live_ips.extend(churn.live.iter().map(|(_, ip)| *ip));
    }
    let distinct: HashSet<IpAddr> = live_ips.iter().copied().collect();
    f.duplicates = live_ips.len() - distinct.len();
    f.faulted = nodes.iter().map(|n| n.proxy.faulted()).sum();
    f.writes = nodes.iter().map(|n| n.proxy.counts.writes.load(std::sync::atomic::Ordering::Relaxed)).sum();
    let requests: Vec<u64> = nodes.iter().flat_map(Node::add_requests).collect();
    f.requests_per_add = requests.iter().sum::<u64>() as f64 / requests.len().max(1) as f64;
    f.failures = results.iter().flat_map(|r| r.failures.iter().cloned()).collect();
    f.del_retries = results.iter().map(|r| r.del_retries).sum();
    let adds: Vec<Duration> = results.iter().flat_map(|r| r.adds.iter().copied()).collect();
    f.adds = adds.len();
    f.add_p50 = percentile(&adds, 50);
    Ok(f)
}

/// The client's timeout in the fault part (what a withheld answer costs): short, but long
/// enough that a loaded 2-core machine does not time out Neutron's ordinary answers.
const WITHHELD_TIMEOUT: u64 = 5;

/// The configurations compared: the defaults a user gets, and the plain mode.
const CONFIGS: [(&str, &str); 2] = [("defaults (pool max 2)", "{}"), ("plain (`pool: {max: 0}`)", r#"{ "pool": { "max": 0 } }"#)];

fn measure(ops: usize) -> Result<String, BenchError> {
    let stack = Stack::start(StackOptions::default())?;
    let mut out = String::new();
    let mut causes = String::new();
    let kinds = [Fault::DropResponse, Fault::GatewayTimeout, Fault::ResetAfterSend, Fault::Withhold];
    for (label, extra) in CONFIGS {
        let f = faulted_churn(&stack, &serde_json::from_str(extra)?, ops, &kinds, WITHHELD_TIMEOUT)?;
        let row = format!(
            "| {label} | {} | {} | {} of {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.0} s |",
            f.operations,
            f.adds,
            f.faulted,
            f.writes,
            f.failures.len(),
            f.del_retries,
            f.lost,
            f.orphans,
            f.spares,
            f.duplicates,
            f.requests_per_add,
            ms(f.add_p50),
            f.elapsed.as_secs_f64()
        );
        // A long run shows each row as it is done.
        eprintln!("reliability: {row}");
        let _ = writeln!(out, "{row}");
        for cause in f.failures.iter().collect::<std::collections::BTreeSet<_>>() {
            let _ = writeln!(causes, "- {label}: {cause}");
        }
    }
    if causes.is_empty() {
        causes = "No ADD failed.\n".into();
    } else {
        causes = format!("The failed ADDs' errors:\n\n{causes}");
    }
    let scaling = scaling(&stack)?;
    Ok(format!(
        "{ops} ADD/DEL operations per row over 3 VM nodes, each node's Neutron reached through `FaultProxy`, a fake \
         relay in front of the real Neutron that loses the answer to 20% of writes after forwarding them (drop, 504, reset, \
         or withheld past the client's {WITHHELD_TIMEOUT} s timeout; seeded). A failed ADD is cleaned up with DEL as a runtime does; a failed \
         DEL is retried. Then GC with the remaining pods. Lost = a live pod's address not on its port; without a pod = on the \
         port, neither a pod's nor a recorded spare; spares are the pool's, on purpose. Neutron requests per ADD are the \
         plugin's own counts (reads to settle lost answers included).\n\n\
         | config | operations | ADDs | writes faulted | ADDs failed | DEL retries | addresses lost | on ports without a pod after GC | spares after GC | duplicates | Neutron requests / ADD | ADD p50 ms | time |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n{out}\n{causes}\n{scaling}"
    ))
}

/// One configuration at one port size: ADD p50 ms, p90 ms, Neutron requests per ADD.
type Cell = (f64, f64, f64);

/// ADD latency and Neutron requests per ADD against the addresses already on the port.
fn scaling(stack: &Stack) -> Result<String, BenchError> {
    let name = unique("scale");
    let (net, subnet) = stack.create_network(&name, "10.61.0.0/22".parse()?, None)?;
    let mut table = String::from("| pods already on the port |");
    for (label, _) in &CONFIGS {
        let _ = write!(table, " {label}: ADD p50 ms | p90 ms | Neutron requests / ADD |");
    }
    table.push_str("\n|---|---|---|---|---|---|---|\n");
    let mut rows: Vec<(usize, Vec<Cell>)> = Vec::new();
    for pods in [1usize, 2, 50, 110, 250] {
        let vm = StackVm::new(stack, &net)?;
        // Stand-ins for the pods already there: addresses put on the port directly.
        let mut ips: Vec<openstack::FixedIpRequest> = vm.port.fixed_ips.iter().cloned().map(openstack::FixedIpRequest::Address).collect();
        ips.extend((0..pods).map(|_| openstack::FixedIpRequest::AnyIn { subnet_id: subnet.clone() }));
        block_on(stack.neutron().update_port_fixed_ips(&vm.port.id, &ips, json!({}), None))?;
        let mut cells = Vec::new();
        for (i, (_, extra)) in CONFIGS.iter().enumerate() {
            let data = TempDir::new("bscale");
            let mut ipam = stack.ipam_config(&net);
            ipam["dataDir"] = json!(data.path());
            ipam["logFile"] = json!(data.path().join("log"));
            if let (Some(o), Value::Object(e)) = (ipam.as_object_mut(), serde_json::from_str(extra)?) {
                o.extend(e);
            }
            let conf = json!({ "cniVersion": "1.0.0", "name": format!("s{i}"), "type": "veth-route", "ipam": ipam }).to_string();
            let mut samples = Vec::new();
            let mut atts = Vec::new();
            // Pods arriving one after another (a pool refills as it runs dry), then leaving.
            // One warm-up ADD (port lookup, marking, the pool's first fill) is not counted.
            for round in 0..13 {
                let att = Attachment { container_id: unique("s"), netns: Some(vm.ns.path().to_path_buf()), ifname: "eth0".into() };
                let t = Instant::now();
                let out = cni_runner::exec(ipam_binary(), &vm.ns, "ADD", Some(&att), &[], conf.as_bytes());
                let took = t.elapsed();
                if out.exit != 0 {
                    return Err(format!("ADD with {pods} pods failed: {}", out.stdout).into());
                }
                if round > 0 {
                    samples.push(took);
                }
                atts.push(att);
            }
            for att in &atts {
                cni_runner::exec(ipam_binary(), &vm.ns, "DEL", Some(att), &[], conf.as_bytes());
            }
            let log = std::fs::read_to_string(data.path().join("log")).unwrap_or_default();
            let requests: Vec<u64> =
                log.lines().filter(|l| l.contains("api calls for ADD:")).skip(1).map(|l| count_after(l, "neutron_requests=")).collect();
            let per_add = requests.iter().sum::<u64>() as f64 / requests.len().max(1) as f64;
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            cells.push((ms(percentile(&samples, 50)), ms(percentile(&samples, 90)), per_add));
        }
        eprintln!("reliability: {pods} pods on the port: {cells:?} (p50 ms, p90 ms, requests per ADD per config)");
        rows.push((pods, cells));
    }
    for (pods, cells) in &rows {
        let _ = write!(table, "| {pods} |");
        for (p50, p90, per_add) in cells {
            let _ = write!(table, " {p50:.1} | {p90:.1} | {per_add:.2} |");
        }
        table.push('\n');
    }
    let p50 = |pods: usize, i: usize| rows.iter().find(|(p, _)| *p == pods).map_or(f64::NAN, |(_, c)| c[i].0);
    let growth = |to: usize, i: usize| format!("{:.2}", p50(to, i) / p50(2, i));
    block_on(stack.neutron().delete_network(&net)).ok();
    Ok(format!(
        "ADD latency against the addresses already on the VM port (one node, no faults; the other addresses were put on \
         the port directly; 12 ADDs one after another after a warm-up ADD, then their DELs, so a pool runs dry and refills \
         as pods arrive). Target: at most 1.2x growth of the p50 from 2 to 110 pods with the defaults.\n\n\
         {table}\nGrowth of the p50 from 2 to 110 pods: defaults {}x, plain {}x; 2 -> 250: defaults {}x, plain {}x.\n\n\
         In the plain mode each ADD GETs and PUTs the whole fixed-IP list, and Neutron validates every entry of it, so the \
         write grows with the port; there is no cheaper fixed-IP write. tcnp-ipam's default pool (`max` 2, `min` 0) serves \
         two of three arriving pods and every pod replaced within the pool from spares, with one GET of the port (the \
         re-verification of the node's facts) and no write; the third ADD makes the PUT for itself and two new spares \
         (the p90). The cost: up to two unused addresses of the subnet, and their router routes, per node \
         (tcnp-ipam/README.md, \"Default pool\").\n",
        growth(110, 0),
        growth(110, 1),
        growth(250, 0),
        growth(250, 1)
    ))
}
