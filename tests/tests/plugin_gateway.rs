//! The pods' gateway when the VM answers ARP only for addresses on the receiving device
//! (`arp_ignore=1`, as kube-proxy's IPVS strictARP and MetalLB set it) and picks ARP
//! sources by `arp_announce=2`. Pods resolve 169.254.1.1 from a permanent neighbour entry,
//! so the design note's traffic works whether the settings were there before the pods or
//! came after, and CHECK insists on the entry.
//!
//! The `dummy0` variants need the dummy device type (the distro kernels of
//! `cargo xtask test --kernel ...`); on a kernel without it they say they do not apply, and
//! the gateway-on-the-host-veth variants (what `gatewayMode: auto` falls back to there) run.

use std::net::Ipv4Addr;

use serde_json::json;
use testbed::kernel::{self, Capabilities};
use testbed::netns::NetNs;
use testbed::probe::ping;
use testbed::vm::{Pod, Vm};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// `gatewayMode: device`: 169.254.1.1 on dummy0 only, as in the design note.
    Dummy0,
    /// `gatewayMode: hostVeth`: 169.254.1.1 on each host veth.
    HostVeth,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    /// The VM (and so every pod namespace created on it) has the settings before ADD.
    BeforePods,
    /// The VM gets the settings while pods run, and every learned neighbour is forgotten.
    AfterPods,
}

#[test]
fn dummy0_gateway_with_strict_arp_before_pods() {
    if dummy_missing("dummy0_gateway_with_strict_arp_before_pods") {
        return;
    }
    gateway_under_strict_arp(Placement::Dummy0, When::BeforePods);
}

#[test]
fn dummy0_gateway_with_strict_arp_after_pods() {
    if dummy_missing("dummy0_gateway_with_strict_arp_after_pods") {
        return;
    }
    gateway_under_strict_arp(Placement::Dummy0, When::AfterPods);
}

#[test]
fn host_veth_gateway_with_strict_arp_before_pods() {
    gateway_under_strict_arp(Placement::HostVeth, When::BeforePods);
}

#[test]
fn host_veth_gateway_with_strict_arp_after_pods() {
    gateway_under_strict_arp(Placement::HostVeth, When::AfterPods);
}

fn dummy_missing(test: &str) -> bool {
    let missing = !Capabilities::probe().dummy;
    if missing {
        kernel::not_applicable(test, "no dummy device type, so no dummy0 gateway (the host_veth_gateway_* variants run instead)");
    }
    missing
}

/// kube-proxy IPVS strictARP's settings, on `all` and `default` as it writes them.
fn strict_arp(ns: &NetNs) {
    for key in ["all", "default"] {
        ns.sh("sysctl", &["-qw", &format!("net.ipv4.conf.{key}.arp_ignore=1"), &format!("net.ipv4.conf.{key}.arp_announce=2")]);
    }
}

fn gateway_under_strict_arp(placement: Placement, when: When) {
    let vm = Vm::new();
    let mut conf = vm.network("1.0.0");
    conf["gatewayMode"] = json!(match placement {
        Placement::Dummy0 => "device",
        Placement::HostVeth => "hostVeth",
    });
    let (p1, p2) = (vm.pod(), vm.pod());
    if when == When::BeforePods {
        // A pod's namespace starts with the node's IPv4 settings (devconf_inherit_init_net
        // 0), so on a real node the pods have them too.
        for ns in [&vm.ns, &p1.ns, &p2.ns] {
            strict_arp(ns);
        }
    }
    let r1 = vm.add(&conf, &p1).result();
    let r2 = vm.add(&conf, &p2).result();
    let (p1_ip, p2_ip): (Ipv4Addr, Ipv4Addr) = ("10.10.10.19".parse().unwrap(), "10.10.10.20".parse().unwrap());
    let host_veth = r1["interfaces"][0]["name"].as_str().unwrap().to_string();
    let host_mac = r1["interfaces"][0]["mac"].as_str().unwrap().to_string();
    let pod_mac = r1["interfaces"][1]["mac"].as_str().unwrap().to_string();

    // The design note's pod state is untouched: the entry is a neighbour, not a route.
    assert_eq!(p1.ns.ip("route"), "default via 169.254.1.1 dev eth0 \n169.254.1.1 dev eth0 scope link \n");
    let addr = p1.ns.ip("-4 addr show dev eth0");
    assert_eq!(
        addr.lines().filter(|l| l.trim().starts_with("inet ")).collect::<Vec<_>>(),
        ["    inet 10.10.10.19/24 scope global eth0"],
        "{addr}"
    );
    let gw_dev = match placement {
        Placement::Dummy0 => "dummy0",
        Placement::HostVeth => host_veth.as_str(),
    };
    let gw = vm.ns.ip(&format!("-4 addr show dev {gw_dev}"));
    assert!(gw.lines().any(|l| l.trim() == format!("inet 169.254.1.1/32 scope global {gw_dev}")), "{gw}");
    let gateway_entry = format!("169.254.1.1 lladdr {host_mac} PERMANENT");
    assert_eq!(p1.ns.ip("neigh show 169.254.1.1 dev eth0").trim(), gateway_entry);

    if when == When::AfterPods {
        connectivity(&vm, [(&p1, p1_ip), (&p2, p2_ip)]);
        strict_arp(&vm.ns);
        // Forget what was learned under the old settings, so every peer resolves again
        // under the new ones (a flush keeps permanent entries, as expiry does).
        for ns in [&vm.ns, &vm.vrouter, &p1.ns, &p2.ns] {
            ns.ip("neigh flush all");
        }
        assert!(!vm.ns.ip(&format!("neigh show {p1_ip}")).contains("lladdr"), "the VM still knows {p1_ip}");
    }
    connectivity(&vm, [(&p1, p1_ip), (&p2, p2_ip)]);
    // The VM resolved the pod by ARP (arp_announce=2 picks that request's source), and the
    // pod's gateway entry is what ADD put there, unchanged by all that traffic.
    let learned = vm.ns.ip(&format!("neigh show {p1_ip} dev {host_veth}"));
    assert!(learned.contains(&format!("lladdr {pod_mac}")), "VM's entry for {p1_ip}: {learned}");
    assert_eq!(p1.ns.ip("neigh show 169.254.1.1 dev eth0").trim(), gateway_entry);
    vm.check(&conf, &p1, &r1).assert_ok();
    vm.check(&conf, &p2, &r2).assert_ok();

    // CHECK notices a wrong and a missing entry.
    p1.ns.ip("neigh replace 169.254.1.1 lladdr 02:00:00:00:00:99 nud permanent dev eth0");
    let (code, msg, _) = vm.check(&conf, &p1, &r1).error();
    assert_eq!(code, 121, "{msg}");
    assert!(
        msg.contains(&format!(
            "pod eth0 neighbour entry for gateway 169.254.1.1 is lladdr 02:00:00:00:00:99 Permanent, want lladdr {host_mac} permanent"
        )),
        "{msg}"
    );
    p1.ns.ip("neigh del 169.254.1.1 dev eth0");
    let (code, msg, _) = vm.check(&conf, &p1, &r1).error();
    assert_eq!(code, 121, "{msg}");
    assert!(msg.contains(&format!("pod eth0 has no neighbour entry for gateway 169.254.1.1 (want lladdr {host_mac} permanent)")), "{msg}");

    // Without the entry the pod has to ARP for its gateway, and the VM's arp_ignore=1 decides.
    match placement {
        // dummy0 is not the device the request arrives on: no answer. This is the breakage
        // the entry prevents, so it also shows this test would catch its absence.
        Placement::Dummy0 => assert!(ping(&p1.ns, GATEWAY).is_err(), "the VM answered ARP for dummy0's address on {host_veth}"),
        // The host veth holds the gateway itself, so arp_ignore=1 still answers; CHECK wants
        // the permanent entry back all the same.
        Placement::HostVeth => {
            ping(&p1.ns, GATEWAY).unwrap();
            let (code, msg, _) = vm.check(&conf, &p1, &r1).error();
            assert_eq!(code, 121, "{msg}");
            assert!(msg.contains(&format!("gateway 169.254.1.1 is lladdr {host_mac}")), "{msg}");
        }
    }

    vm.del(&conf, &p1, Some(&r1)).assert_ok();
    vm.del(&conf, &p2, Some(&r2)).assert_ok();
}

/// The design note's traffic: pod -> gateway, pod <-> pod, pod -> the VM's uplink address,
/// vrouter -> pod through the VM and back.
fn connectivity(vm: &Vm, pods: [(&Pod, Ipv4Addr); 2]) {
    let [(p1, p1_ip), (p2, p2_ip)] = pods;
    for (p, _) in pods {
        ping(&p.ns, GATEWAY).unwrap();
        ping(&p.ns, vm.uplink_ip).unwrap();
    }
    ping(&p1.ns, p2_ip).unwrap();
    ping(&p2.ns, p1_ip).unwrap();
    vm.route_in_vrouter(p1_ip);
    ping(&vm.vrouter, p1_ip).unwrap();
    ping(&p1.ns, vm.vrouter_ip).unwrap();
}
