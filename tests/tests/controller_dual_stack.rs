//! vrouter-route-controller on a dual-stack network against the real Keystone and Neutron:
//! pods that the real tcnp-ipam gives an address of each family (`ipFamilies` IPv4+IPv6)
//! get a /32 via the VM's IPv4 address and a /128 via its IPv6 one (tcnp-ipam's `primary6`
//! tag), both go when the pods go, and a restart writes nothing. A port without a usable
//! `primary6` keeps its IPv4 routes and gets no IPv6 ones, and no VM gets IPv6 routes
//! while the router has no interface on the IPv6 subnet (Neutron would refuse them). Node
//! blocks of both families become one route each.
//!
//! Traffic over the routes is not tested here: the router is Neutron's API, with no
//! datapath in this test bed; plugin_dual_stack carries IPv6 from a vrouter namespace
//! routing as these routes say.

mod controller_support;
mod ipam_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use controller_support::{lookup, status_of, Lab, Vm};
use ipam_support::Node;
use ipnet::Ipv6Net;
use serde_json::{json, Value};
use testbed::netns::unique;
use testbed::openstack::{block_on, shared};

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => panic!("{ip} is not IPv4"),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(ip) => ip,
        IpAddr::V4(_) => panic!("{ip} is not IPv6"),
    }
}

/// The /128 routes `pods` (pod -> VM's IPv6 address) should have, and nothing else.
fn host_routes6(pods: &BTreeMap<Ipv6Addr, Ipv6Addr>) -> BTreeSet<(Ipv6Net, Ipv6Addr)> {
    pods.iter().map(|(pod, vm)| (Ipv6Net::from(*pod), *vm)).collect()
}

fn ledger_tags(lab: &Lab) -> Vec<String> {
    lab.router_tags().into_iter().filter(|t| t.starts_with("vrouter-route:")).collect()
}

fn once_ok(lab: &Lab, extra: &[&str]) -> Value {
    let out = lab.controller_once(extra);
    assert!(out.status.success(), "controller pass failed: {}", String::from_utf8_lossy(&out.stderr));
    status_of(&out)
}

#[test]
fn dual_stack_pods_from_tcnp_ipam_get_32s_and_128s_via_their_vms_own_addresses() {
    let stack = shared();
    let mut lab = Lab::new(stack, "vrc-dual", "10.74.0.0/24");
    lab.add_ipv6("fd00:74::/64");
    lab.attach_ipv6();
    // Created after the IPv6 subnet: Neutron gives each VM port an address of it, the VM's own.
    let nodes: Vec<Node> = (0..2).map(|_| Node::on(stack, &lab.network_id)).collect();
    let mut pods4: BTreeMap<Ipv4Addr, Ipv4Addr> = BTreeMap::new();
    let mut pods6: BTreeMap<Ipv6Addr, Ipv6Addr> = BTreeMap::new();
    let mut attachments: Vec<(usize, String, Ipv4Addr, Ipv6Addr)> = vec![];
    for (k, node) in nodes.iter().enumerate() {
        let mut ipam = node.ipam();
        ipam["neutronConf"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
        let conf = node.conf(ipam);
        for _ in 0..2 {
            let cid = unique("c");
            let result = node.run("ADD", &cid, &conf).result();
            let ips: Vec<IpAddr> = result["ips"]
                .as_array()
                .unwrap()
                .iter()
                .map(|ip| ip["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(ips.len(), 2, "{result}");
            let own6 = node.vm.port.fixed_ips.iter().find(|f| f.ip_address.is_ipv6()).expect("the VM's IPv6 address").ip_address;
            pods4.insert(v4(ips[0]), v4(node.primary));
            pods6.insert(v6(ips[1]), v6(own6));
            attachments.push((k, cid, v4(ips[0]), v6(ips[1])));
        }
        // The contract the controller reads: tcnp-ipam names the VM's IPv6 address.
        let tags = node.port().tags;
        assert!(tags.iter().any(|t| t.starts_with("veth-route:primary6=")), "{tags:?}");
    }

    let st = once_ok(&lab, &[]);
    let r = &st["routers"][0];
    assert_eq!(r["desired"], r["applied"], "{st}");
    let routes = lab.routes();
    for (pod, vm) in &pods4 {
        assert_eq!(lookup(&routes, *pod), Some(*vm), "pod {pod} should route to {vm}: {routes:?}");
    }
    assert_eq!(lab.routes6(), host_routes6(&pods6), "one /128 per IPv6 pod via its VM's IPv6 address");
    // The ledger on the real router: IPv4 and IPv6 records in tags of their own.
    assert!(ledger_tags(&lab).len() >= 2, "{:?}", ledger_tags(&lab));

    // A restarted controller finds everything in place: Neutron keeps the IPv6 routes as
    // sent, so nothing is re-added.
    let revision = lab.revision();
    once_ok(&lab, &[]);
    assert_eq!(lab.revision(), revision, "restart caused writes");

    // One pod of each node goes (DEL releases both of its addresses): both of its routes go.
    let mut gone = vec![];
    for k in 0..nodes.len() {
        let i = attachments.iter().position(|(n, ..)| *n == k).unwrap();
        let (k, cid, a4, a6) = attachments.remove(i);
        let mut ipam = nodes[k].ipam();
        ipam["neutronConf"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
        nodes[k].run("DEL", &cid, &nodes[k].conf(ipam)).assert_ok();
        pods4.remove(&a4);
        pods6.remove(&a6);
        gone.push((a4, a6));
    }
    once_ok(&lab, &[]);
    let routes = lab.routes();
    for (a4, _) in &gone {
        assert_eq!(lookup(&routes, *a4), None, "deleted pod {a4} still routed: {routes:?}");
    }
    for (pod, vm) in &pods4 {
        assert_eq!(lookup(&routes, *pod), Some(*vm), "pod {pod}");
    }
    assert_eq!(lab.routes6(), host_routes6(&pods6));

    // --release takes back both families' routes and every ledger tag.
    once_ok(&lab, &["--release"]);
    assert!(lab.all_routes().is_empty(), "{:?}", lab.all_routes());
    assert!(ledger_tags(&lab).is_empty(), "{:?}", ledger_tags(&lab));
}

/// tcnp-ipam's node blocks in both families: each node's IPv6 pods sit in one /124 of its
/// own, which the controller routes as one route via the VM's IPv6 address, as it does the
/// /28 via its IPv4 one.
#[test]
fn node_blocks_of_both_families_become_one_route_each() {
    let stack = shared();
    let mut lab = Lab::new(stack, "vrc-dual-blocks", "10.75.0.0/24");
    lab.add_ipv6("fd00:75::/64");
    lab.attach_ipv6();
    let nodes: Vec<Node> = (0..2).map(|_| Node::on(stack, &lab.network_id)).collect();
    let mut pods6: BTreeMap<Ipv6Addr, Ipv6Addr> = BTreeMap::new();
    for node in &nodes {
        let mut ipam = node.ipam();
        ipam["neutronConf"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
        ipam["nodeBlocks"] = json!({"prefixLength": 28});
        let conf = node.conf(ipam);
        let own6 = node.vm.port.fixed_ips.iter().find(|f| f.ip_address.is_ipv6()).expect("the VM's IPv6 address").ip_address;
        for _ in 0..3 {
            let result = node.run("ADD", &unique("c"), &conf).result();
            let pod6 = result["ips"][1]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap();
            pods6.insert(v6(pod6), v6(own6));
        }
    }
    let st = once_ok(&lab, &[]);
    assert_eq!(st["routers"][0]["desired"], st["routers"][0]["applied"], "{st}");
    let routes6 = lab.routes6();
    assert_eq!(routes6.len(), 2, "one IPv6 route per node's block: {routes6:?}");
    assert!(routes6.iter().all(|(d, _)| d.prefix_len() == 124), "{routes6:?}");
    for (pod, vm) in &pods6 {
        let via: Vec<Ipv6Addr> = routes6.iter().filter(|(d, _)| d.contains(pod)).map(|(_, n)| *n).collect();
        assert_eq!(via, [*vm], "pod {pod} must route to its own VM {vm} only: {routes6:?}");
    }
    // No block covers a VM's own address.
    for node in &nodes {
        for own in node.vm.port.fixed_ips.iter().filter_map(|f| if let IpAddr::V6(a) = f.ip_address { Some(a) } else { None }) {
            assert!(!routes6.iter().any(|(d, _)| d.contains(&own)), "{own} captured: {routes6:?}");
        }
    }
    assert_eq!(lab.routes().len(), 2, "and one IPv4 /28 per node: {:?}", lab.routes());
    once_ok(&lab, &["--release"]);
    assert!(lab.all_routes().is_empty(), "{:?}", lab.all_routes());
}

#[test]
fn without_a_usable_primary6_or_an_ipv6_router_interface_a_port_keeps_its_ipv4_routes_only() {
    let mut lab = Lab::new(shared(), "vrc-dual-tags", "10.75.0.0/24");
    lab.add_ipv6("fd00:75::/64");
    let (a, b, c) = (lab.ip(11), lab.ip(12), lab.ip(13));
    let (a6, b6, c6) = (lab.ip6(0x11), lab.ip6(0x12), lab.ip6(0x13));
    let vm_a = lab.vm_dual("vm-a", a, a6, Some(a6), "fa:16:3e:75:00:01");
    // No primary6 tag: as tcnp-ipam without ipFamilies IPv6 leaves the port.
    let vm_b = lab.vm_dual("vm-b", b, b6, None, "fa:16:3e:75:00:02");
    // A primary6 tag naming an address that is not on the port.
    let vm_c = lab.vm_dual("vm-c", c, c6, Some(lab.ip6(0x99)), "fa:16:3e:75:00:03");
    let pods = |vm: &Vm, n: u32| -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
        let base = 20 + 10 * (u32::from(vm.primary.octets()[3]) - 11);
        ((base..base + n).map(|i| lab.ip(i)).collect(), (base..base + n).map(|i| lab.ip6(u128::from(i))).collect())
    };
    let mut want4 = BTreeSet::new();
    for vm in [&vm_a, &vm_b, &vm_c] {
        let (p4, p6) = pods(vm, 2);
        lab.set_dual_pods(vm, &p4, &p6);
        want4.extend(p4.iter().map(|ip| ((*ip).into(), vm.primary)));
    }
    let want6_a: BTreeSet<(Ipv6Net, Ipv6Addr)> = pods(&vm_a, 2).1.into_iter().map(|ip| (ip.into(), a6)).collect();

    // The router has no interface on the IPv6 subnet yet: Neutron would refuse any IPv6
    // next hop, so the pass routes IPv4 only, and succeeds.
    once_ok(&lab, &["--no-aggregate"]);
    assert_eq!(lab.routes(), want4);
    assert!(lab.routes6().is_empty(), "{:?}", lab.routes6());

    // With the interface: /128s for vm-a only; vm-b (no tag) and vm-c (a wrong one) keep
    // their IPv4 routes, and vm-c's is named in a warning.
    lab.attach_ipv6();
    let out = lab.controller_once(&["--no-aggregate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(lab.routes(), want4);
    assert_eq!(lab.routes6(), want6_a);
    assert!(stderr.contains(&format!("no IPv6 routes for port {}", vm_c.port_id)), "{stderr}");
    assert!(!stderr.contains(&vm_b.port_id), "a port without primary6 is normal, not a warning: {stderr}");

    // tcnp-ipam tags vm-b (IPv6 asked for): its /128s come. vm-a's IPv6 pods go while its
    // IPv4 ones stay: only its /128s go.
    block_on(lab.neutron().add_port_tag(&vm_b.port_id, &format!("veth-route:primary6={b6}"))).unwrap();
    lab.set_dual_pods(&vm_a, &pods(&vm_a, 2).0, &[]);
    once_ok(&lab, &["--no-aggregate"]);
    let want6_b: BTreeSet<(Ipv6Net, Ipv6Addr)> = pods(&vm_b, 2).1.into_iter().map(|ip| (ip.into(), b6)).collect();
    assert_eq!(lab.routes(), want4);
    assert_eq!(lab.routes6(), want6_b);

    once_ok(&lab, &["--release"]);
    assert!(lab.all_routes().is_empty(), "{:?}", lab.all_routes());
    assert!(ledger_tags(&lab).is_empty(), "{:?}", ledger_tags(&lab));
}
