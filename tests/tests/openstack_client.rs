//! The shared OpenStack client against the real Keystone and Neutron: lists span
//! Neutron's pages (the test Neutron serves [`PAGINATION_MAX_LIMIT`] items per page).

use std::collections::HashSet;

use serde_json::json;
use testbed::netns::unique;
use testbed::openstack::{block_on, random_mac, shared, PAGINATION_MAX_LIMIT};

#[test]
fn lists_follow_pagination_past_the_first_page() {
    let stack = shared();
    let neutron = stack.neutron();
    let name = unique("pg");
    let (net, _subnet) = stack.create_network(&name, "10.91.0.0/24".parse().unwrap(), None).unwrap();
    let count = 3 * PAGINATION_MAX_LIMIT + 1;
    let ports: Vec<String> =
        (0..count).map(|i| stack.create_vm_port(&net, &format!("{name}-{i}"), &random_mac()).expect("port").id).collect();
    let listed = block_on(neutron.list_ports(&[("network_id", net.as_str())])).unwrap();
    let ids: HashSet<String> = listed.iter().map(|p| p.id.clone()).collect();
    assert_eq!(listed.len(), count, "each port once: {listed:?}");
    assert_eq!(ids, ports.iter().cloned().collect::<HashSet<_>>());
    // With `fields`, as the controller and the node blocks ask.
    let fields = [("network_id", net.as_str()), ("fields", "id"), ("fields", "mac_address"), ("fields", "network_id")];
    let macs = block_on(neutron.list_ports(&fields));
    assert_eq!(macs.map(|m| m.len()).unwrap_or_else(|e| panic!("{e}")), count);
    // One page really is smaller than the whole list: the server paginates.
    let page: serde_json::Value = block_on(async {
        let token = neutron.session().token().await.unwrap();
        let url = format!("{}/ports?network_id={net}", neutron.base_url());
        reqwest::Client::new().get(url).header("X-Auth-Token", token.value.expose()).send().await.unwrap().json().await.unwrap()
    });
    assert_eq!(page["ports"].as_array().map(Vec::len), Some(PAGINATION_MAX_LIMIT), "{page}");
    assert!(page["ports_links"].as_array().is_some_and(|l| l.iter().any(|l| l["rel"] == "next")), "{page}");

    let extra: Vec<String> = (0..PAGINATION_MAX_LIMIT)
        .map(|i| block_on(neutron.create_subnet(&net, format!("10.92.{i}.0/24").parse().unwrap(), json!({}))).unwrap().id)
        .collect();
    let subnets = block_on(neutron.list_subnets(&net)).unwrap();
    assert_eq!(subnets.len(), 1 + extra.len());
    for id in &ports {
        stack.delete_port(id).unwrap();
    }
    block_on(neutron.delete_network(&net)).unwrap();
}
