//! tcnp-ipam on dual-stack networks against the real Keystone and Neutron: a pod gets one
//! fixed IP of each family on the VM port (with the subnets' prefixes and gateways, in every
//! spec version), DEL and GC release both, concurrent ADDs on two nodes get distinct IPv6
//! addresses, lost answers leak nothing, the warm pool holds spares of each family, and a
//! network whose IPv6 subnet is SLAAC gives a config error that leaves nothing when IPv6 is
//! asked for (IPv4 only when it is not). Node blocks come in both families.
//!
//! Every network here is the test's own: a port on a network with a stateful IPv6 subnet
//! gets an IPv6 fixed IP by itself, which the shared tenant network's tests do not expect.

mod ipam_support;

use std::collections::HashSet;
use std::net::IpAddr;

use ipam_support::Node;
use ipnet::IpNet;
use serde_json::{json, Value};
use testbed::netns::unique;
use testbed::openstack::{block_on, shared, Fault, FaultProxy, Stack};

/// A network with an IPv4 subnet and an IPv6 one of `mode`, deleted on drop (after its
/// nodes, which are declared after it).
struct DualNet<'a> {
    stack: &'a Stack,
    id: String,
    v6_subnet: String,
    /// The IPv6 subnet's gateway as Neutron chose it (for IPv6 the subnet-router anycast
    /// address, `<prefix>::`, not the first host as for IPv4).
    v6_gateway: String,
}

impl<'a> DualNet<'a> {
    fn new(stack: &'a Stack, v4: &str, v6: &str, mode: &str) -> DualNet<'a> {
        let (id, _) = stack.create_network(&unique("dual"), v4.parse().unwrap(), None).expect("network");
        let v6_subnet = stack.add_ipv6_subnet(&id, v6.parse().unwrap(), mode).expect("IPv6 subnet");
        let gateway = block_on(stack.neutron().get_subnet(&v6_subnet)).expect("subnet").gateway_ip.expect("a gateway");
        DualNet { stack, id, v6_subnet, v6_gateway: gateway.to_string() }
    }
}

impl Drop for DualNet<'_> {
    fn drop(&mut self) {
        let _ = block_on(self.stack.neutron().delete_network(&self.id));
    }
}

/// The addresses of a result, IPv4 first as tcnp-ipam returns them.
fn addresses(result: &Value) -> Vec<IpAddr> {
    let ips = result["ips"].as_array().unwrap_or_else(|| panic!("no ips: {result}"));
    ips.iter().map(|ip| ip["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap()).collect()
}

/// The VM's own addresses: the IPv4 primary and the IPv6 address Neutron gave the port.
fn own(node: &Node) -> HashSet<IpAddr> {
    node.vm.port.fixed_ips.iter().map(|f| f.ip_address).collect()
}

/// The port holds the VM's own addresses and nothing else.
fn assert_only_own(node: &Node, context: &str) {
    let on_port: HashSet<IpAddr> = node.port_ips().into_iter().collect();
    assert_eq!(on_port, own(node), "{context}: the port holds more than the VM's own\n{}", node.log());
}

/// The node's IPAM config asking for both families (without `ipFamilies`, IPv4 only).
fn dual_ipam(node: &Node) -> Value {
    let mut ipam = node.ipam();
    ipam["neutronConf"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
    ipam
}

fn gc_conf(node: &Node, ipam: Value, valid: Value) -> Value {
    let mut conf = node.conf(ipam);
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = valid;
    conf
}

#[test]
fn a_dual_stack_add_gets_a_fixed_ip_of_each_family_and_del_releases_both() {
    let stack = shared();
    let net = DualNet::new(stack, "10.91.0.0/24", "fd00:91::/64", "dhcpv6-stateful");
    let node = Node::on(stack, &net.id);
    let primary6 = node.vm.port.fixed_ips.iter().find(|f| f.ip_address.is_ipv6()).expect("the VM port's own IPv6 address").ip_address;
    let mut ipam = dual_ipam(&node);
    ipam["routes"] = json!([{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }, { "dst": "fd00:99::/64", "gw": "fd00:91::1" }]);
    let conf = node.conf(ipam.clone());
    let cid = unique("c");
    let result = node.run("ADD", &cid, &conf).result();
    let got = addresses(&result);
    assert_eq!(got.len(), 2, "{result}");
    let (v4, v6) = (got[0], got[1]);
    assert!(v4.is_ipv4() && v6.is_ipv6(), "{result}");
    assert!("fd00:91::/64".parse::<IpNet>().unwrap().contains(&v6), "{v6}");
    assert_eq!(result["ips"][0]["address"], format!("{v4}/24"));
    assert_eq!(result["ips"][0]["gateway"], "10.91.0.1");
    assert_eq!(result["ips"][1]["address"], format!("{v6}/64"));
    assert_eq!(result["ips"][1]["gateway"], net.v6_gateway);
    assert_eq!(result["routes"], json!([{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }, { "dst": "fd00:99::/64", "gw": "fd00:91::1" }]));
    // Both are fixed IPs of the VM port, neither is the VM's own, and the IPv6 one is of the
    // stateful subnet.
    let port = node.port();
    let on_port: HashSet<IpAddr> = port.fixed_ips.iter().map(|f| f.ip_address).collect();
    assert!(on_port.contains(&v4) && on_port.contains(&v6), "{on_port:?}");
    assert!(!own(&node).contains(&v4) && !own(&node).contains(&v6));
    assert!(port.fixed_ips.iter().any(|f| f.ip_address == v6 && f.subnet_id == net.v6_subnet), "{:?}", port.fixed_ips);
    assert_eq!(on_port.len(), 4, "VM's two and the pod's two: {on_port:?}");
    assert!(port.tags.contains(&format!("veth-route:primary={}", node.primary)), "{:?}", port.tags);
    assert!(port.tags.contains(&format!("veth-route:primary6={primary6}")), "{:?}", port.tags);

    // The same attachment again: the same two addresses, nothing new on the port.
    assert_eq!(addresses(&node.run("ADD", &cid, &conf).result()), got);
    assert_eq!(node.port_ips().len(), 4);

    // CHECK sees both; DEL releases both in one go and is idempotent.
    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    node.run("CHECK", &cid, &check).assert_ok();
    node.run("DEL", &cid, &conf).assert_ok();
    assert_only_own(&node, "");
    assert_eq!(node.recorded(), 0);
    node.run("DEL", &cid, &conf).assert_ok();

    // State lost: prevResult's two addresses are released, never the VM's own.
    let cid = unique("c");
    let result = node.run("ADD", &cid, &conf).result();
    std::fs::remove_dir_all(node.data.path().join("ipamtest")).unwrap();
    let mut del = conf.clone();
    del["prevResult"] = result;
    del["prevResult"]["ips"].as_array_mut().unwrap().push(json!({ "address": format!("{primary6}/64") }));
    node.run("DEL", &cid, &del).assert_ok();
    assert_only_own(&node, "");
}

/// Lost answers (a FAKE relay, `FaultProxy`, in front of the real Neutron loses the answer
/// to an update Neutron applied): both families' addresses are recorded, or both released,
/// and the port holds nothing the node does not know.
#[test]
fn dual_stack_updates_whose_answers_are_lost_leave_nothing_unrecorded() {
    let stack = shared();
    let net = DualNet::new(stack, "10.90.0.0/24", "fd00:90::/64", "dhcpv6-stateful");
    let node = Node::on(stack, &net.id);
    let proxy = FaultProxy::start(node.ns(), &stack.env().neutron_url).expect("fault proxy");
    let mut ipam = dual_ipam(&node);
    ipam["openstackConf"]["neutronUrl"] = json!(proxy.url());
    let conf = node.conf(ipam);
    // Found and marked first, so that the faults meet the fixed-IP updates.
    let cid = unique("c");
    node.run("ADD", &cid, &conf).result();
    node.run("DEL", &cid, &conf).assert_ok();
    for fault in [Fault::GatewayTimeout, Fault::ResetAfterSend, Fault::DropResponse] {
        let cid = unique("c");
        proxy.fail_next_writes(&[fault]);
        let got = addresses(&node.run("ADD", &cid, &conf).result());
        assert_eq!(proxy.pending_faults(), 0, "{fault:?} was not met");
        assert_eq!(got.len(), 2, "{fault:?}: {got:?}");
        let on_port: HashSet<IpAddr> = node.port_ips().into_iter().collect();
        let expected: HashSet<IpAddr> = own(&node).into_iter().chain(got.iter().copied()).collect();
        assert_eq!(on_port, expected, "{fault:?}: port and records differ\n{}", node.log());
        assert_eq!(node.state()["attachments"][format!("{cid}/eth0")].as_array().map(Vec::len), Some(2), "{}", node.state());
        assert!(node.state()["pending"].is_null(), "{fault:?}: journal left: {}", node.state());
        proxy.fail_next_writes(&[fault]);
        node.run("DEL", &cid, &conf).assert_ok();
        assert_only_own(&node, &format!("{fault:?}"));
        assert_eq!(node.recorded(), 0);
    }
}

#[test]
fn the_result_renders_both_families_in_every_spec_version() {
    let stack = shared();
    let net = DualNet::new(stack, "10.92.0.0/24", "fd00:92::/64", "dhcpv6-stateful");
    let node = Node::on(stack, &net.id);
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let mut conf = node.conf(dual_ipam(&node));
        conf["cniVersion"] = json!(version);
        let cid = unique("c");
        let result = node.run("ADD", &cid, &conf).result();
        assert_eq!(result["cniVersion"], version);
        let ips = result["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 2, "{result}");
        if version.starts_with("0.") {
            assert_eq!((ips[0]["version"].as_str(), ips[1]["version"].as_str()), (Some("4"), Some("6")), "{result}");
        } else {
            assert!(ips.iter().all(|ip| ip.get("version").is_none()), "{result}");
        }
        assert!(ips[1]["address"].as_str().unwrap().ends_with("/64") && ips[1]["gateway"] == net.v6_gateway.as_str(), "{result}");
        // Parsed back by the workspace's own model, as a chained plugin reads it.
        let parsed = cni::CniResult::parse(&result).unwrap();
        assert_eq!(parsed.ips.iter().filter(|ip| ip.address.addr().is_ipv6()).count(), 1);
        node.run("DEL", &cid, &conf).assert_ok();
    }
    assert_only_own(&node, "");
}

#[test]
fn gc_releases_both_addresses_of_vanished_attachments() {
    let stack = shared();
    let net = DualNet::new(stack, "10.93.0.0/24", "fd00:93::/64", "dhcpv6-stateful");
    let node = Node::on(stack, &net.id);
    let conf = node.conf(dual_ipam(&node));
    let (keep, gone) = (unique("c"), unique("c"));
    let kept = addresses(&node.run("ADD", &keep, &conf).result());
    let lost = addresses(&node.run("ADD", &gone, &conf).result());
    node.run("GC", "", &gc_conf(&node, dual_ipam(&node), json!([{ "containerID": keep, "ifname": "eth0" }]))).assert_ok();
    let ips: HashSet<IpAddr> = node.port_ips().into_iter().collect();
    assert!(kept.iter().all(|a| ips.contains(a)), "{kept:?} must stay: {ips:?}");
    assert!(lost.iter().all(|a| !ips.contains(a)), "{lost:?} must go: {ips:?}");
    assert_eq!(node.recorded(), 1);
    node.run("GC", "", &gc_conf(&node, dual_ipam(&node), json!([]))).assert_ok();
    assert_only_own(&node, "");
}

/// Two nodes, eight concurrent ADDs each, at the same time: distinct addresses of both
/// families within a node (one lock, If-Match) and across nodes (Neutron's allocation).
#[test]
fn concurrent_dual_stack_adds_on_two_nodes_get_distinct_ipv6_addresses() {
    let stack = shared();
    let net = DualNet::new(stack, "10.94.0.0/24", "fd00:94::/64", "dhcpv6-stateful");
    let nodes = [Node::on(stack, &net.id), Node::on(stack, &net.id)];
    let confs: Vec<Value> = nodes.iter().map(|n| n.conf(dual_ipam(n))).collect();
    let cids: Vec<Vec<String>> = nodes.iter().map(|_| (0..8).map(|_| unique("c")).collect()).collect();
    let got: Vec<Vec<Vec<IpAddr>>> = std::thread::scope(|s| {
        let hs: Vec<Vec<_>> = nodes
            .iter()
            .zip(&confs)
            .zip(&cids)
            .map(|((node, conf), cids)| cids.iter().map(|cid| s.spawn(move || addresses(&node.run("ADD", cid, conf).result()))).collect())
            .collect();
        hs.into_iter().map(|node| node.into_iter().map(|h| h.join().expect("ADD thread")).collect()).collect()
    });
    let all: Vec<&Vec<IpAddr>> = got.iter().flatten().collect();
    let v4: HashSet<IpAddr> = all.iter().map(|a| a[0]).collect();
    let v6: HashSet<IpAddr> = all.iter().map(|a| a[1]).collect();
    assert_eq!((v4.len(), v6.len()), (16, 16), "duplicates among {got:?}");
    assert!(v6.iter().all(IpAddr::is_ipv6));
    for (node, got) in nodes.iter().zip(&got) {
        let on_port: HashSet<IpAddr> = node.port_ips().into_iter().collect();
        let mine: HashSet<IpAddr> = got.iter().flatten().copied().collect();
        assert_eq!(on_port, own(node).union(&mine).copied().collect(), "each node's port holds its own and its pods' addresses");
    }
    std::thread::scope(|s| {
        for ((node, conf), cids) in nodes.iter().zip(&confs).zip(&cids) {
            for cid in cids {
                s.spawn(move || node.run("DEL", cid, conf).assert_ok());
            }
        }
    });
    for node in &nodes {
        assert_only_own(node, "after DEL");
    }
}

#[test]
fn the_default_pool_keeps_spares_of_each_family() {
    let stack = shared();
    let net = DualNet::new(stack, "10.95.0.0/24", "fd00:95::/64", "dhcpv6-stateful");
    let node = Node::on(stack, &net.id);
    let mut ipam = node.default_ipam();
    ipam["neutronConf"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
    let conf = node.conf(ipam);
    let spares =
        |v4: bool| node.state()["spares"].as_array().unwrap().iter().filter(|l| l["ip"].as_str().unwrap().contains('.') == v4).count();
    let first = unique("c");
    node.run("ADD", &first, &conf).result();
    // One PUT: the pod's two addresses and two spares of each family.
    assert_eq!(node.port_ips().len(), 2 + 2 + 4);
    assert_eq!((spares(true), spares(false)), (2, 2));
    let rev = node.port().revision_number;
    let second = unique("c");
    let got = addresses(&node.run("ADD", &second, &conf).result());
    assert_eq!(got.len(), 2);
    assert_eq!(node.port().revision_number, rev, "a spare-served dual-stack ADD must not write to Neutron");
    for cid in [&first, &second] {
        node.run("DEL", cid, &conf).assert_ok();
    }
    // DEL keeps at most two spares of each family.
    assert_eq!((spares(true), spares(false)), (2, 2));
    let mut off = node.default_ipam();
    off["pool"] = json!({ "max": 0 });
    node.run("GC", "", &gc_conf(&node, off, json!([]))).assert_ok();
    assert_only_own(&node, "");
}

#[test]
fn a_slaac_ipv6_subnet_is_refused_when_ipv6_is_asked_for_and_left_alone_otherwise() {
    let stack = shared();
    for mode in ["slaac", "dhcpv6-stateless"] {
        let net = DualNet::new(stack, "10.96.0.0/24", "fd00:96::/64", mode);
        let node = Node::on(stack, &net.id);
        let before = node.port();
        let mut ipam = node.ipam();
        ipam["neutronConf"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
        let (code, msg, _) = node.run("ADD", &unique("c"), &node.conf(ipam)).error();
        assert_eq!(code, 7, "{msg}");
        assert!(msg.contains(&net.v6_subnet) && msg.contains(mode) && msg.contains("dhcpv6-stateful"), "{msg}");
        // Nothing happened: the port is as it was (not even tagged), no state was written.
        let after = node.port();
        assert_eq!(after.revision_number, before.revision_number, "the port was changed: {:?}", after);
        assert_eq!(node.state(), Value::Null, "state written: {}", node.state());

        // Without ipFamilies (as users of IPv4-only versions have it): IPv4 only, as before.
        let conf = node.conf(node.ipam());
        let cid = unique("c");
        let got = addresses(&node.run("ADD", &cid, &conf).result());
        assert!(got.len() == 1 && got[0].is_ipv4(), "{got:?}");
        assert_eq!(node.port_ips().len(), before.fixed_ips.len() + 1);
        node.run("DEL", &cid, &conf).assert_ok();
        assert_eq!(node.port_ips().len(), before.fixed_ips.len());
    }
}

#[test]
fn beside_a_slaac_subnet_the_stateful_one_serves_pods_and_the_slaac_address_stays() {
    let stack = shared();
    let net = DualNet::new(stack, "10.97.0.0/24", "fd00:97:1::/64", "slaac");
    let stateful = stack.add_ipv6_subnet(&net.id, "fd00:97:2::/64".parse().unwrap(), "dhcpv6-stateful").unwrap();
    let node = Node::on(stack, &net.id);
    let before = node.port();
    let slaac_own: Vec<IpAddr> = before.fixed_ips.iter().filter(|f| f.subnet_id == net.v6_subnet).map(|f| f.ip_address).collect();
    assert_eq!(slaac_own.len(), 1, "Neutron gives every port a SLAAC address: {:?}", before.fixed_ips);
    let mut ipam = node.ipam();
    ipam["neutronConf"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
    let conf = node.conf(ipam);
    let cid = unique("c");
    let got = addresses(&node.run("ADD", &cid, &conf).result());
    assert_eq!(got.len(), 2);
    assert!("fd00:97:2::/64".parse::<IpNet>().unwrap().contains(&got[1]), "{got:?}");
    let port = node.port();
    assert!(port.fixed_ips.iter().any(|f| f.ip_address == got[1] && f.subnet_id == stateful));
    assert!(port.fixed_ips.iter().any(|f| f.ip_address == slaac_own[0]), "the SLAAC address must stay: {:?}", port.fixed_ips);
    node.run("DEL", &cid, &conf).assert_ok();
    assert_only_own(&node, "");
}

#[test]
fn a_dual_stack_network_stays_ipv4_only_unless_ipv6_is_asked_for() {
    let stack = shared();
    let net = DualNet::new(stack, "10.98.0.0/24", "fd00:98::/64", "dhcpv6-stateful");
    let node = Node::on(stack, &net.id);
    let mut ipv4 = node.ipam();
    ipv4["neutronConf"]["ipFamilies"] = json!(["IPv4"]);
    // Without ipFamilies (the config of every user so far) as with ["IPv4"].
    for ipam in [node.ipam(), ipv4] {
        let conf = node.conf(ipam);
        let cid = unique("c");
        let got = addresses(&node.run("ADD", &cid, &conf).result());
        assert!(got.len() == 1 && got[0].is_ipv4(), "{got:?}");
        assert_eq!(node.port_ips().len(), 3);
        assert!(!node.port().tags.iter().any(|t| t.starts_with("veth-route:primary6=")));
        node.run("DEL", &cid, &conf).assert_ok();
    }
    let cid = unique("c");
    // The node's state knows no IPv6 subnet now; asking for IPv6 looks the port up again.
    let mut both = node.ipam();
    both["neutronConf"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
    let conf = node.conf(both);
    let got = addresses(&node.run("ADD", &cid, &conf).result());
    assert!(got.len() == 2 && got[1].is_ipv6(), "{got:?}");
    node.run("DEL", &cid, &conf).assert_ok();
}

/// Node blocks serve both families: two nodes claiming at once each get a /28 and a /124
/// of their own (a /124 picked from the node's hash in the /64), every pod address lies in
/// its node's blocks, DEL keeps the blocks and GC gives them back.
#[test]
fn node_blocks_of_both_families_are_claimed_per_node_and_released_by_gc() {
    let stack = shared();
    let net = DualNet::new(stack, "10.99.0.0/24", "fd00:99::/64", "dhcpv6-stateful");
    let nodes = [Node::on(stack, &net.id), Node::on(stack, &net.id)];
    let blocks_ipam = |n: &Node| {
        let mut ipam = dual_ipam(n);
        ipam["nodeBlocks"] = json!({ "prefixLength": 28 });
        ipam
    };
    let confs: Vec<Value> = nodes.iter().map(|n| n.conf(blocks_ipam(n))).collect();
    let cids: Vec<Vec<String>> = nodes.iter().map(|_| (0..3).map(|_| unique("c")).collect()).collect();
    let got: Vec<Vec<Vec<IpAddr>>> = std::thread::scope(|s| {
        let hs: Vec<_> = nodes
            .iter()
            .zip(&confs)
            .zip(&cids)
            .map(|((node, conf), cids)| s.spawn(move || cids.iter().map(|cid| addresses(&node.run("ADD", cid, conf).result())).collect()))
            .collect();
        hs.into_iter().map(|h| h.join().expect("ADD thread")).collect()
    });
    let mut all_blocks = HashSet::new();
    for (node, got) in nodes.iter().zip(&got) {
        let blocks: Vec<IpNet> = node.state()["blocks"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().parse().unwrap()).collect();
        let lens: Vec<u8> = blocks.iter().map(IpNet::prefix_len).collect();
        assert_eq!(lens, [28, 124], "one block of each family: {}", node.state());
        assert!(blocks.iter().all(|b| all_blocks.insert(*b)), "a block claimed by both nodes: {blocks:?}");
        for ip in got.iter().flatten() {
            assert!(blocks.iter().any(|b| b.contains(ip)), "{ip} outside {blocks:?}");
        }
        // The port holds the VM's own addresses and both whole blocks, nothing else.
        let extra: HashSet<IpAddr> = node.port_ips().into_iter().filter(|a| !own(node).contains(a)).collect();
        assert_eq!(extra.len(), 32, "{extra:?}");
        assert!(extra.iter().all(|a| blocks.iter().any(|b| b.contains(a))), "{extra:?} outside {blocks:?}");
    }
    for ((node, conf), cids) in nodes.iter().zip(&confs).zip(&cids) {
        for cid in cids {
            node.run("DEL", cid, conf).assert_ok();
        }
        assert_eq!(node.port_ips().len(), own(node).len() + 32, "DEL keeps the blocks");
        node.run("GC", "", &gc_conf(node, blocks_ipam(node), json!([]))).assert_ok();
        assert_only_own(node, "after GC");
        assert!(node.state()["blocks"].as_array().unwrap().is_empty(), "{}", node.state());
    }
}
