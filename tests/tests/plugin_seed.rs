//! The design note's state, literally, and traffic through it: pod -> gateway, pod <-> pod,
//! pod -> the VM's uplink address, and vrouter -> pod through the VM.

use testbed::probe::{ping, ArpWatch};
use testbed::vm::Vm;

#[test]
fn seed_state_and_connectivity() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let conf = vm.network("0.3.1");
    let p1 = vm.pod();
    let p2 = vm.pod();
    let arp = ArpWatch::start(&vm.ns);
    let r1 = vm.add(&conf, &p1).result();
    assert!(arp.saw_gratuitous("10.10.10.19".parse().unwrap()), "no gratuitous ARP from the pod");
    let r2 = vm.add(&conf, &p2).result();
    assert_eq!(r1["ips"][0]["address"], "10.10.10.19/24", "{r1}");
    assert_eq!(r2["ips"][0]["address"], "10.10.10.20/24", "{r2}");
    let host_veth = r1["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(host_veth.len() == 12 && host_veth.starts_with("veth"), "host veth name {host_veth}");

    // Pod: `ip -4 addr` and `ip route` as in the note.
    let addr = p1.ns.ip("-4 addr show dev eth0");
    let host_index = vm.ns.ip(&format!("-o link show {host_veth}")).split(':').next().unwrap().trim().to_string();
    assert!(addr.starts_with(&format!("2: eth0@if{host_index}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500")), "{addr}");
    assert!(addr.lines().any(|l| l.trim() == "inet 10.10.10.19/24 scope global eth0"), "{addr}");
    assert_eq!(p1.ns.ip("route"), "default via 169.254.1.1 dev eth0 \n169.254.1.1 dev eth0 scope link \n");

    // VM: the /32 route (scope global, shown without scope) and the gateway address.
    let routes = vm.ns.ip("route");
    assert!(routes.lines().any(|l| l.trim() == format!("10.10.10.19 dev {host_veth}")), "{routes}");
    let gw_dev = if vm.ns.ip_output("link show dummy0").status.success() { "dummy0".to_string() } else { host_veth.clone() };
    let gw = vm.ns.ip(&format!("-4 addr show dev {gw_dev}"));
    assert!(gw.lines().any(|l| l.trim() == format!("inet 169.254.1.1/32 scope global {gw_dev}")), "{gw}");
    // Host veth takes no router advertisements; the VM forwards. (/proc/sys/net shows the
    // namespace of the process reading it, here `cat` run inside the VM.)
    assert_eq!(vm.ns.sh("cat", &[&format!("/proc/sys/net/ipv6/conf/{host_veth}/accept_ra")]).trim(), "0");
    assert_eq!(vm.ns.sh("cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(), "1");
    // Logs went to the configured file; stdout held only the result (parsed above).
    let log = std::fs::read_to_string(vm.log_file()).unwrap();
    assert!(log.contains(&format!("ADD {} eth0", p1.id)), "{log}");
    let p2_ip = "10.10.10.20".parse().unwrap();
    let p1_ip = "10.10.10.19".parse().unwrap();

    ping(&p1.ns, "169.254.1.1".parse().unwrap()).unwrap();
    ping(&p1.ns, p2_ip).unwrap();
    ping(&p2.ns, p1_ip).unwrap();
    ping(&p1.ns, vm.uplink_ip).unwrap();
    vm.route_in_vrouter(p1_ip);
    ping(&vm.vrouter, p1_ip).unwrap();
    ping(&p1.ns, vm.vrouter_ip).unwrap();

    vm.del(&conf, &p1, Some(&r1)).assert_ok();
    vm.del(&conf, &p2, Some(&r2)).assert_ok();
    vm.vrouter.ip(&format!("route del {p1_ip}/32"));
    vm.snapshot().assert_same_as(&before, "after DEL of both pods");
}
