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
    fn conf(&self, stack: &Stack, network_id: &str, extra: &Value) -> Value {
        let mut ipam = stack.ipam_config(network_id);
        ipam["dataDir"] = json!(self.data.path());
        ipam["logFile"] = json!(self.data.path().join("tcnp-ipam.log"));
        ipam["openstackConf"]["neutronUrl"] = json!(self.proxy.url());
        ipam["openstackConf"]["timeoutSeconds"] = json!(3);
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
}

fn address(out: &cni_runner::Outcome) -> Option<IpAddr> {
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    v["ips"][0]["address"].as_str()?.split('/').next()?.parse().ok()
}

/// ADDs and DELs like a runtime: a failed ADD is followed by a DEL of that container (the
/// runtime cleans up a sandbox whose setup failed) and counted; a failed DEL is retried.
/// Each node keeps up to 6 pods and alternates.
fn churn(node: &Node, conf: &Value, ops: usize, live: &mut Vec<(String, IpAddr)>) -> (usize, usize, Vec<Duration>) {
    let (mut add_failures, mut del_retries, mut adds) = (0, 0, Vec::new());
    for i in 0..ops {
        if live.len() < 6 && (i % 3 != 2 || live.is_empty()) {
            let cid = unique("r");
            let t = Instant::now();
            let out = node.run("ADD", &cid, conf);
            adds.push(t.elapsed());
            match address(&out).filter(|_| out.exit == 0) {
                Some(ip) => live.push((cid, ip)),
                None => {
                    add_failures += 1;
                    while node.run("DEL", &cid, conf).exit != 0 {
                        del_retries += 1;
                    }
                }
            }
        } else {
            let (cid, _) = live.remove(i % live.len());
            while node.run("DEL", &cid, conf).exit != 0 {
                del_retries += 1;
            }
        }
    }
    (add_failures, del_retries, adds)
}

fn measure(ops: usize) -> Result<String, BenchError> {
    let stack = Stack::start(StackOptions::default())?;
    let env = stack.env().clone();
    let mut out = String::new();
    let kinds = [Fault::DropResponse, Fault::GatewayTimeout, Fault::ResetAfterSend, Fault::Withhold];
    for (label, extra) in [("defaults (no pool)", json!({})), ("pool min 2 max 8", json!({ "pool": { "min": 2, "max": 8 } }))] {
        let nodes: Vec<Node> = (0..3)
            .map(|i| -> Result<Node, BenchError> {
                let vm = StackVm::new(&stack, &env.network_id)?;
                let proxy = FaultProxy::start(&vm.ns, &env.neutron_url)?;
                proxy.fail_writes_at_random(200, &kinds, 0x5eed + i);
                Ok(Node { vm, proxy, data: TempDir::new("brel") })
            })
            .collect::<Result<_, _>>()?;
        let confs: Vec<Value> = nodes.iter().map(|n| n.conf(&stack, &env.network_id, &extra)).collect();
        let per_node = ops / 3;
        let t = Instant::now();
        let results: Vec<(usize, usize, Vec<Duration>, Vec<(String, IpAddr)>)> = std::thread::scope(|s| {
            let hs: Vec<_> = nodes
                .iter()
                .zip(&confs)
                .map(|(n, c)| {
                    s.spawn(move || {
                        let mut live = Vec::new();
                        let (f, r, a) = churn(n, c, per_node, &mut live);
                        (f, r, a, live)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("churn thread")).collect()
        });
        let elapsed = t.elapsed();
        // GC with the pods that remain, as the runtime does.
        let (mut lost, mut orphans, mut spares, mut live_ips) = (0, 0, 0, Vec::new());
        for ((node, conf), (_, _, _, live)) in nodes.iter().zip(&confs).zip(&results) {
            let mut gc = conf.clone();
            gc["cni.dev/valid-attachments"] =
                json!(live.iter().map(|(c, _)| json!({ "containerID": c, "ifname": "eth0" })).collect::<Vec<_>>());
            let mut tries = 0;
            while node.run("GC", "", &gc).exit != 0 && tries < 5 {
                tries += 1;
            }
            let port = block_on(stack.neutron().get_port(&node.vm.port.id))?;
            let on_port: HashSet<IpAddr> = port.fixed_ips.iter().map(|f| f.ip_address).filter(|ip| *ip != node.vm.primary).collect();
            let pods: HashSet<IpAddr> = live.iter().map(|(_, ip)| *ip).collect();
            lost += pods.difference(&on_port).count();
            let state: Value = std::fs::read(node.data.path().join("rel/state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let spare_ips: HashSet<IpAddr> =
                state["spares"].as_array().into_iter().flatten().filter_map(|l| l["ip"].as_str()?.parse().ok()).collect();
            spares += spare_ips.len();
            orphans += on_port.iter().filter(|ip| !pods.contains(ip) && !spare_ips.contains(ip)).count();
            live_ips.extend(pods);
        }
        let distinct: HashSet<IpAddr> = live_ips.iter().copied().collect();
        let duplicates = live_ips.len() - distinct.len();
        let faulted: u64 = nodes.iter().map(|n| n.proxy.faulted()).sum();
        let writes: u64 = nodes.iter().map(|n| n.proxy.counts.writes.load(std::sync::atomic::Ordering::Relaxed)).sum();
        let failures: usize = results.iter().map(|r| r.0).sum();
        let retries: usize = results.iter().map(|r| r.1).sum();
        let adds: Vec<Duration> = results.iter().flat_map(|r| r.2.iter().copied()).collect();
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {faulted} of {writes} | {failures} | {retries} | {lost} | {orphans} | {spares} | {duplicates} | {} | {:.0} s |",
            per_node * 3,
            adds.len(),
            ms(percentile(&adds, 50)),
            elapsed.as_secs_f64()
        );
    }
    let scaling = scaling(&stack)?;
    Ok(format!(
        "{ops} ADD/DEL operations per row over 3 VM nodes (the issue asks for 1000; scaled down because this 2-core machine is \
         shared and each withheld answer costs the client's 3 s timeout), each node's Neutron reached through `FaultProxy`, a fake \
         relay in front of the real Neutron that loses the answer to 20% of writes after forwarding them (drop, 504, reset, \
         or withheld past the timeout; seeded). A failed ADD is cleaned up with DEL as a runtime does; a failed DEL is retried. \
         Then GC with the remaining pods. Lost = a live pod's address not on its port; without a pod = on the port, neither a \
         pod's nor a recorded spare; spares are the pool's, on purpose.\n\n\
         | config | operations | ADDs | writes faulted | ADDs failed (code 11) | DEL retries | addresses lost | on ports without a pod after GC | spares after GC | duplicates | ADD p50 ms | time |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n{out}\n{scaling}"
    ))
}

/// ADD latency and Neutron requests per ADD against the addresses already on the port.
fn scaling(stack: &Stack) -> Result<String, BenchError> {
    let name = unique("scale");
    let (net, subnet) = stack.create_network(&name, "10.61.0.0/22".parse()?, None)?;
    let mut table = String::from(
        "| pods already on the port | defaults (no pool): ADD p50 ms | Neutron requests / ADD | pool min 2 max 8: ADD p50 ms | Neutron requests / ADD |\n|---|---|---|---|---|\n",
    );
    let mut base: Option<(f64, f64)> = None;
    let mut rows = Vec::new();
    for pods in [1usize, 2, 50, 110, 250] {
        let vm = StackVm::new(stack, &net)?;
        // Stand-ins for the pods already there: addresses put on the port directly.
        let mut ips: Vec<openstack::FixedIpRequest> = vm.port.fixed_ips.iter().cloned().map(openstack::FixedIpRequest::Address).collect();
        ips.extend((0..pods).map(|_| openstack::FixedIpRequest::AnyIn { subnet_id: subnet.clone() }));
        block_on(stack.neutron().update_port_fixed_ips(&vm.port.id, &ips, json!({}), None))?;
        let mut cells = Vec::new();
        for (i, extra) in [json!({}), json!({ "pool": { "min": 2, "max": 8 } })].iter().enumerate() {
            let data = TempDir::new("bscale");
            let mut ipam = stack.ipam_config(&net);
            ipam["dataDir"] = json!(data.path());
            ipam["logFile"] = json!(data.path().join("log"));
            if let (Some(o), Value::Object(e)) = (ipam.as_object_mut(), extra.clone()) {
                o.extend(e);
            }
            let conf = json!({ "cniVersion": "1.0.0", "name": format!("s{i}"), "type": "veth-route", "ipam": ipam }).to_string();
            let mut samples = Vec::new();
            let mut requests = 0u64;
            // One warm-up ADD (port lookup, marking, the pool's first fill) is not counted.
            for round in 0..11 {
                let att = Attachment { container_id: unique("s"), netns: Some(vm.ns.path().to_path_buf()), ifname: "eth0".into() };
                let t = Instant::now();
                let out = cni_runner::exec(ipam_binary(), &vm.ns, "ADD", Some(&att), &[], conf.as_bytes());
                let took = t.elapsed();
                if out.exit != 0 {
                    return Err(format!("ADD with {pods} pods failed: {}", out.stdout).into());
                }
                let log = std::fs::read_to_string(data.path().join("log")).unwrap_or_default();
                let last = log.lines().filter(|l| l.contains("api calls for ADD:")).last().unwrap_or_default().to_string();
                if round > 0 {
                    samples.push(took);
                    requests += last
                        .split("neutron_requests=")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                }
                cni_runner::exec(ipam_binary(), &vm.ns, "DEL", Some(&att), &[], conf.as_bytes());
            }
            cells.push((percentile(&samples, 50).as_secs_f64() * 1e3, requests as f64 / samples.len() as f64));
        }
        if pods == 2 {
            base = Some((cells[0].0, cells[1].0));
        }
        rows.push((pods, cells));
    }
    for (pods, cells) in &rows {
        let _ = writeln!(table, "| {pods} | {:.1} | {:.2} | {:.1} | {:.2} |", cells[0].0, cells[0].1, cells[1].0, cells[1].1);
    }
    let ratio = |pods: usize, i: usize| -> String {
        let (b0, b1) = base.unwrap_or((1.0, 1.0));
        let b = if i == 0 { b0 } else { b1 };
        rows.iter().find(|(p, _)| *p == pods).map(|(_, c)| format!("{:.2}", c[i].0 / b)).unwrap_or_default()
    };
    block_on(stack.neutron().delete_network(&net)).ok();
    Ok(format!(
        "ADD latency against the addresses already on the VM port (10 ADD+DEL cycles each after a warm-up, one node, no faults; \
         the other addresses were put on the port directly). Target: at most 1.2x growth from 2 to 110 pods with the defaults.\n\n\
         {table}\nGrowth 2 -> 110 pods: defaults {}x, pool {}x; 2 -> 250: defaults {}x, pool {}x.\n\n\
         Defaults: in the plain mode each ADD GETs and PUTs the whole fixed-IP list, and Neutron's cost of a port update \
         grows with it; a pool makes one GET of the port per ADD and a PUT every few ADDs. There is no cheaper Neutron \
         write (a fixed-IP update always replaces the whole list). The default nevertheless stays plain and `pool` is the \
         recommended setting for nodes with many pods: a default pool would hold up to `max` unused addresses of the \
         subnet on every node (50 nodes x 8 = 400, more than a /24), exhausting small tenant subnets unasked. \
         `nodeBlocks` scales like the pool and also cuts router routes.\n",
        ratio(110, 0),
        ratio(110, 1),
        ratio(250, 0),
        ratio(250, 1)
    ))
}
