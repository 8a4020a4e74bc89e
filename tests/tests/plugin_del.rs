//! DEL is idempotent and stateless: twice, after the netns is gone, without prevResult;
//! GC removes a leftover attachment and keeps the valid ones; ipMasq rules go with DEL.

use serde_json::json;
use testbed::cni_runner;
use testbed::netns::TempDir;
use testbed::probe::ping;
use testbed::vm::{with_prev, Vm};

#[test]
fn del_twice_and_without_prev_result() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let conf = vm.network("1.0.0");
    let pod = vm.pod();
    vm.add(&conf, &pod).result();
    // No prevResult: everything is found from the container ID, ifname and network name.
    vm.del(&conf, &pod, None).assert_ok();
    vm.snapshot().assert_same_as(&before, "after DEL without prevResult");
    vm.del(&conf, &pod, None).assert_ok();
    vm.snapshot().assert_same_as(&before, "after the second DEL");
}

#[test]
fn del_after_netns_deleted() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let mut conf = vm.network("0.4.0");
    conf["ipMasq"] = json!(true);
    let mut pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    assert!(vm.snapshot().rules.iter().any(|r| r.contains("CNI-VR-")), "ipMasq chain missing");
    pod.ns.delete();
    // As a runtime does after `ip netns del`: CNI_NETNS empty.
    let att = pod.attachment();
    assert!(att.netns.is_none());
    vm.plugin("DEL", &with_prev(&conf, Some(&res)), Some(&att)).assert_ok();
    vm.snapshot().assert_same_as(&before, "after DEL with the netns gone");
    vm.plugin("DEL", &conf, Some(&att)).assert_ok();
}

#[test]
fn del_with_stale_netns_path() {
    // Some runtimes pass the old path even after the namespace is gone.
    let vm = Vm::new();
    let before = vm.snapshot();
    let conf = vm.network("1.1.0");
    let mut pod = vm.pod();
    vm.add(&conf, &pod).result();
    let mut att = pod.attachment();
    pod.ns.delete();
    assert!(att.netns.as_ref().is_some_and(|p| !p.exists()));
    att.ifname = "eth0".into();
    vm.plugin("DEL", &conf, Some(&att)).assert_ok();
    vm.snapshot().assert_same_as(&before, "after DEL with a stale netns path");
}

#[test]
fn ip_masq_rules_and_traffic() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let mut conf = vm.network("1.0.0");
    conf["ipMasq"] = json!(true);
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    let nat = vm.ns.sh("iptables", &["-w", "-t", "nat", "-S"]);
    let tag = format!("veth-route/cni0/{}/eth0", pod.id);
    assert!(
        nat.lines().any(|l| l.starts_with("-A POSTROUTING -s 10.10.10.19/32") && l.contains(&tag) && l.contains("-j CNI-VR-")),
        "{nat}"
    );
    assert!(nat.lines().any(|l| l.contains("! -d 224.0.0.0/4") && l.contains("-j MASQUERADE")), "{nat}");
    // Off-subnet traffic is masqueraded: an address beyond the vrouter answers although
    // the vrouter has no route to the pod (without masquerade it would ARP for the pod
    // on its own segment and get no answer).
    vm.vrouter.ip("addr add 192.0.2.1/32 dev lo");
    ping(&pod.ns, "192.0.2.1".parse().unwrap()).unwrap();
    vm.check(&conf, &pod, &res).assert_ok();
    vm.del(&conf, &pod, Some(&res)).assert_ok();
    vm.snapshot().assert_same_as(&before, "after DEL with ipMasq");
}

#[test]
fn gc_removes_leftover_attachment() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let mut conf = vm.network("1.1.0");
    conf["ipMasq"] = json!(true);
    let keep = vm.pod();
    let mut leak = vm.pod();
    let keep_res = vm.add(&conf, &keep).result();
    vm.add(&conf, &leak).result();
    // The runtime lost track of `leak` (no DEL ever came); its netns even stayed around
    // until now, then vanished.
    leak.ns.delete();

    let mut gc = with_prev(&conf, None);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.id, "ifname": "eth0"}]);
    vm.plugin("GC", &gc, None).assert_ok();

    let snap = vm.snapshot();
    assert!(!snap.rules.iter().any(|r| r.contains(&leak.id)), "leaked masquerade rules survived GC");
    assert_eq!(snap.ipam.len(), 1, "host-local still holds the leaked address: {:?}", snap.ipam);
    vm.check(&conf, &keep, &keep_res).assert_ok();
    ping(&keep.ns, "169.254.1.1".parse().unwrap()).unwrap();

    vm.del(&conf, &keep, Some(&keep_res)).assert_ok();
    vm.snapshot().assert_same_as(&before, "after GC and DEL");
}

#[test]
fn gc_is_best_effort_and_always_reaches_ipam() {
    // A runtime that runs plugins with a PATH lacking iptables (a real misconfiguration):
    // the masquerade step fails, and GC must still remove the veth and have IPAM release
    // the address, then say exactly what it could not do.
    let vm = Vm::new();
    let before = vm.snapshot();
    let mut conf = vm.network("1.1.0");
    conf["ipMasq"] = json!(true);
    let leak = vm.pod();
    vm.add(&conf, &leak).result();
    let mut gc = with_prev(&conf, None);
    gc["cni.dev/valid-attachments"] = json!([]);
    let no_iptables = TempDir::new("noipt");
    // nsenter puts the plugin into the VM namespace; it is the only command on this PATH.
    std::os::unix::fs::symlink("/usr/bin/nsenter", no_iptables.path().join("nsenter")).unwrap();
    let path = no_iptables.path().display().to_string();
    let out = cni_runner::exec(cni_runner::plugin_binary(), &vm.ns, "GC", None, &[("PATH", path.as_str())], gc.to_string().as_bytes());
    let (code, msg, err) = out.error();
    assert_eq!(code, 5, "{err}");
    assert!(msg.contains("GC finished with 1 failure"), "{err}");
    assert!(err["details"].as_str().is_some_and(|d| d.contains("list masquerade chains") && d.contains("run iptables")), "{err}");
    let snap = vm.snapshot();
    assert!(snap.ipam.is_empty(), "IPAM was not reached: host-local still holds {:?}", snap.ipam);
    assert!(!vm.ns.ip("-o link show").contains("veth-route/"), "the leaked host veth survived GC");
    assert!(snap.rules.iter().any(|r| r.contains(&leak.id)), "the masquerade rules cannot have gone without iptables");

    // With iptables back, the next GC finishes the job.
    vm.plugin("GC", &gc, None).assert_ok();
    vm.snapshot().assert_same_as(&before, "after the second GC");
}

#[test]
fn gc_of_leftover_with_live_netns() {
    // A leftover whose pod namespace still exists: GC removes the host side (and with it
    // the pod end) and the address.
    let vm = Vm::new();
    let before = vm.snapshot();
    let conf = vm.network("1.1.0");
    let leak = vm.pod();
    vm.add(&conf, &leak).result();
    let mut gc = with_prev(&conf, None);
    gc["cni.dev/valid-attachments"] = json!([]);
    vm.plugin("GC", &gc, None).assert_ok();
    assert!(!leak.ns.ip("link").contains("eth0"), "pod end survived GC");
    vm.snapshot().assert_same_as(&before, "after GC of everything");
}

#[test]
fn gc_removes_masquerade_chains_an_older_build_left_empty() {
    // An older build created the chain and its rules in separate iptables calls; a crash in
    // between left a chain whose name (a hash) names no attachment. GC removes such
    // chains of ours, and nobody else's.
    let vm = Vm::new();
    let before = vm.snapshot();
    let mut conf = vm.network("1.1.0");
    conf["ipMasq"] = json!(true);
    vm.ns.sh("iptables", &["-w", "-t", "nat", "-N", "CNI-VR-00000000deadbeef"]);
    vm.ns.sh("iptables", &["-w", "-t", "nat", "-N", "KUBE-NOT-OURS"]);
    let mut gc = with_prev(&conf, None);
    gc["cni.dev/valid-attachments"] = json!([]);
    vm.plugin("GC", &gc, None).assert_ok();
    let nat = vm.ns.sh("iptables", &["-w", "-t", "nat", "-S"]);
    assert!(!nat.contains("CNI-VR-00000000deadbeef"), "{nat}");
    assert!(nat.contains("-N KUBE-NOT-OURS"), "GC removed a chain that is not ours: {nat}");
    vm.ns.sh("iptables", &["-w", "-t", "nat", "-X", "KUBE-NOT-OURS"]);
    vm.snapshot().assert_same_as(&before, "after GC");
}
