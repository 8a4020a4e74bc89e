//! tcnp-ipam re-verifies what it remembers about the node on every ADD, with the one read
//! of the port the ADD makes anyway, and repairs it: tags stripped by Terraform or Heat
//! come back, a recorded VM address that is not the uplink's is corrected, spares taken
//! off the port by someone else are never handed out. The VM's own address is the
//! uplink's, never "the first fixed IP" (Neutron sorts them as strings). A config without
//! the network's MTU is pointed out.

mod ipam_support;

use std::net::IpAddr;

use ipam_support::{address_of, Node};
use openstack::{FixedIp, FixedIpRequest};
use serde_json::json;
use testbed::netns::unique;
use testbed::openstack::{block_on, shared};

fn primary_tags(node: &Node) -> Vec<String> {
    node.port().tags.into_iter().filter(|t| t.starts_with("veth-route:primary=")).collect()
}

#[test]
fn stripped_tags_come_back_and_a_wrong_primary_is_corrected() {
    let stack = shared();
    let node = Node::new(stack);
    let conf = node.conf(node.ipam());
    let c1 = unique("c");
    let ip1 = address_of(&node.run("ADD", &c1, &conf).result());

    block_on(stack.neutron().set_port_tags(&node.port_id, &["owner:terraform".to_string()])).unwrap();
    let c2 = unique("c");
    node.run("ADD", &c2, &conf).result();
    let tags = node.port().tags;
    assert!(tags.contains(&"veth-route:managed".to_string()) && tags.contains(&"owner:terraform".to_string()), "{tags:?}");
    assert_eq!(primary_tags(&node), [format!("veth-route:primary={}", node.primary)]);

    // The node once recorded a pod's address as its own (as a first-fixed-IP guess would).
    let path = node.data.path().join("ipamtest/state.json");
    let mut state = node.state();
    state["port"]["primary"] = json!(ip1.to_string());
    std::fs::write(&path, state.to_string()).unwrap();
    block_on(stack.neutron().set_port_tags(&node.port_id, &["veth-route:managed".into(), format!("veth-route:primary={ip1}")])).unwrap();
    let c3 = unique("c");
    node.run("ADD", &c3, &conf).result();
    assert_eq!(node.state()["port"]["primary"], node.primary.to_string());
    assert_eq!(primary_tags(&node), [format!("veth-route:primary={}", node.primary)]);
    for c in [&c1, &c2, &c3] {
        node.run("DEL", c, &conf).assert_ok();
    }
    assert_eq!(node.port_ips(), vec![node.primary]);
    // The test network is VXLAN (MTU 1450): a config whose "mtu" is larger gets told.
    let mtu = block_on(stack.neutron().get_network(&node.network_id)).unwrap().mtu.expect("Neutron reports the MTU");
    assert!(!node.log().contains("set \"mtu\""), "no mtu configured is fine (the plugin takes the uplink's): {}", node.log());
    let mut too_big = conf.clone();
    too_big["mtu"] = json!(9000);
    let c4 = unique("c");
    node.run("ADD", &c4, &too_big).result();
    assert!(node.log().contains(&format!("set \"mtu\": {mtu}")), "{}", node.log());
    node.run("DEL", &c4, &too_big).assert_ok();
}

#[test]
fn a_spare_removed_from_the_port_is_not_handed_out() {
    let stack = shared();
    let node = Node::new(stack);
    let mut ipam = node.ipam();
    ipam["pool"] = json!({ "min": 1, "max": 3 });
    let conf = node.conf(ipam);
    let c1 = unique("c");
    node.run("ADD", &c1, &conf).result();
    let mut spares: Vec<IpAddr> =
        node.state()["spares"].as_array().unwrap().iter().map(|l| l["ip"].as_str().unwrap().parse().unwrap()).collect();
    spares.sort();
    // The spare the next ADD would take (the lowest) is removed by someone else.
    let gone = spares[0];
    let port = node.port();
    let keep: Vec<FixedIpRequest> = port.fixed_ips.iter().filter(|f| f.ip_address != gone).cloned().map(FixedIpRequest::Address).collect();
    block_on(stack.neutron().update_port_fixed_ips(&node.port_id, &keep, json!({}), None)).unwrap();

    let c2 = unique("c");
    let ip2 = address_of(&node.run("ADD", &c2, &conf).result());
    assert_ne!(ip2, gone, "a spare that is no longer on the port was handed out");
    assert!(node.port_ips().contains(&ip2));
    assert!(!node.state()["spares"].to_string().contains(&format!("\"{gone}\"")), "{}", node.state());
    for c in [&c1, &c2] {
        node.run("DEL", c, &conf).assert_ok();
    }
}

#[test]
fn the_vm_address_is_the_uplinks_even_when_a_pod_address_sorts_first() {
    let stack = shared();
    let name = unique("prim");
    // The VM gets .8 or .9; an address added beside it, .100, sorts first as a string.
    let (net, subnet) = stack
        .create_network(&name, "10.93.0.0/24".parse().unwrap(), Some(("10.93.0.8".parse().unwrap(), "10.93.0.9".parse().unwrap())))
        .unwrap();
    {
        let node = Node::on(stack, &net);
        let mut ips: Vec<FixedIpRequest> = node.port().fixed_ips.into_iter().map(FixedIpRequest::Address).collect();
        let foreign: IpAddr = "10.93.0.100".parse().unwrap();
        ips.push(FixedIpRequest::Address(FixedIp { subnet_id: subnet.clone(), ip_address: foreign }));
        let port = block_on(stack.neutron().update_port_fixed_ips(&node.port_id, &ips, json!({}), None)).unwrap();
        assert_eq!(port.fixed_ips[0].ip_address, foreign, "Neutron's order: {:?}", port.fixed_ips);

        let mut ipam = node.ipam();
        ipam["neutronConf"]["portId"] = json!(node.port_id);
        let conf = node.conf(ipam);
        let cid = unique("c");
        let ip = address_of(&node.run("ADD", &cid, &conf).result());
        assert_eq!(node.state()["port"]["primary"], node.primary.to_string());
        assert_eq!(primary_tags(&node), [format!("veth-route:primary={}", node.primary)]);
        assert!(ip != node.primary && ip != foreign);
        node.run("DEL", &cid, &conf).assert_ok();
    }
    block_on(stack.neutron().delete_network(&net)).unwrap();
}

#[test]
fn a_released_address_is_quarantined_on_the_port_then_released() {
    let node = Node::new(shared());
    let mut ipam = node.ipam();
    ipam["quarantineSeconds"] = json!(3600);
    let conf = node.conf(ipam);
    let c1 = unique("c");
    let ip1 = address_of(&node.run("ADD", &c1, &conf).result());
    node.run("DEL", &c1, &conf).assert_ok();
    // Still on the port (Neutron gives it to nobody else), tagged for the controller.
    assert!(node.port_ips().contains(&ip1), "{:?}", node.port_ips());
    let released = format!("veth-route:released={ip1}");
    assert!(node.port().tags.contains(&released), "{:?}", node.port().tags);
    // Not handed out again while quarantined.
    let c2 = unique("c");
    let ip2 = address_of(&node.run("ADD", &c2, &conf).result());
    assert_ne!(ip2, ip1);
    // Its time is up (the record is aged instead of waiting): the next DEL releases it.
    let path = node.data.path().join("ipamtest/state.json");
    let mut state = node.state();
    state["quarantine"][0]["since"] = json!(0);
    std::fs::write(&path, state.to_string()).unwrap();
    node.run("DEL", &c2, &conf).assert_ok();
    let ips = node.port_ips();
    assert!(!ips.contains(&ip1) && ips.contains(&ip2), "{ips:?}");
    assert!(!node.port().tags.contains(&released));
    // GC with no pods and no quarantine: everything goes.
    let mut plain = node.ipam();
    plain["quarantineSeconds"] = json!(0);
    let mut gc = node.conf(plain);
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    node.run("GC", "", &gc).assert_ok();
    assert_eq!(node.port_ips(), vec![node.primary]);
    assert!(node.port().tags.iter().all(|t| !t.starts_with("veth-route:released=")));
}
