//! tcnp-ipam on a private stack whose Keystone issues 10-second tokens: an expired cached
//! token is replaced without the caller noticing; then Neutron is stopped mid-run and ADD,
//! DEL and STATUS fail with "try again later" / "not available", naming the endpoint and
//! leaving the node's state as it was (so the runtime's retry can succeed later).

mod ipam_support;

use std::time::Duration;

use ipam_support::Node;
use serde_json::{json, Value};
use testbed::netns::unique;
use testbed::openstack::{block_on, Stack, StackOptions};

fn cached_token(node: &Node) -> Value {
    let dir = node.data.path().join("ipamtest");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("token-"))
        .expect("token cache file");
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

/// Whether Keystone still accepts `token` (asked with a fresh admin token each time).
fn keystone_accepts(stack: &Stack, token: &str) -> bool {
    block_on(async {
        let creds = stack.credentials();
        let http = reqwest::Client::new();
        let admin = openstack::keystone::authenticate(&http, &creds).await.unwrap();
        let r = http
            .get(format!("{}/auth/tokens", stack.env().auth_url))
            .header("X-Auth-Token", admin.value.expose())
            .header("X-Subject-Token", token)
            .send()
            .await
            .unwrap();
        r.status().is_success()
    })
}

#[test]
fn expired_token_is_renewed_then_a_stopped_neutron_is_reported_without_damage() {
    let stack = Stack::start(StackOptions { token_expiration: 10, ..Default::default() }).expect("private stack");
    let node = Node::new(&stack);
    let (c1, c2) = (unique("c"), unique("c"));
    let ip1 = node.add(&c1);
    let first = cached_token(&node);
    let old = first["token"]["value"].as_str().unwrap().to_string();

    // Wait for Keystone itself to stop accepting the cached token.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while keystone_accepts(&stack, &old) {
        assert!(std::time::Instant::now() < deadline, "token never expired");
        std::thread::sleep(Duration::from_millis(500));
    }
    let ip2 = node.add(&c2);
    assert_ne!(ip1, ip2);
    assert!(node.port_ips().contains(&ip2));
    let renewed = cached_token(&node);
    assert_ne!(renewed["token"]["value"], first["token"]["value"], "expired token should be replaced");
    assert!(renewed["token"]["expires_at"].as_u64() > first["token"]["expires_at"].as_u64());

    // Neutron goes away.
    let port_before = node.port_ips();
    let state_before = node.state();
    stack.stop_neutron();
    let neutron_host = stack.env().neutron_url.trim_start_matches("http://").to_string();

    let (code, msg, _) = node.run("ADD", &unique("c"), &node.conf(node.ipam())).error();
    assert_eq!(code, 11, "{msg}");
    assert!(msg.contains("Neutron") && msg.contains(&neutron_host), "{msg}");
    assert_eq!(node.state(), state_before, "a failed ADD must not change the node's state");

    let (code, msg, _) = node.run("DEL", &c1, &node.conf(node.ipam())).error();
    assert_eq!(code, 11, "{msg}");
    assert_eq!(node.state(), state_before, "a failed DEL must keep the record for the retry");

    let mut conf = node.conf(node.ipam());
    conf["cniVersion"] = json!("1.1.0");
    let (code, msg, _) = node.run("STATUS", "", &conf).error();
    assert_eq!(code, 50, "{msg}");
    assert!(msg.contains(&neutron_host), "{msg}");
    assert!(!node.log().contains(stack.env().password.expose()), "password leaked into the log");
    assert_eq!(port_before.len(), 3);
}
