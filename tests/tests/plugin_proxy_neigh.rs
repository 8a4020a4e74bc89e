//! `proxyNeighbor`: the VM answers ARP for its pods on the uplink, so the vrouter reaches
//! a pod with no static route at all (the way past the router's 30-route limit).

use serde_json::json;
use testbed::probe::ping;
use testbed::vm::Vm;

fn proxy_entries(vm: &Vm) -> String {
    vm.ns.ip("neigh show proxy dev eth0")
}

#[test]
fn vrouter_reaches_pod_without_a_route() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let mut conf = vm.network("1.1.0");
    conf["proxyNeighbor"] = json!({"uplink": "eth0"});
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    assert!(proxy_entries(&vm).contains("10.10.10.19"), "{}", proxy_entries(&vm));
    // The vrouter has only its connected 10.10.10.0/24: it ARPs for the pod on qr0.
    assert!(!vm.vrouter.ip("route").contains("10.10.10.19"));
    ping(&vm.vrouter, "10.10.10.19".parse().unwrap()).unwrap();
    vm.check(&conf, &pod, &res).assert_ok();

    vm.ns.ip("neigh del proxy 10.10.10.19 dev eth0");
    let (code, msg, _) = vm.check(&conf, &pod, &res).error();
    assert_eq!(code, 121, "{msg}");
    assert!(msg.contains("no proxy neighbour entry for 10.10.10.19 on eth0"), "{msg}");
    vm.ns.ip("neigh add proxy 10.10.10.19 dev eth0 proto 86");

    vm.del(&conf, &pod, None).assert_ok();
    assert_eq!(proxy_entries(&vm), "");
    vm.snapshot().assert_same_as(&before, "after DEL with proxyNeighbor");
}

#[test]
fn gc_and_rollback_release_entries() {
    let vm = Vm::new();
    let mut conf = vm.network("1.1.0");
    conf["proxyNeighbor"] = json!({});
    let leak = vm.pod();
    vm.add(&conf, &leak).result();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    vm.plugin("GC", &gc, None).assert_ok();
    assert_eq!(proxy_entries(&vm), "", "GC left a proxy entry");

    // A failing ADD (route rejected after the entry was made) takes its entry back.
    conf["ipam"]["routes"] = json!([{"dst": "10.1.2.3/8"}]);
    let pod = vm.pod();
    assert_eq!(vm.add(&conf, &pod).error().0, 7);
    assert_eq!(proxy_entries(&vm), "", "rollback left a proxy entry");
}
