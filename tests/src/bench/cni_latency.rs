//! ADD and DEL latency of veth-route (kernel path and fast path) beside Debian's reference
//! `ptp`, all with the same `host-local` IPAM on the same simulated VM, runs interleaved so
//! that drift on the machine hits every plugin alike.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{ms, percentile, Section};
use crate::cni_runner::{self, REFERENCE_PLUGINS};
use crate::vm::Vm;

const PTP: &str = "ptp (Debian reference)";

struct Candidate {
    label: String,
    bin: PathBuf,
    conf: Value,
    /// Environment of the plugin's runs beside `PATH` and the CNI variables.
    env: Vec<(&'static str, &'static str)>,
    add: Vec<Duration>,
    del: Vec<Duration>,
}

/// Measure `runs` ADD+DEL cycles per plugin.
pub fn run(runs: usize) -> Section {
    let vm = Vm::new();
    let veth_route = cni_runner::plugin_binary().to_path_buf();
    let with = |build: &str, fast_path: &str| {
        let mut c = vm.network("1.0.0");
        c["fastPath"] = json!(fast_path);
        c["logLevel"] = json!("warn");
        // A pin directory per build and mode, as on separate nodes: a node running with the
        // fast path off has no maps for its DELs to clean.
        c["bpfPinDir"] = json!(vm.pin_dir.join(format!("{build}-{fast_path}")));
        c
    };
    let mut candidates = vec![
        Candidate {
            label: "veth-route (fastPath off)".into(),
            bin: veth_route.clone(),
            conf: with("this", "off"),
            env: vec![],
            add: vec![],
            del: vec![],
        },
        Candidate {
            label: "veth-route (fastPath auto, eBPF)".into(),
            bin: veth_route.clone(),
            conf: with("this", "auto"),
            env: vec![],
            add: vec![],
            del: vec![],
        },
        Candidate {
            label: PTP.into(),
            bin: Path::new(REFERENCE_PLUGINS).join("ptp"),
            conf: json!({"cniVersion": "1.0.0", "name": "cni0", "type": "ptp", "ipam": vm.host_local()}),
            env: vec![],
            add: vec![],
            del: vec![],
        },
    ];
    // Pod veths with TCX links, as builds before netlink pod attachments made them: what
    // the choice saves, in the same run.
    if crate::kernel::kernel_at_least(6, 6) {
        candidates.push(Candidate {
            label: "veth-route (fastPath auto, eBPF, pod veths TCX)".into(),
            bin: veth_route,
            conf: {
                let mut c = with("this", "auto");
                c["bpfPinDir"] = json!(vm.pin_dir.join("this-auto-tcx"));
                c
            },
            env: vec![("VETH_ROUTE_TC_ATTACH", "tcx")],
            add: vec![],
            del: vec![],
        });
    }
    // VETH_ROUTE_BENCH_BASELINE=<an older veth-route binary>: its rows beside this build's,
    // interleaved in the same run, so a change's effect is measured side by side.
    if let Some(base) = std::env::var_os("VETH_ROUTE_BENCH_BASELINE") {
        for mode in ["off", "auto"] {
            let label = format!("baseline {} (fastPath {mode})", Path::new(&base).display());
            candidates.push(Candidate {
                label,
                bin: PathBuf::from(&base),
                conf: with("baseline", mode),
                env: vec![],
                add: vec![],
                del: vec![],
            });
        }
    }
    // One warm-up cycle each: first-use costs (program load and pinning, gateway device)
    // are real but belong to the node, not to every pod.
    for round in 0..=runs {
        for c in &mut candidates {
            let pod = vm.pod();
            let att = pod.attachment();
            let (add, out) = timed(&vm, c, "ADD", &att, &c.conf);
            assert_eq!(out.0, 0, "{} ADD failed: {}", c.label, out.1);
            let mut del_conf = c.conf.clone();
            del_conf["prevResult"] = serde_json::from_str(&out.1).expect("ADD result is JSON");
            let (del, out) = timed(&vm, c, "DEL", &att, &del_conf);
            assert_eq!(out.0, 0, "{} DEL failed (exit {}): {} CONF {}", c.label, out.0, out.1, del_conf);
            if round > 0 {
                c.add.push(add);
                c.del.push(del);
            }
        }
    }
    let ptp = candidates.iter().find(|c| c.label == PTP).expect("ptp row");
    let (ptp_add, ptp_del) = (percentile(&ptp.add, 50), percentile(&ptp.del, 50));
    let mut body = format!(
        "{runs} ADD+DEL cycles per plugin, interleaved, host-local IPAM, plugin binaries exec'd in the VM namespace \
         as a runtime would (process start included).\n\n\
         | plugin | ADD p50 ms | ADD p90 ms | DEL p50 ms | DEL p90 ms | ADD p50 / ptp | DEL p50 / ptp |\n|---|---|---|---|---|---|---|\n"
    );
    for c in &candidates {
        let (a50, d50) = (percentile(&c.add, 50), percentile(&c.del, 50));
        body.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} |\n",
            c.label,
            ms(a50),
            ms(percentile(&c.add, 90)),
            ms(d50),
            ms(percentile(&c.del, 90)),
            a50.as_secs_f64() / ptp_add.as_secs_f64(),
            d50.as_secs_f64() / ptp_del.as_secs_f64(),
        ));
    }
    body.push_str("\nTarget: veth-route ADD and DEL p50 no slower than ptp's (ratio <= 1.00), with the fast path too.\n");
    body.push_str(
        "Why pod veths get cls_bpf filters, not TCX links (an RCU grace period per TCX attach on ADD, one more per hook \
         inside the veth's deletion on DEL), and per-stage timings: docs/fastpath.md, \"Costs\"; `logLevel: debug` logs \
         each ADD's and DEL's stages.\n",
    );
    Section { title: "CNI ADD/DEL latency: veth-route vs reference ptp".into(), body }
}

/// Run one plugin command with the clock around the process only (no `nsenter` in between:
/// the child is forked from a thread that joined the VM namespace).
fn timed(vm: &Vm, c: &Candidate, command: &str, att: &cni_runner::Attachment, conf: &Value) -> (Duration, (i32, String)) {
    let stdin = conf.to_string();
    vm.ns.run(|| {
        let mut cmd = Command::new(&c.bin);
        cmd.env_clear()
            .envs(c.env.iter().copied())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", cni_runner::cni_path())
            .env("CNI_CONTAINERID", &att.container_id)
            .env("CNI_IFNAME", &att.ifname)
            .env("CNI_NETNS", att.netns.as_ref().expect("pod netns exists"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().expect("spawn plugin");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write config");
        let out = child.wait_with_output().expect("wait for plugin");
        let took = start.elapsed();
        (
            took,
            (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))),
        )
    })
}
