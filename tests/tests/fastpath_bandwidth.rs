//! The `bandwidth` plugin (Debian's reference plugin) chained after veth-route, with the
//! eBPF fast path on. A redirect skips the host veth's qdiscs and classic filters, where
//! `bandwidth` shapes, so a pod the runtime asks to shape keeps the kernel path in both
//! directions; unshaped pods on the same VM keep the fast path.
//!
//! The rate is measured. Only an upper bound is asserted (a slow machine can only make the
//! transfer slower, never faster), so the check cannot flake on a loaded CI machine, yet it
//! fails when traffic bypasses the shaper (it then runs at Gbit/s).

use std::net::SocketAddrV4;
use std::time::Instant;

use serde_json::{json, Value};
use testbed::cni_runner::{Attachment, Chain};
use testbed::fastpath_support::{tcp_transfer, Router, Vm};
use testbed::netns::{unique, NetNs};

/// 8 Mbit/s each way, with a 64 KiB bucket (the bandwidth plugin takes bits).
const RATE_BITS: u64 = 8_000_000;
const BURST_BITS: u64 = 64 * 1024 * 8;
/// 2 MiB: about two seconds at the shaped rate.
const BYTES: usize = 2 << 20;

/// A pod added through the chain `veth-route -> bandwidth`; chain DEL on drop.
struct ShapedPod<'a> {
    chain: Chain<'a>,
    ns: NetNs,
    att: Attachment,
    result: Value,
}

impl<'a> ShapedPod<'a> {
    fn add(vm: &'a Vm) -> Self {
        let mut veth_route = vm.conf.clone();
        let obj = veth_route.as_object_mut().unwrap();
        obj.remove("cniVersion");
        obj.remove("name");
        obj.insert("capabilities".into(), json!({"bandwidth": true}));
        let list = json!({
            "cniVersion": "1.0.0",
            "name": vm.conf["name"],
            "plugins": [veth_route, {"type": "bandwidth", "capabilities": {"bandwidth": true}}],
        });
        let runtime = json!({"bandwidth": {
            "ingressRate": RATE_BITS, "ingressBurst": BURST_BITS, "egressRate": RATE_BITS, "egressBurst": BURST_BITS,
        }});
        let chain = Chain { vm: &vm.ns, list, runtime };
        let ns = NetNs::new("fb");
        let att = Attachment { container_id: format!("{}-bw", unique("f")), netns: Some(ns.path().to_path_buf()), ifname: "eth0".into() };
        let result = chain.add(&att).unwrap_or_else(|o| panic!("chain ADD failed: {} {}", o.stdout, o.stderr));
        Self { chain, ns, att, result }
    }

    fn ip(&self) -> std::net::Ipv4Addr {
        self.result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap()
    }
}

impl Drop for ShapedPod<'_> {
    fn drop(&mut self) {
        let _ = self.chain.del(&self.att, Some(&self.result));
    }
}

/// Bytes the tbf qdisc of `dev` has sent (`tc -s qdisc`), in VM namespace `vm`.
fn tbf_sent(vm: &NetNs, dev: &str) -> u64 {
    let out = vm.sh("tc", &["-s", "qdisc", "show", "dev", dev]);
    let tbf = out.split("qdisc ").find(|q| q.starts_with("tbf")).unwrap_or_else(|| panic!("no tbf on {dev}: {out}"));
    let sent = tbf.split("Sent ").nth(1).unwrap_or_else(|| panic!("no statistics: {out}"));
    sent.split_whitespace().next().unwrap().parse().unwrap()
}

/// Transfer and return the rate in bit/s.
fn rate_of(transfer: impl FnOnce() -> usize) -> f64 {
    let start = Instant::now();
    let n = transfer();
    assert_eq!(n, BYTES);
    (n as f64 * 8.0) / start.elapsed().as_secs_f64()
}

#[test]
fn bandwidth_shapes_both_directions_of_a_pod_while_other_pods_keep_the_fast_path() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let shaped = ShapedPod::add(&vm);
    let a = vm.add_pod();
    let b = vm.add_pod();
    let shaped_ip = shaped.ip();
    let host_veth = vm.host_veth_of(shaped_ip);

    // The shaped pod is not a redirect target, and has no programs of ours on its veth.
    let endpoints = vm.endpoint_ips();
    assert!(!endpoints.contains(&shaped_ip) && endpoints.contains(&a.ip), "{endpoints:?}");
    assert!(!vm.pod_link_pins().contains(&host_veth));
    Chain { vm: &vm.ns, list: shaped.chain.list.clone(), runtime: shaped.chain.runtime.clone() }
        .check(&shaped.att, &shaped.result)
        .unwrap_or_else(|o| panic!("chain CHECK failed: {} {}", o.stdout, o.stderr));

    // Into the shaped pod: the tbf on its host veth.
    let sent = tbf_sent(&vm.ns, &host_veth);
    let into = rate_of(|| tcp_transfer(&a.ns, &shaped.ns, 0, SocketAddrV4::new(shaped_ip, 7301), BYTES));
    assert!(into <= 1.5 * RATE_BITS as f64, "traffic into the shaped pod ran at {into:.0} bit/s, limit {RATE_BITS}");
    assert!(tbf_sent(&vm.ns, &host_veth) >= sent + BYTES as u64, "the payload must pass the host veth's tbf");

    // Out of the shaped pod: the bandwidth plugin's ifb.
    let out = rate_of(|| tcp_transfer(&shaped.ns, &b.ns, 0, SocketAddrV4::new(b.ip, 7302), BYTES));
    assert!(out <= 1.5 * RATE_BITS as f64, "traffic out of the shaped pod ran at {out:.0} bit/s, limit {RATE_BITS}");

    // The rest of the node keeps the fast path.
    let redirected = vm.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&a.ns, &b.ns, 0, SocketAddrV4::new(b.ip, 7303), BYTES), BYTES);
    assert!(vm.counter("from_pod", "redirected") > redirected);
}
