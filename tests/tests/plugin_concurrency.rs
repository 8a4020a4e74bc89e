//! 20 concurrent ADDs on one VM, then 20 concurrent DELs: all succeed, zero residue; the
//! same for dual-stack pods, whose ADDs and DELs also race on ip6tables and IPv6 sysctls.

use std::collections::HashSet;

use serde_json::json;
use testbed::probe::ping;
use testbed::vm::Vm;

const PODS: usize = 20;

#[test]
fn twenty_concurrent_adds_then_dels() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let mut conf = vm.network("1.1.0");
    conf["ipMasq"] = json!(true);
    let pods: Vec<_> = (0..PODS).map(|_| vm.pod()).collect();

    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().map(|p| s.spawn(|| vm.add(&conf, p))).collect();
        handles.into_iter().map(|h| h.join().expect("ADD thread")).collect()
    });
    let results: Vec<_> = results.iter().map(|o| o.result()).collect();
    let ips: HashSet<String> = results.iter().map(|r| r["ips"][0]["address"].as_str().unwrap().to_string()).collect();
    assert_eq!(ips.len(), PODS, "addresses not distinct: {ips:?}");
    let veths: HashSet<String> = results.iter().map(|r| r["interfaces"][0]["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(veths.len(), PODS);

    for (pod, res) in pods.iter().zip(&results) {
        ping(&pod.ns, "169.254.1.1".parse().unwrap()).unwrap();
        vm.check(&conf, pod, res).assert_ok();
    }
    // Neighbours talk to each other through the VM.
    let first_ip = results[0]["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap();
    ping(&pods[PODS - 1].ns, first_ip).unwrap();

    let dels: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().zip(&results).map(|(p, r)| s.spawn(|| vm.del(&conf, p, Some(r)))).collect();
        handles.into_iter().map(|h| h.join().expect("DEL thread")).collect()
    });
    for d in &dels {
        d.assert_ok();
    }
    vm.snapshot().assert_same_as(&before, "after 20 concurrent ADD/DEL");
}

/// Dual-stack pods with `ipMasq`, concurrently: every ADD inserts its rpfilter rule and
/// masquerade chains in both families, and writes the IPv6 sysctls, at the same time as
/// the others.
#[test]
fn concurrent_dual_stack_adds_then_dels() {
    const DUAL: usize = 12;
    let vm = Vm::new();
    let before = vm.snapshot();
    let mut conf = vm.network("1.1.0");
    conf["ipMasq"] = json!(true);
    conf["ipam"]["ranges"] = json!([
        [{"subnet": "10.10.10.0/24", "rangeStart": "10.10.10.19", "rangeEnd": "10.10.10.250"}],
        [{"subnet": "fd00:10:10::/64"}],
    ]);
    let pods: Vec<_> = (0..DUAL).map(|_| vm.pod()).collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().map(|p| s.spawn(|| vm.add(&conf, p))).collect();
        handles.into_iter().map(|h| h.join().expect("ADD thread")).collect()
    });
    let results: Vec<_> = results.iter().map(|o| o.result()).collect();
    let ips6: HashSet<String> = results.iter().map(|r| r["ips"][1]["address"].as_str().unwrap().to_string()).collect();
    assert_eq!(ips6.len(), DUAL, "IPv6 addresses not distinct: {ips6:?}");
    let raw = vm.ns.sh("ip6tables", &["-w", "-t", "raw", "-S", "PREROUTING"]);
    assert_eq!(raw.lines().filter(|l| l.contains("rpfilter")).count(), DUAL, "one rpfilter rule per pod: {raw}");
    for (pod, res) in pods.iter().zip(&results) {
        vm.check(&conf, pod, res).assert_ok();
    }
    let dels: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().zip(&results).map(|(p, r)| s.spawn(|| vm.del(&conf, p, Some(r)))).collect();
        handles.into_iter().map(|h| h.join().expect("DEL thread")).collect()
    });
    for d in &dels {
        d.assert_ok();
    }
    vm.snapshot().assert_same_as(&before, "after concurrent dual-stack ADD/DEL");
}
