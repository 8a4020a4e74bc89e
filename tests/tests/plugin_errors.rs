//! Bad input: each case gets a CNI error JSON with the right code, and leaves nothing
//! behind in the VM (links, addresses, routes, iptables rules, IPAM allocations, pins)
//! nor in the pod.

use serde_json::{json, Value};
use testbed::cni_runner::{self, Attachment, Outcome};
use testbed::vm::{Pod, Snapshot, Vm};

/// Assert the error code and that neither the VM nor the pod changed.
fn assert_clean_error(vm: &Vm, before: &Snapshot, pod: Option<&Pod>, out: &Outcome, code: u64, needle: &str) -> Value {
    let (got, msg, err) = out.error();
    assert_eq!(got, code, "wrong code for {needle:?}: {err}");
    assert!(msg.contains(needle) || err["details"].as_str().is_some_and(|d| d.contains(needle)), "{needle:?} not in {err}");
    vm.snapshot().assert_same_as(before, &format!("after failed ADD ({needle})"));
    if let Some(p) = pod {
        let links = p.ns.ip("-o link show");
        assert_eq!(links.lines().count(), 1, "pod has links besides lo: {links}");
        assert_eq!(p.ns.ip("route show"), "", "pod has routes");
    }
    err
}

fn add_raw(vm: &Vm, att: Option<&Attachment>, env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    cni_runner::exec(cni_runner::plugin_binary(), &vm.ns, "ADD", att, env, stdin)
}

#[test]
fn malformed_json() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    let out = add_raw(&vm, Some(&pod.attachment()), &[], b"{\"cniVersion\": \"1.0.0\", \"name\": ");
    assert_clean_error(&vm, &before, Some(&pod), &out, 6, "failed to decode");
}

#[test]
fn invalid_config_values() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    for (key, value, needle) in [
        ("mtu", json!(10), "mtu 10"),
        ("gatewayMode", json!("magic"), "unknown variant `magic`, expected one of `auto`, `device`, `hostVeth`"),
        ("name", json!("bad name"), "invalid network name"),
        ("ipMasq", json!("yes"), "failed to decode"),
    ] {
        let mut conf = vm.network("1.0.0");
        conf[key] = value;
        let out = vm.add(&conf, &pod);
        assert_clean_error(&vm, &before, Some(&pod), &out, 7, needle);
    }
    let mut conf = vm.network("1.0.0");
    conf.as_object_mut().unwrap().remove("ipam");
    assert_clean_error(&vm, &before, Some(&pod), &vm.add(&conf, &pod), 7, "no \"ipam\" section");
}

#[test]
fn missing_or_bad_environment() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    let conf = vm.network("1.0.0").to_string();
    let netns = pod.ns.path().display().to_string();
    let full = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c-env"), ("CNI_NETNS", netns.as_str()), ("CNI_IFNAME", "eth0")];
    for missing in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let env: Vec<(&str, &str)> = full.iter().copied().filter(|(k, _)| *k != missing).collect();
        let mut cmd = vm.ns.command(cni_runner::plugin_binary());
        cmd.env_clear().env("CNI_PATH", cni_runner::cni_path()).envs(env);
        let out = cni_runner::run(cmd, conf.as_bytes());
        assert_clean_error(&vm, &before, Some(&pod), &out, 4, missing);
    }
    let mut cmd = vm.ns.command(cni_runner::plugin_binary());
    cmd.env_clear().env("CNI_PATH", cni_runner::cni_path()).envs(full).env("CNI_COMMAND", "FROB");
    assert_clean_error(&vm, &before, Some(&pod), &cni_runner::run(cmd, conf.as_bytes()), 4, "FROB");
    let mut att = pod.attachment();
    att.container_id = "bad id/..".into();
    assert_clean_error(&vm, &before, Some(&pod), &vm.plugin("ADD", &vm.network("1.0.0"), Some(&att)), 4, "CNI_CONTAINERID");
}

#[test]
fn unsupported_versions() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    for v in ["0.2.0", "0.1.0", "1.2.0", "banana"] {
        let out = vm.add(&vm.network(v), &pod);
        let err = assert_clean_error(&vm, &before, Some(&pod), &out, 1, v);
        assert!(err["details"].as_str().unwrap().contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"), "{err}");
    }
}

#[test]
fn netns_that_does_not_exist() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let att = Attachment { container_id: "c-nonet".into(), netns: Some("/var/run/netns/vr-does-not-exist".into()), ifname: "eth0".into() };
    let out = vm.plugin("ADD", &vm.network("1.0.0"), Some(&att));
    assert_clean_error(&vm, &before, None, &out, 3, "vr-does-not-exist");
}

#[test]
fn ifname_too_long() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    let mut att = pod.attachment();
    att.ifname = "eth0123456789abc".into();
    let out = vm.plugin("ADD", &vm.network("1.0.0"), Some(&att));
    assert_clean_error(&vm, &before, Some(&pod), &out, 4, "longer than 15");
}

#[test]
fn interface_already_exists_in_pod() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    pod.ns.ip("link add eth0 type veth peer name other0");
    let out = vm.add(&vm.network("1.0.0"), &pod);
    let (code, msg, _) = out.error();
    assert_eq!(code, 4, "{msg}");
    assert!(msg.contains("CNI_IFNAME eth0: interface already exists"), "{msg}");
    vm.snapshot().assert_same_as(&before, "after ADD onto an existing eth0");
    // The pod's own interface is untouched.
    let links = pod.ns.ip("-o link show");
    assert!(links.contains("eth0@other0") && links.contains("other0@eth0"), "{links}");
}

#[test]
fn ipam_binary_missing() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    let mut conf = vm.network("1.0.0");
    conf["ipam"]["type"] = json!("no-such-ipam");
    assert_clean_error(&vm, &before, Some(&pod), &vm.add(&conf, &pod), 7, "plugin \"no-such-ipam\" not found in CNI_PATH");
}

#[test]
fn ipam_returns_an_error() {
    // Real host-local with a one-address range: the second ADD gets its error.
    let vm = Vm::new();
    let mut conf = vm.network("1.0.0");
    conf["ipam"]["ranges"] = json!([[{"subnet": "10.10.10.0/24", "rangeStart": "10.10.10.19", "rangeEnd": "10.10.10.19"}]]);
    let first = vm.pod();
    let res = vm.add(&conf, &first).result();
    let before = vm.snapshot();
    let second = vm.pod();
    let out = vm.add(&conf, &second);
    let (code, msg, err) = out.error();
    assert!(msg.starts_with("host-local ADD: "), "{err}");
    assert!(msg.contains("no IP addresses available"), "{err}");
    assert_ne!(code, 0);
    vm.snapshot().assert_same_as(&before, "after IPAM failure");
    assert_eq!(second.ns.ip("-o link show").lines().count(), 1);
    vm.del(&conf, &first, Some(&res)).assert_ok();
}

#[test]
fn ipam_returns_no_ipv4() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    for ipam in [json!({"type": "static", "addresses": []}), json!({"type": "static", "addresses": [{"address": "fd00::5/64"}]})] {
        let mut conf = vm.network("1.0.0");
        conf["ipam"] = ipam;
        assert_clean_error(&vm, &before, Some(&pod), &vm.add(&conf, &pod), 123, "returned no IPv4 address");
    }
}

/// Addresses from prevResult (no IPAM) are checked before anything is created: two IPv6
/// addresses beside the IPv4 one are refused (plugin_dual_stack tests one, and the same
/// refusal after IPAM).
#[test]
fn prev_result_with_two_ipv6_addresses() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    let mut conf = vm.network("1.0.0");
    conf.as_object_mut().unwrap().remove("ipam");
    conf["prevResult"] =
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.10.10.40/24"}, {"address": "fd00::5/64"}, {"address": "fd00::6/64"}]});
    let err = assert_clean_error(&vm, &before, Some(&pod), &vm.add(&conf, &pod), 123, "(prevResult) returned 2 IPv6 addresses");
    assert!(err["details"].as_str().unwrap().contains("fd00::5/64, fd00::6/64"), "{err}");
}

#[test]
fn route_the_kernel_rejects() {
    // host-local passes the route through as written; 10.1.2.3/8 has host bits set and the
    // kernel refuses it. Everything, including the host-local allocation, is rolled back.
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    let mut conf = vm.network("1.0.0");
    conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "10.1.2.3/8"}]);
    let err = assert_clean_error(&vm, &before, Some(&pod), &vm.add(&conf, &pod), 7, "10.1.2.3/8");
    assert!(err["msg"].as_str().unwrap().contains("in the pod"), "{err}");
    // The pod is still usable for a correct ADD.
    conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]);
    let res = vm.add(&conf, &pod).result();
    vm.del(&conf, &pod, Some(&res)).assert_ok();
    vm.snapshot().assert_same_as(&before, "after the corrected ADD and its DEL");
}

#[test]
fn malformed_prev_result() {
    // The 44 residue cases of the bad-input probe were all malformed prevResults: each
    // used to fail after the pod was wired and leave everything behind.
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    for prev in [
        json!(0),
        json!(true),
        json!("x"),
        json!([]),
        json!({"ips": [{"address": "nonsense"}]}),
        json!({"cniVersion": "1.0.0", "interfaces": 7}),
        json!({"cniVersion": "1.0.0", "routes": [{"dst": "10.0.0.0/33"}]}),
    ] {
        let mut conf = vm.network("1.0.0");
        conf["prevResult"] = prev.clone();
        let err = assert_clean_error(&vm, &before, Some(&pod), &vm.add(&conf, &pod), 7, "prevResult");
        assert!(err.to_string().len() < 2000, "{prev}: {err}");
    }
    // Without IPAM the addresses come from prevResult: one without IPv4 is refused before
    // anything is created.
    let mut conf = vm.network("1.0.0");
    conf.as_object_mut().unwrap().remove("ipam");
    conf["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "fd00::5/64"}]});
    assert_clean_error(&vm, &before, Some(&pod), &vm.add(&conf, &pod), 123, "returned no IPv4 address");
}

#[test]
fn unknown_and_misspelt_keys() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    for (key, value, needle) in [
        ("fastpath", json!("off"), "unknown configuration key `fastpath`; did you mean `fastPath`?"),
        ("ipmasq", json!(true), "did you mean `ipMasq`?"),
        ("gatewayDev", json!("dummy0"), "unknown configuration key `gatewayDev`"),
        ("proxyNeighbor", json!({"uplnk": "eth0"}), "unknown field `uplnk`"),
    ] {
        let mut conf = vm.network("1.0.0");
        conf[key] = value;
        let err = assert_clean_error(&vm, &before, Some(&pod), &vm.add(&conf, &pod), 7, needle);
        if key != "proxyNeighbor" {
            assert!(err["details"].as_str().is_some_and(|d| d.contains("known keys:") && d.contains("bpfPinDir")), "{err}");
        }
    }
}

#[test]
fn paths_and_names_that_cannot_be_meant() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    for (key, value, needle) in [
        ("logFile", json!(""), "logFile \"\" is not an absolute path"),
        ("logFile", json!("veth-route.log"), "is not an absolute path"),
        ("logFile", json!("/var/log/../../etc/passwd"), "is not an absolute path"),
        ("bpfPinDir", json!("sys/fs/bpf"), "bpfPinDir \"sys/fs/bpf\" is not an absolute path"),
        ("gatewayDevice", json!("dummy 0"), "gatewayDevice"),
        ("gatewayDevice", json!(""), "gatewayDevice"),
        ("uplinks", json!(["eth0", "eth0"]), "listed twice"),
    ] {
        let mut conf = vm.network("1.0.0");
        conf[key] = value;
        assert_clean_error(&vm, &before, Some(&pod), &vm.add(&conf, &pod), 7, needle);
    }
}
