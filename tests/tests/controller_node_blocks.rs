//! End to end with the real tcnp-ipam: 40 pods over 3 VMs allocated with node-affine
//! blocks (`"nodeBlocks": {"prefixLength": 28}`) fit under the default router_route quota
//! of 30 with room to spare, every pod routed to its own VM and nothing else captured.
//! (The same 40 pods as /32 routes do not fit: see `controller_routes`.)

mod controller_support;
mod ipam_support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use controller_support::{lookup, status_of, Lab};
use ipam_support::Node;
use serde_json::json;
use testbed::openstack::shared;

#[test]
fn forty_pods_in_node_affine_blocks_fit_under_the_quota() {
    let stack = shared();
    let lab = Lab::new(stack, "vrc-blocks", "10.70.0.0/24");
    let nodes: Vec<Node> = (0..3).map(|_| Node::on(stack, &lab.network_id)).collect();
    let mut owner: BTreeMap<Ipv4Addr, Ipv4Addr> = BTreeMap::new();
    // Round-robin, as a scheduler spreads pods: without blocks these would interleave.
    for i in 0..40 {
        let node = &nodes[i % 3];
        let mut ipam = node.ipam();
        ipam["neutronConf"]["networks"] = json!([lab.network_id]);
        ipam["nodeBlocks"] = json!({"prefixLength": 28});
        let out = node.run("ADD", &format!("blocks-pod-{i}"), &node.conf(ipam));
        let ip = ipam_support::address_of(&out.result());
        let (IpAddr::V4(ip), IpAddr::V4(vm)) = (ip, node.primary) else { panic!("IPv4 expected") };
        assert!(owner.insert(ip, vm).is_none(), "{ip} handed out twice");
    }

    let out = lab.controller_once(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st = status_of(&out);
    assert_eq!(st["routers"][0]["refused"].as_array().unwrap().len(), 0, "{st}");
    let routes = lab.routes();
    assert!(routes.len() <= 6, "3 VMs x at most 2 blocks of 16 for 14 pods each: {routes:?}");
    for (pod, vm) in &owner {
        assert_eq!(lookup(&routes, *pod), Some(*vm), "pod {pod}");
    }
    // Blocks hold only their VM's addresses: no route captures another VM's pod or primary.
    for (dst, nexthop) in &routes {
        for node in &nodes {
            let IpAddr::V4(primary) = node.primary else { unreachable!() };
            assert!(!dst.contains(&primary), "{dst} via {nexthop} covers VM address {primary}");
        }
        for (pod, vm) in &owner {
            if dst.contains(pod) {
                assert_eq!(vm, nexthop, "{dst} via {nexthop} captures {pod} of {vm}");
            }
        }
    }
}
