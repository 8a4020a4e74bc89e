//! The spec matrix: every supported version through VERSION, ADD, CHECK, STATUS, GC and
//! DEL, with results in that version's format and verbs refused where the spec says.

use serde_json::{json, Value};
use testbed::cni_runner;
use testbed::probe::ping;
use testbed::vm::{with_prev, Vm};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[test]
fn version_reports_all_supported() {
    let vm = Vm::new();
    for v in VERSIONS {
        let out = vm.plugin("VERSION", &json!({"cniVersion": v}), None).result();
        assert_eq!(out["cniVersion"], v);
        assert_eq!(out["supportedVersions"], json!(VERSIONS));
    }
}

#[test]
fn every_version_add_check_status_gc_del() {
    let vm = Vm::new();
    let before = vm.snapshot();
    for v in VERSIONS {
        let conf = vm.network(v);
        let pod = vm.pod();
        let res = vm.add(&conf, &pod).result();

        assert_eq!(res["cniVersion"], v);
        let ip = &res["ips"][0];
        assert_eq!(ip["gateway"], "169.254.1.1", "{v}: {res}");
        assert_eq!(ip["interface"], 1, "{v}: {res}");
        assert_eq!(ip.get("version").is_some(), v < "1.0.0", "{v}: per-IP version field: {res}");
        if v < "1.0.0" {
            assert_eq!(ip["version"], "4");
        }
        assert_eq!(res["interfaces"][1]["name"], "eth0");
        assert_eq!(res["interfaces"][1]["sandbox"], pod.ns.path().display().to_string());
        assert_eq!(res["interfaces"][1]["mac"], pod_mac(&pod.ns), "{v}");
        assert_eq!(res["routes"], json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]));
        ping(&pod.ns, "169.254.1.1".parse().unwrap()).unwrap();

        let check = vm.check(&conf, &pod, &res);
        if v >= "0.4.0" {
            check.assert_ok();
        } else {
            assert_eq!(check.error().0, 1, "{v}: CHECK must be refused before 0.4.0");
        }

        let status = vm.plugin("STATUS", &conf, None);
        let mut gc_conf = with_prev(&conf, None);
        gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": pod.id, "ifname": "eth0"}]);
        let gc = vm.plugin("GC", &gc_conf, None);
        if v == "1.1.0" {
            status.assert_ok();
            gc.assert_ok();
            // GC kept the valid attachment working.
            vm.check(&conf, &pod, &res).assert_ok();
        } else {
            assert_eq!(status.error().0, 1, "{v}: STATUS needs 1.1.0");
            assert_eq!(gc.error().0, 1, "{v}: GC needs 1.1.0");
        }

        vm.del(&conf, &pod, Some(&res)).assert_ok();
        vm.snapshot().assert_same_as(&before, &format!("after DEL at {v}"));
    }
}

fn pod_mac(ns: &testbed::netns::NetNs) -> Value {
    // Not /sys/class/net: nsenter keeps the caller's sysfs mount.
    let link = ns.ip("-o link show eth0");
    let mac = link.split("link/ether ").nth(1).and_then(|s| s.split_whitespace().next()).expect("eth0 has a MAC");
    Value::String(mac.to_string())
}

#[test]
fn result_parses_with_reference_plugins_expectations() {
    // The result must be valid input for the next plugin in a chain: feed it to the
    // reference `tuning` plugin as prevResult at 1.0.0 (it re-reads and re-prints it).
    let vm = Vm::new();
    let conf = vm.network("1.0.0");
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    let tuning = json!({"cniVersion": "1.0.0", "name": "cni0", "type": "tuning", "prevResult": res});
    let out = cni_runner::exec(
        &std::path::Path::new(cni_runner::REFERENCE_PLUGINS).join("tuning"),
        &vm.ns,
        "ADD",
        Some(&pod.attachment()),
        &[],
        tuning.to_string().as_bytes(),
    )
    .result();
    assert_eq!(out["ips"], res["ips"]);
    assert_eq!(out["interfaces"], res["interfaces"]);
    vm.del(&conf, &pod, Some(&res)).assert_ok();
}

#[test]
fn prev_result_without_ipam_is_passed_through() {
    // As a later plugin in a chain: no IPAM, the address comes from prevResult, and the
    // result keeps what came before while pointing the address at our interface.
    let vm = Vm::new();
    let before = vm.snapshot();
    let mut conf = vm.network("1.0.0");
    conf.as_object_mut().unwrap().remove("ipam");
    conf["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "earlier0"}],
        "ips": [{"address": "10.10.10.77/24", "gateway": "10.10.10.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.10.10.53"]}
    });
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    assert_eq!(res["interfaces"][0]["name"], "earlier0");
    assert_eq!(res["interfaces"][2]["name"], "eth0");
    assert_eq!(res["ips"], json!([{"address": "10.10.10.77/24", "gateway": "169.254.1.1", "interface": 2}]));
    assert_eq!(res["routes"], json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]));
    assert_eq!(res["dns"]["nameservers"], json!(["10.10.10.53"]));
    assert!(pod.ns.ip("-4 addr show dev eth0").contains("inet 10.10.10.77/24"));
    vm.check(&conf, &pod, &res).assert_ok();
    vm.del(&conf, &pod, Some(&res)).assert_ok();
    vm.snapshot().assert_same_as(&before, "after DEL of a prevResult-addressed pod");
}
