//! Config options: MTU, gateway address/device/mode (this kernel has no dummy device type,
//! so the device path uses a pre-created ifb device standing in for dummy0), and STATUS
//! reporting a node that cannot serve ADDs.

use serde_json::json;
use testbed::probe::ping;
use testbed::vm::Vm;

#[test]
fn mtu_on_both_ends() {
    let vm = Vm::new();
    let mut conf = vm.network("1.1.0");
    conf["mtu"] = json!(1400);
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    let host_veth = res["interfaces"][0]["name"].as_str().unwrap();
    assert!(pod.ns.ip("link show eth0").contains("mtu 1400"));
    assert!(vm.ns.ip(&format!("link show {host_veth}")).contains("mtu 1400"));
    assert_eq!(res["interfaces"][1]["mtu"], 1400);
    vm.del(&conf, &pod, Some(&res)).assert_ok();
}

#[test]
fn without_mtu_the_pod_gets_the_uplinks() {
    // A VM on a VXLAN tenant network gets MTU 1450 from Neutron (DHCP); a pod left at the
    // kernel's 1500 would send full-size packets the network drops.
    let vm = Vm::new();
    vm.ns.ip("link set eth0 mtu 1450");
    vm.vrouter.ip("link set qr0 mtu 1450");
    let conf = vm.network("1.1.0");
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    let host_veth = res["interfaces"][0]["name"].as_str().unwrap();
    assert!(pod.ns.ip("link show eth0").contains("mtu 1450"), "{}", pod.ns.ip("link show eth0"));
    assert!(vm.ns.ip(&format!("link show {host_veth}")).contains("mtu 1450"));
    assert_eq!(res["interfaces"][1]["mtu"], 1450);
    vm.del(&conf, &pod, Some(&res)).assert_ok();
    // An explicit mtu still wins.
    let mut conf = vm.network("1.1.0");
    conf["mtu"] = json!(1400);
    let res = vm.add(&conf, &pod).result();
    assert_eq!(res["interfaces"][1]["mtu"], 1400);
    vm.del(&conf, &pod, Some(&res)).assert_ok();
}

#[test]
fn custom_gateway_on_existing_device() {
    let vm = Vm::new();
    vm.ns.ip("link add gw0 type ifb");
    let mut conf = vm.network("1.0.0");
    conf["gateway"] = json!("169.254.100.1");
    conf["gatewayDevice"] = json!("gw0");
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    let host_veth = res["interfaces"][0]["name"].as_str().unwrap();
    assert_eq!(pod.ns.ip("route"), "default via 169.254.100.1 dev eth0 \n169.254.100.1 dev eth0 scope link \n");
    assert!(vm.ns.ip("-4 addr show dev gw0").contains("inet 169.254.100.1/32 scope global gw0"));
    assert!(
        !vm.ns.ip(&format!("-4 addr show dev {host_veth}")).contains("169.254.100.1"),
        "device mode must not put the address on the veth"
    );
    ping(&pod.ns, "169.254.100.1".parse().unwrap()).unwrap();
    vm.check(&conf, &pod, &res).assert_ok();

    vm.ns.ip("addr del 169.254.100.1/32 dev gw0");
    let (code, msg, _) = vm.check(&conf, &pod, &res).error();
    assert_eq!(code, 121);
    assert!(msg.contains("gateway 169.254.100.1/32 is on neither an up device gw0 nor host veth"), "{msg}");
    vm.del(&conf, &pod, Some(&res)).assert_ok();
}

#[test]
fn host_veth_mode_and_device_mode_without_dummy() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();

    let mut conf = vm.network("1.1.0");
    conf["gatewayMode"] = json!("hostVeth");
    let res = vm.add(&conf, &pod).result();
    let host_veth = res["interfaces"][0]["name"].as_str().unwrap();
    assert!(vm.ns.ip(&format!("-4 addr show dev {host_veth}")).contains("inet 169.254.1.1/32 scope global"));
    ping(&pod.ns, "169.254.1.1".parse().unwrap()).unwrap();
    vm.check(&conf, &pod, &res).assert_ok();
    vm.del(&conf, &pod, Some(&res)).assert_ok();

    // "device" insists on dummy0, which this kernel cannot create.
    let kernel_has_dummy = vm.ns.ip_output("link add vrprobe0 type dummy").status.success();
    if kernel_has_dummy {
        vm.ns.ip("link del vrprobe0");
        return;
    }
    conf["gatewayMode"] = json!("device");
    let (code, msg, _) = vm.add(&conf, &pod).error();
    assert_eq!(code, 7, "{msg}");
    assert!(msg.contains("cannot create dummy device dummy0"), "{msg}");
    vm.snapshot().assert_same_as(&before, "after ADD refused in device mode");
    let (code, msg, _) = vm.plugin("STATUS", &conf, None).error();
    assert_eq!(code, 50, "{msg}");
    assert!(msg.contains("cannot create gateway device dummy0"), "{msg}");
}

#[test]
fn ifname_with_a_dot() {
    // Interface names may contain dots; sysctl paths must not split on them.
    let vm = Vm::new();
    let before = vm.snapshot();
    let conf = vm.network("1.0.0");
    let mut pod = vm.pod();
    pod.ifname = "net1.100".into();
    let res = vm.add(&conf, &pod).result();
    assert_eq!(res["interfaces"][1]["name"], "net1.100");
    assert_eq!(pod.ns.sh("cat", &["/proc/sys/net/ipv4/conf/net1.100/arp_notify"]).trim(), "1");
    assert_eq!(pod.ns.ip("route"), "default via 169.254.1.1 dev net1.100 \n169.254.1.1 dev net1.100 scope link \n");
    vm.check(&conf, &pod, &res).assert_ok();
    vm.del(&conf, &pod, Some(&res)).assert_ok();
    vm.snapshot().assert_same_as(&before, "after DEL of net1.100");
}
