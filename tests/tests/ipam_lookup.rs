//! How tcnp-ipam finds the VM's port besides the uplink MAC: an explicit `portId`, and the
//! Nova metadata service's `network_data.json` (`vif_id` of the link with our MAC). There
//! is no Nova here: a stand-in HTTP server inside the VM namespace serves a document in
//! Nova's format (named as such; the Neutron side is real).

mod ipam_support;

use std::io::{Read, Write};
use std::net::TcpListener;

use ipam_support::{address_of, Node};
use serde_json::json;
use testbed::netns::unique;
use testbed::openstack::shared;

/// Serves `body` to every request on 127.0.0.1:<port> inside the node's namespace (stand-in
/// for Nova's metadata service). Returns the port.
fn metadata_stand_in(node: &Node, body: String) -> u16 {
    let listener = node.ns().run(|| TcpListener::bind("127.0.0.1:0").expect("bind in VM namespace"));
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(conn, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    port
}

#[test]
fn port_found_through_metadata_vif_id_or_explicit_port_id() {
    let node = Node::new(shared());
    let doc = json!({
        "links": [
            { "id": "tapother", "type": "ovs", "ethernet_mac_address": "fa:16:3e:00:00:01", "vif_id": "not-our-port" },
            { "id": "tap0", "type": "ovs", "ethernet_mac_address": node.mac.to_uppercase(), "vif_id": node.port_id, "mtu": 1450 },
        ],
        "networks": [], "services": [],
    });
    let port = metadata_stand_in(&node, doc.to_string());
    let mut ipam = node.ipam();
    ipam["neutronConf"]["useMetadata"] = json!(true);
    ipam["neutronConf"]["metadataUrl"] = json!(format!("http://127.0.0.1:{port}/openstack/latest/network_data.json"));
    let conf = node.conf(ipam);
    let cid = unique("c");
    let ip = address_of(&node.run("ADD", &cid, &conf).result());
    assert!(node.port_ips().contains(&ip));
    assert_eq!(node.state()["port"]["id"], node.port_id);
    node.run("DEL", &cid, &conf).assert_ok();

    // An explicit port id (own state: another network name).
    let mut ipam = node.ipam();
    ipam["neutronConf"]["portId"] = json!(node.port_id);
    let mut conf = node.conf(ipam);
    conf["name"] = json!("ipamtest-byid");
    let ip = address_of(&node.run("ADD", &cid, &conf).result());
    assert!(node.port_ips().contains(&ip));
    node.run("DEL", &cid, &conf).assert_ok();
    assert_eq!(node.port_ips(), vec![node.primary]);
}

#[test]
fn metadata_without_our_mac_and_unknown_mac_are_clear_errors() {
    let node = Node::new(shared());
    let doc = json!({ "links": [{ "ethernet_mac_address": "fa:16:3e:00:00:01", "vif_id": "x" }] });
    let port = metadata_stand_in(&node, doc.to_string());
    let mut ipam = node.ipam();
    ipam["neutronConf"]["metadataUrl"] = json!(format!("http://127.0.0.1:{port}/network_data.json"));
    let (code, msg, _) = node.run("ADD", &unique("c"), &node.conf(ipam)).error();
    assert_eq!(code, 104, "{msg}");
    assert!(msg.contains(&node.mac), "{msg}");

    // The uplink's MAC matches no port on the network.
    node.ns().ip("link set eth0 address fa:16:3e:00:00:02");
    let (code, msg, _) = node.run("ADD", &unique("c"), &node.conf(node.ipam())).error();
    assert_eq!(code, 104, "{msg}");
    assert!(msg.contains("fa:16:3e:00:00:02") && msg.contains("eth0"), "{msg}");
    assert_eq!(node.port_ips(), vec![node.primary]);
    assert_eq!(node.recorded(), 0);
}
