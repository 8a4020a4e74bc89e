//! IPAM benchmark section for `cargo xtask bench`: tcnp-ipam on the local OpenStack beside
//! the reference `host-local`, in the same VM namespace and run. Reports ADD/DEL latency
//! (p50/p90) and the OpenStack calls per ADD, counted by the plugin's own client (its
//! `api calls for ADD: ...` log line). Numbers are measured, never asserted.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bench::{ms, percentile, Section};
use crate::cni_runner::{self, Attachment, REFERENCE_PLUGINS};
use crate::netns::{unique, TempDir};
use crate::openstack::{ipam_binary, Stack, StackOptions, StackVm};

struct Mode {
    name: &'static str,
    bin: std::path::PathBuf,
    ipam: Value,
}

#[derive(Default)]
struct Calls {
    auths: u64,
    requests: u64,
    writes: u64,
    adds: u64,
}

/// Sums the plugin's per-ADD call counts from its log.
fn calls_from_log(log: &Path) -> Calls {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut c = Calls::default();
    for line in text.lines().filter(|l| l.contains("api calls for ADD:")) {
        let num = |key: &str| -> u64 {
            line.split(key).nth(1).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        c.auths += num("keystone_auths=");
        c.requests += num("neutron_requests=");
        c.writes += num("neutron_writes=");
        c.adds += 1;
    }
    c
}

/// Runs `runs` ADDs then `runs` DELs per IPAM configuration and returns the report.
pub fn run(runs: usize) -> Section {
    match measure(runs) {
        Ok(body) => Section { title: "IPAM: tcnp-ipam on Neutron beside host-local".into(), body },
        Err(e) => Section { title: "IPAM: tcnp-ipam on Neutron beside host-local".into(), body: format!("not measured: {e}\n") },
    }
}

fn measure(runs: usize) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let stack = Stack::start(StackOptions::default())?;
    let env = stack.env().clone();
    let vm = StackVm::new(&stack, &env.network_id)?;
    let ns = &vm.ns;
    let data = TempDir::new("bipam");

    let tcnp = |name: &str, extra: Value| {
        let mut ipam = stack.ipam_config(&env.network_id);
        ipam["dataDir"] = json!(data.path().join(name));
        ipam["logFile"] = json!(data.path().join(format!("{name}.log")));
        if let (Some(o), Value::Object(e)) = (ipam.as_object_mut(), extra) {
            o.extend(e);
        }
        ipam
    };
    let modes = [
        Mode {
            name: "host-local (reference, no cloud)",
            bin: Path::new(REFERENCE_PLUGINS).join("host-local"),
            ipam: json!({ "type": "host-local", "dataDir": data.path().join("host-local"),
                          "ranges": [[{ "subnet": "10.99.0.0/16" }]] }),
        },
        Mode { name: "tcnp-ipam", bin: ipam_binary().to_path_buf(), ipam: tcnp("plain", json!({})) },
        Mode {
            name: "tcnp-ipam, pool min 4 max 16",
            bin: ipam_binary().to_path_buf(),
            ipam: tcnp("pool", json!({ "pool": { "min": 4, "max": 16 } })),
        },
        Mode {
            name: "tcnp-ipam, nodeBlocks /28",
            bin: ipam_binary().to_path_buf(),
            ipam: tcnp("blocks", json!({ "nodeBlocks": { "prefixLength": 28 } })),
        },
    ];

    let mut table = String::from(
        "| IPAM | ADD p50 ms | ADD p90 ms | DEL p50 ms | Neutron writes / ADD | Neutron requests / ADD | Keystone auths (whole run) |\n|---|---|---|---|---|---|---|\n",
    );
    for (i, mode) in modes.iter().enumerate() {
        let conf = json!({ "cniVersion": "1.0.0", "name": format!("bench{i}"), "type": "veth-route", "ipam": mode.ipam });
        let stdin = conf.to_string();
        let atts: Vec<Attachment> = (0..runs)
            .map(|_| Attachment { container_id: unique("b"), netns: Some(ns.path().to_path_buf()), ifname: "eth0".into() })
            .collect();
        let mut add = Vec::with_capacity(runs);
        for a in &atts {
            let t = Instant::now();
            let out = cni_runner::exec(&mode.bin, ns, "ADD", Some(a), &[], stdin.as_bytes());
            add.push(t.elapsed());
            if out.exit != 0 {
                return Err(format!("{}: ADD failed: {}{}", mode.name, out.stdout, out.stderr).into());
            }
        }
        let mut del: Vec<Duration> = Vec::with_capacity(runs);
        for a in &atts {
            let t = Instant::now();
            let out = cni_runner::exec(&mode.bin, ns, "DEL", Some(a), &[], stdin.as_bytes());
            del.push(t.elapsed());
            if out.exit != 0 {
                return Err(format!("{}: DEL failed: {}{}", mode.name, out.stdout, out.stderr).into());
            }
        }
        let calls = mode.ipam["logFile"].as_str().map(|p| calls_from_log(Path::new(p)));
        let per = |n: u64, c: &Calls| format!("{:.2}", n as f64 / c.adds.max(1) as f64);
        let (w, r, k) = match &calls {
            Some(c) if c.adds > 0 => (per(c.writes, c), per(c.requests, c), c.auths.to_string()),
            _ => ("0".into(), "0".into(), "0".into()),
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {w} | {r} | {k} |",
            mode.name,
            ms(percentile(&add, 50)),
            ms(percentile(&add, 90)),
            ms(percentile(&del, 50))
        );
    }
    Ok(format!(
        "{runs} sequential ADDs then {runs} DELs per row, one VM namespace, Keystone + Neutron on loopback \
         (uwsgi, SQLite, one Neutron worker: absolute latencies are those of this tiny cloud, the call counts \
         are what matters). Calls are counted by the plugin's client and include the one-time port lookup and \
         marking; the pool refills in batches and the blocks are claimed 16 addresses per write.\n\n{table}"
    ))
}
