//! tcnp-ipam when the answer to a port update is lost: no address is ever left on the VM
//! port without a record. The real Neutron (shared stack) already closes each connection
//! after its response without saying so (uwsgi's `--http-socket`), which the 30 concurrent
//! ADDs of `ipam_basic` meet. Faults the real server cannot produce on demand come from
//! `FaultProxy`, a FAKE relay in front of the real Neutron inside the VM namespace: a 504
//! after forwarding, a reset after the request was sent, a connection closed without an
//! answer, an answer withheld until the client times out. Neutron applies every forwarded
//! update; only its answer is lost.

mod ipam_support;

use std::collections::HashSet;
use std::net::IpAddr;

use ipam_support::{address_of, Node};
use serde_json::{json, Value};
use testbed::bench::reliability::faulted_churn;
use testbed::netns::unique;
use testbed::openstack::{block_on, shared, Fault, FaultProxy};

/// The node's config with Neutron reached through `proxy`.
fn through(node: &Node, proxy: &FaultProxy, extra: Value) -> Value {
    let mut ipam = node.ipam();
    ipam["openstackConf"]["neutronUrl"] = json!(proxy.url());
    if let (Some(o), Value::Object(e)) = (ipam.as_object_mut(), extra) {
        o.extend(e);
    }
    node.conf(ipam)
}

/// One ADD and DEL through `conf`, so that the port is found and marked and the faults
/// that follow meet the updates of fixed IPs.
fn warm_up(node: &Node, conf: &Value) {
    let cid = unique("c");
    node.run("ADD", &cid, conf).result();
    node.run("DEL", &cid, conf).assert_ok();
}

/// Every address on the port is the VM's own or recorded by the node (attachment or spare),
/// no address is recorded twice, and no journal is left.
fn assert_accounted(node: &Node, context: &str) {
    let state = node.state();
    let mut recorded: Vec<IpAddr> = state["attachments"]
        .as_object()
        .map(|m| m.values().map(|l| l["ip"].as_str().unwrap().parse().unwrap()).collect())
        .unwrap_or_default();
    recorded.extend(state["spares"].as_array().into_iter().flatten().map(|l| l["ip"].as_str().unwrap().parse::<IpAddr>().unwrap()));
    let distinct: HashSet<IpAddr> = recorded.iter().copied().collect();
    assert_eq!(distinct.len(), recorded.len(), "{context}: an address recorded twice: {state}");
    let on_port: HashSet<IpAddr> = node.port_ips().into_iter().filter(|ip| *ip != node.primary).collect();
    assert_eq!(on_port, distinct, "{context}: port and records differ\n{}", node.log());
    assert!(state["pending"].is_null(), "{context}: journal left: {state}");
}

#[test]
fn adds_and_dels_whose_answers_are_lost_leave_nothing_unrecorded() {
    let node = Node::new(shared());
    let proxy = FaultProxy::start(node.ns(), &node.stack.env().neutron_url).expect("fault proxy");
    let conf = through(&node, &proxy, json!({}));
    warm_up(&node, &conf);
    for fault in [Fault::GatewayTimeout, Fault::ResetAfterSend, Fault::DropResponse] {
        let cid = unique("c");
        // The ADD's port update is applied by Neutron, its answer lost: the ADD reads the port,
        // finds its update there and succeeds with that address.
        proxy.fail_next_writes(&[fault]);
        let ip = address_of(&node.run("ADD", &cid, &conf).result());
        assert_eq!(proxy.pending_faults(), 0, "{fault:?} was not met");
        assert!(node.port_ips().contains(&ip), "{fault:?}: {ip} not on the port");
        assert_eq!(node.recorded(), 1);
        assert_accounted(&node, &format!("ADD under {fault:?}"));
        // The DEL's update likewise: the next read shows the address gone.
        proxy.fail_next_writes(&[fault]);
        node.run("DEL", &cid, &conf).assert_ok();
        assert!(!node.port_ips().contains(&ip), "{fault:?}: {ip} still on the port");
        assert_eq!(node.recorded(), 0);
        assert_accounted(&node, &format!("DEL under {fault:?}"));
    }
    assert_eq!(node.port_ips(), vec![node.primary]);
}

#[test]
fn an_answer_withheld_past_the_client_timeout_is_settled_too() {
    let node = Node::new(shared());
    let proxy = FaultProxy::start(node.ns(), &node.stack.env().neutron_url).expect("fault proxy");
    let conf = through(&node, &proxy, json!({}));
    warm_up(&node, &conf);
    // A short timeout (the token is cached by now), still ample for this loaded machine.
    let mut short = conf.clone();
    short["ipam"]["openstackConf"]["timeoutSeconds"] = json!(3);
    let cid = unique("c");
    proxy.fail_next_writes(&[Fault::Withhold]);
    let ip = address_of(&node.run("ADD", &cid, &short).result());
    assert!(node.port_ips().contains(&ip));
    assert_accounted(&node, "ADD after a client timeout");
    assert!(node.log().contains("timed out"), "{}", node.log());
    node.run("DEL", &cid, &conf).assert_ok();
    assert_eq!(node.port_ips(), vec![node.primary]);
}

#[test]
fn an_unsettled_update_is_settled_by_the_next_add_or_by_gc() {
    let node = Node::new(shared());
    let proxy = FaultProxy::start(node.ns(), &node.stack.env().neutron_url).expect("fault proxy");
    let conf = through(&node, &proxy, json!({}));
    // Warm up: the port is found and marked, so the next ADD's reads are the ones faulted.
    let first = unique("c");
    node.run("ADD", &first, &conf).result();

    // The update's answer is lost and so is the read meant to settle it (after the ADD's
    // own read of the port): the ADD fails "try again later" and keeps its journal.
    proxy.fail_next_reads(&[Fault::Pass, Fault::GatewayTimeout]);
    proxy.fail_next_writes(&[Fault::DropResponse]);
    let (code, msg, _) = node.run("ADD", &unique("c"), &conf).error();
    assert_eq!(code, 11, "{msg}");
    assert!(msg.contains("next run"), "{msg}");
    assert!(!node.state()["pending"].is_null(), "the journal must survive: {}", node.state());
    let leaked: Vec<IpAddr> = node.port_ips().into_iter().filter(|ip| *ip != node.primary).collect();
    assert_eq!(leaked.len(), 2, "Neutron applied the update: {leaked:?}");

    // The runtime's retry settles it and uses the address Neutron added: nothing new.
    let retry = unique("c");
    let ip = address_of(&node.run("ADD", &retry, &conf).result());
    assert!(leaked.contains(&ip), "{ip} should be the address of the unanswered update {leaked:?}");
    assert_eq!(node.port_ips().len(), 3);
    assert_accounted(&node, "after the retry");

    // Once more, now settled by GC, which releases what no attachment uses.
    proxy.fail_next_reads(&[Fault::Pass, Fault::GatewayTimeout]);
    proxy.fail_next_writes(&[Fault::GatewayTimeout]);
    assert_eq!(node.run("ADD", &unique("c"), &conf).error().0, 11);
    assert_eq!(node.port_ips().len(), 4);
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": first, "ifname": "eth0" }, { "containerID": retry, "ifname": "eth0" }]);
    node.run("GC", "", &gc).assert_ok();
    assert_eq!(node.port_ips().len(), 3, "GC must release the settled address");
    assert_accounted(&node, "after GC");
    for cid in [&first, &retry] {
        node.run("DEL", cid, &conf).assert_ok();
    }
    assert_eq!(node.port_ips(), vec![node.primary]);
}

#[test]
fn a_lost_answer_to_a_tag_write_does_not_fail_the_add() {
    // The first ADD of a node marks its port (a tag write) before it adds an address; with
    // a quarantine, DEL tags the released address. Both writes are idempotent: a lost
    // answer must not fail the operation (the 1000-operation bench met this as code 11).
    let node = Node::new(shared());
    let proxy = FaultProxy::start(node.ns(), &node.stack.env().neutron_url).expect("fault proxy");
    let conf = through(&node, &proxy, json!({ "quarantineSeconds": 3600 }));
    for fault in [Fault::DropResponse, Fault::GatewayTimeout] {
        let cid = unique("c");
        // Stripped, as Terraform would: this ADD's first write is the marking.
        block_on(node.stack.neutron().set_port_tags(&node.port_id, &[])).expect("strip tags");
        proxy.fail_next_writes(&[fault]);
        let ip = address_of(&node.run("ADD", &cid, &conf).result());
        assert_eq!(proxy.pending_faults(), 0, "{fault:?} was not met");
        let tags = node.port().tags;
        assert!(tags.iter().any(|t| t == "veth-route:managed"), "{fault:?}: port not marked: {tags:?}");
        // The DEL's first write is the quarantine tag.
        proxy.fail_next_writes(&[fault]);
        node.run("DEL", &cid, &conf).assert_ok();
        assert_eq!(proxy.pending_faults(), 0, "{fault:?} was not met");
        let tags = node.port().tags;
        assert!(tags.contains(&format!("veth-route:released={ip}")), "{fault:?}: {ip} not quarantined: {tags:?}");
        assert!(node.port_ips().contains(&ip), "{fault:?}: quarantined {ip} must stay on the port");
    }
    // Quarantine over: GC releases them (and their tags).
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["ipam"]["quarantineSeconds"] = json!(0);
    gc["cni.dev/valid-attachments"] = json!([]);
    node.run("GC", "", &gc).assert_ok();
    assert_eq!(node.port_ips(), vec![node.primary]);
    assert!(!node.port().tags.iter().any(|t| t.starts_with("veth-route:released=")));
}

#[test]
fn a_short_churn_under_random_lost_answers_loses_leaks_and_fails_nothing() {
    // The short version of `cargo xtask bench`'s reliability run (1000 operations there):
    // 3 nodes, each behind a FAKE relay losing the answer to 20% of writes, in the plain
    // mode so that most operations write; then GC with the pods left. No withheld answers
    // (each costs a client timeout) and the default 30 s timeout: a loaded CI machine must
    // not time out Keystone.
    let kinds = [Fault::DropResponse, Fault::GatewayTimeout, Fault::ResetAfterSend];
    let f = faulted_churn(shared(), &json!({ "pool": { "max": 0 } }), 18, &kinds, 30).expect("churn");
    assert!(f.faulted > 0, "no write was faulted: {f:?}");
    assert_eq!((f.lost, f.orphans, f.duplicates), (0, 0, 0), "{f:?}");
    assert!(f.failures.is_empty(), "ADDs failed: {:?}", f.failures);
}

#[test]
fn two_networks_with_their_own_data_dirs_on_one_port_never_take_each_others_addresses() {
    // Two CNI networks of one node put addresses on the same VM port, each with its own
    // dataDir (so its own node lock), while the FAKE relay loses the answer to 30% of
    // writes. The node-wide port lock makes each lost answer be read back before the other
    // network writes: neither may count the other's new address as its own.
    let node = Node::new(shared());
    let proxy = FaultProxy::start(node.ns(), &node.stack.env().neutron_url).expect("fault proxy");
    proxy.fail_writes_at_random(300, &[Fault::DropResponse, Fault::GatewayTimeout, Fault::ResetAfterSend], 0xb0b);
    let other = testbed::netns::TempDir::new("ipd2");
    let conf_a = through(&node, &proxy, json!({}));
    let mut conf_b = through(&node, &proxy, json!({ "dataDir": other.path() }));
    conf_b["name"] = json!("ipamtest-b");
    let cids: Vec<(String, &Value)> = (0..12).map(|i| (unique("c"), if i % 2 == 0 { &conf_a } else { &conf_b })).collect();
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = cids.iter().map(|(cid, conf)| s.spawn(|| node.run("ADD", cid, conf))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        out.result();
    }
    assert!(proxy.faulted() > 0, "no answer was lost");
    let held = |state: Value| -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> =
            state["attachments"].as_object().into_iter().flatten().map(|(_, l)| l["ip"].as_str().unwrap().parse().unwrap()).collect();
        ips.extend(state["spares"].as_array().into_iter().flatten().map(|l| l["ip"].as_str().unwrap().parse::<IpAddr>().unwrap()));
        ips
    };
    let a = held(node.state());
    let b_state: Value = serde_json::from_slice(&std::fs::read(other.path().join("ipamtest-b/state.json")).unwrap()).unwrap();
    let b = held(b_state);
    let (sa, sb): (HashSet<IpAddr>, HashSet<IpAddr>) = (a.iter().copied().collect(), b.iter().copied().collect());
    assert!(sa.is_disjoint(&sb), "an address counted by both networks: {:?}", sa.intersection(&sb).collect::<Vec<_>>());
    assert_eq!((sa.len(), sb.len()), (a.len(), b.len()), "an address recorded twice");
    let on_port: HashSet<IpAddr> = node.port_ips().into_iter().filter(|ip| *ip != node.primary).collect();
    assert_eq!(on_port, &sa | &sb, "port and the two networks' records differ\n{}", node.log());
    proxy.fail_writes_at_random(0, &[Fault::Pass], 1);
    for (cid, conf) in &cids {
        node.run("DEL", cid, conf).assert_ok();
    }
    assert_eq!(node.port_ips(), vec![node.primary]);
}
