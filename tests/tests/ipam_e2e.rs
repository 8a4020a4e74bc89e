//! End to end: veth-route delegating to tcnp-ipam against the real Keystone and Neutron.
//! A pod gets an extra fixed IP of the VM's own Neutron port, shows the design note's state
//! (`10.10.10.x/24`, the two 169.254.1.1 routes), and is reachable from the vrouter through
//! the VM once the router has `<pod>/32 via <VM>` (programmed into the vrouter namespace
//! from Neutron's router routes, standing in for the L3 agent). DEL releases the address
//! and leaves the VM as it was.

use std::net::{IpAddr, Ipv4Addr};

use openstack::Route;
use serde_json::json;
use testbed::openstack::{block_on, shared};
use testbed::probe;
use testbed::vm::Vm;

#[test]
fn pod_gets_a_neutron_address_and_is_reachable_from_the_vrouter() {
    let stack = shared();
    let env = stack.env().clone();
    let vm = Vm::new();
    let link = vm.ns.ip("-o link show eth0");
    let mac = link.split("link/ether ").nth(1).and_then(|s| s.split_whitespace().next()).expect("eth0 MAC").to_string();
    let neutron = stack.neutron();
    let port = block_on(neutron.create_port(
        &env.network_id,
        json!({ "name": "e2e-vm", "mac_address": mac, "device_owner": "compute:nova",
                "fixed_ips": [{ "subnet_id": env.subnet_id, "ip_address": vm.uplink_ip.to_string() }] }),
    ))
    .expect("VM port");
    let _api = stack.expose_in(vm.ns.path()).expect("relay OpenStack into the VM");

    let mut ipam = stack.ipam_config(&env.network_id);
    ipam["dataDir"] = json!(vm.ipam_dir.path());
    let mut conf = vm.network("0.3.1");
    conf["ipam"] = ipam;
    let before = vm.snapshot();

    let pod = vm.pod();
    let out = vm.add(&conf, &pod);
    let result = out.result();
    let cidr = result["ips"][0]["address"].as_str().expect("address").to_string();
    let pod_ip: Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    assert!(cidr.starts_with("10.10.10.") && cidr.ends_with("/24") && pod_ip != vm.uplink_ip, "{cidr}");
    let on_port = block_on(neutron.get_port(&port.id)).unwrap();
    assert!(on_port.fixed_ips.iter().any(|f| f.ip_address == IpAddr::V4(pod_ip)), "{pod_ip} not on the VM port");

    // The design note's pod state.
    assert!(pod.ns.ip("-4 addr show eth0").contains(&format!("inet {cidr} ")), "{}", pod.ns.ip("-4 addr"));
    let routes = pod.ns.ip("route");
    assert!(routes.contains("default via 169.254.1.1 dev eth0"), "{routes}");
    assert!(routes.contains("169.254.1.1 dev eth0 scope link"), "{routes}");

    // The router learns the pod route; the vrouter namespace is programmed from Neutron.
    let route = Route { destination: format!("{pod_ip}/32").parse().unwrap(), nexthop: IpAddr::V4(vm.uplink_ip) };
    let router = block_on(neutron.add_extraroutes(&env.router_id, std::slice::from_ref(&route))).expect("router route");
    for r in &router.routes {
        vm.vrouter.ip(&format!("route replace {} via {}", r.destination, r.nexthop));
    }
    probe::ping(&vm.vrouter, pod_ip).expect("vrouter reaches the pod through the VM");
    let _server = probe::TcpServer::start(&pod.ns, 8080, "pod");
    assert_eq!(probe::tcp_read(&vm.vrouter, pod_ip, 8080).expect("tcp from the vrouter"), "pod");

    vm.del(&conf, &pod, Some(&result)).assert_ok();
    // tcnp-ipam's defaults keep a small warm pool: the pod's address becomes a spare (or
    // is released), and nothing is on the port that the node does not record as a spare.
    let after = block_on(neutron.get_port(&port.id)).unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vm.ipam_dir.path().join(conf["name"].as_str().unwrap()).join("state.json")).unwrap())
            .unwrap();
    assert!(state["attachments"].as_object().is_none_or(|a| a.is_empty()), "{state}");
    let spares: std::collections::HashSet<IpAddr> =
        state["spares"].as_array().into_iter().flatten().map(|l| l["ip"].as_str().unwrap().parse().unwrap()).collect();
    let extra: std::collections::HashSet<IpAddr> =
        after.fixed_ips.iter().map(|f| f.ip_address).filter(|ip| *ip != IpAddr::V4(vm.uplink_ip)).collect();
    assert_eq!(extra, spares, "addresses on the port that are no spare: {:?}", after.fixed_ips);
    assert!(spares.len() <= 2, "the default pool holds at most 2 spares: {spares:?}");
    vm.snapshot().assert_same_as(&before, "after DEL");
    block_on(neutron.remove_extraroutes(&env.router_id, &[route])).unwrap();
    block_on(neutron.delete_port(&port.id)).unwrap();
}
