//! CHECK notices tampering on either side and says precisely what differs.

use testbed::vm::Vm;

#[test]
fn check_catches_deleted_host_route() {
    let vm = Vm::new();
    let conf = vm.network("1.0.0");
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    vm.check(&conf, &pod, &res).assert_ok();
    let host_veth = res["interfaces"][0]["name"].as_str().unwrap();

    vm.ns.ip("route del 10.10.10.19/32");
    let (code, msg, _) = vm.check(&conf, &pod, &res).error();
    assert_eq!(code, 121, "{msg}");
    assert!(msg.contains(&format!("host route `10.10.10.19 dev {host_veth}` is missing")), "{msg}");
    vm.del(&conf, &pod, Some(&res)).assert_ok();
}

#[test]
fn check_catches_changed_pod_route() {
    let vm = Vm::new();
    let conf = vm.network("1.1.0");
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();

    pod.ns.ip("route replace default via 169.254.1.1 dev eth0 metric 10");
    pod.ns.ip("route del default via 169.254.1.1 dev eth0 metric 0");
    let (code, msg, _) = vm.check(&conf, &pod, &res).error();
    assert_eq!(code, 121, "{msg}");
    assert!(msg.contains("pod route `default via 169.254.1.1 dev eth0` is missing"), "{msg}");
    assert!(msg.contains("pod has unexpected route `default via 169.254.1.1 dev eth0 metric 10`"), "{msg}");
    pod.ns.ip("route replace default via 169.254.1.1 dev eth0");
    pod.ns.ip("route del default via 169.254.1.1 dev eth0 metric 10");
    vm.check(&conf, &pod, &res).assert_ok();

    pod.ns.ip("route add 10.99.0.0/16 via 169.254.1.1 dev eth0");
    pod.ns.ip("route del 169.254.1.1 dev eth0 scope link");
    let (code, msg, _) = vm.check(&conf, &pod, &res).error();
    assert_eq!(code, 121, "{msg}");
    assert!(msg.contains("pod route `169.254.1.1 dev eth0 scope link` is missing"), "{msg}");
    assert!(msg.contains("pod has unexpected route `10.99.0.0/16 via 169.254.1.1 dev eth0`"), "{msg}");
    vm.del(&conf, &pod, Some(&res)).assert_ok();
}

#[test]
fn check_catches_pod_address_mac_and_gateway() {
    let vm = Vm::new();
    let conf = vm.network("0.4.0");
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    let host_veth = res["interfaces"][0]["name"].as_str().unwrap();

    pod.ns.ip("addr del 10.10.10.19/24 dev eth0");
    pod.ns.ip("link set eth0 address 02:00:00:00:00:99");
    let gw_on_veth = vm.ns.ip(&format!("-4 addr show dev {host_veth}")).contains("169.254.1.1/32");
    if gw_on_veth {
        vm.ns.ip(&format!("addr del 169.254.1.1/32 dev {host_veth}"));
    } else {
        vm.ns.ip("addr del 169.254.1.1/32 dev dummy0");
    }
    let (code, msg, _) = vm.check(&conf, &pod, &res).error();
    assert_eq!(code, 121, "{msg}");
    assert!(msg.contains("pod eth0 lacks address 10.10.10.19/24 (has: none)"), "{msg}");
    assert!(msg.contains("pod eth0 MAC is 02:00:00:00:00:99 but the result says"), "{msg}");
    assert!(msg.contains("gateway 169.254.1.1/32 is on neither"), "{msg}");
    vm.del(&conf, &pod, Some(&res)).assert_ok();
}

#[test]
fn check_without_prev_result_or_interface() {
    let vm = Vm::new();
    let conf = vm.network("1.0.0");
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    let out = vm.plugin("CHECK", &conf, Some(&pod.attachment()));
    let (code, msg, _) = out.error();
    assert_eq!(code, 7, "{msg}");
    assert!(msg.contains("prevResult"), "{msg}");

    pod.ns.ip("link del eth0");
    let (code, msg, _) = vm.check(&conf, &pod, &res).error();
    assert_eq!(code, 121, "{msg}");
    assert!(msg.contains("interface eth0 does not exist in netns"), "{msg}");
    vm.del(&conf, &pod, Some(&res)).assert_ok();
}
