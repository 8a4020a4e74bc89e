//! tcnp-ipam against the real Keystone and Neutron (the shared stack; a private one for
//! revocation): ADD/DEL round trip with the seed's config, idempotency, the port marks,
//! concurrency on one node and across two, GC, the default and a configured warm pool, node
//! blocks (six nodes at bring-up among them), re-authentication after token revocation,
//! STATUS, and clear errors that leave nothing behind.

mod ipam_support;

use std::collections::HashSet;
use std::net::IpAddr;

use ipam_support::{address_of, Node};
use ipnet::IpNet;
use serde_json::json;
use testbed::netns::unique;
use testbed::openstack::{block_on, shared, Stack, StackOptions};

#[test]
fn add_returns_a_port_address_and_del_removes_it() {
    let stack = shared();
    let node = Node::new(stack);
    // The seed's config verbatim: inline password, domain "default" (an id).
    let mut ipam = node.ipam();
    ipam["openstackConf"] = json!({
        "username": stack.env().username, "password": stack.env().password.expose(),
        "project": "admin", "domain": "default", "authUrl": stack.env().auth_url,
    });
    ipam["neutronConf"] = json!({ "networks": [node.network_id], "mode": "mix" });
    let conf = node.conf(ipam);
    let cid = unique("c");
    let result = node.run("ADD", &cid, &conf).result();
    let ip = address_of(&result);
    assert!(node.port_ips().contains(&ip), "{ip} not on port: {:?}", node.port_ips());
    assert_ne!(ip, node.primary);
    assert_eq!(result["ips"][0]["address"], format!("{ip}/24"));
    assert_eq!(result["ips"][0]["gateway"], stack.env().gateway.to_string());
    assert_eq!(result["routes"], json!([{ "dst": "0.0.0.0/0" }]));
    let tags = node.port().tags;
    assert!(tags.contains(&"veth-route:managed".to_string()), "{tags:?}");
    assert!(tags.contains(&format!("veth-route:primary={}", node.primary)), "{tags:?}");

    // Same container + ifname again: the same address, nothing new on the port.
    let again = address_of(&node.run("ADD", &cid, &conf).result());
    assert_eq!(again, ip);
    assert_eq!(node.port_ips().len(), 2);

    node.run("DEL", &cid, &conf).assert_ok();
    assert_eq!(node.port_ips(), vec![node.primary]);
    assert_eq!(node.recorded(), 0);
    node.run("DEL", &cid, &conf).assert_ok();

    // The domain as a name ("Default"), mode alias mix-route.
    let mut named = node.ipam();
    named["openstackConf"]["domain"] = json!("Default");
    named["neutronConf"]["mode"] = json!("mix-route");
    let ip2 = address_of(&node.run("ADD", &cid, &node.conf(named.clone())).result());
    assert!(node.port_ips().contains(&ip2));
    node.run("DEL", &cid, &node.conf(named)).assert_ok();
    assert_eq!(node.port_ips(), vec![node.primary]);
    let log = node.log();
    assert!(!log.contains(stack.env().password.expose()), "password leaked into the log");
}

#[test]
fn thirty_concurrent_adds_on_one_node_get_distinct_addresses() {
    let node = Node::new(shared());
    let cids: Vec<String> = (0..30).map(|_| unique("c")).collect();
    let ips: Vec<IpAddr> = std::thread::scope(|s| {
        let handles: Vec<_> = cids.iter().map(|cid| s.spawn(|| node.add(cid))).collect();
        handles.into_iter().map(|h| h.join().expect("ADD thread")).collect()
    });
    let distinct: HashSet<IpAddr> = ips.iter().copied().collect();
    assert_eq!(distinct.len(), 30, "duplicates among {ips:?}");
    let on_port: HashSet<IpAddr> = node.port_ips().into_iter().collect();
    assert!(distinct.is_subset(&on_port), "lost addresses: {:?}", distinct.difference(&on_port).collect::<Vec<_>>());
    assert_eq!(on_port.len(), 31, "port: {on_port:?}");
    assert_eq!(node.recorded(), 30);
    std::thread::scope(|s| {
        for cid in &cids {
            s.spawn(|| node.del(cid));
        }
    });
    assert_eq!(node.port_ips(), vec![node.primary]);
    assert_eq!(node.recorded(), 0);
}

#[test]
fn two_nodes_allocating_concurrently_never_share_an_address() {
    let stack = shared();
    let (a, b) = (Node::new(stack), Node::new(stack));
    let run = |node: &Node| -> Vec<IpAddr> {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..12).map(|_| s.spawn(|| node.add(&unique("c")))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let (ips_a, ips_b) = std::thread::scope(|s| {
        let ha = s.spawn(|| run(&a));
        let hb = s.spawn(|| run(&b));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let all: HashSet<IpAddr> = ips_a.iter().chain(&ips_b).copied().collect();
    assert_eq!(all.len(), 24, "duplicates: {ips_a:?} {ips_b:?}");
    let port_a: HashSet<IpAddr> = a.port_ips().into_iter().collect();
    let port_b: HashSet<IpAddr> = b.port_ips().into_iter().collect();
    assert!(ips_a.iter().all(|ip| port_a.contains(ip)) && ips_b.iter().all(|ip| port_b.contains(ip)));
    assert!(port_a.is_disjoint(&port_b));
}

#[test]
fn gc_releases_addresses_of_vanished_attachments() {
    let node = Node::new(shared());
    let (keep, gone1, gone2) = (unique("c"), unique("c"), unique("c"));
    let kept = node.add(&keep);
    let (g1, g2) = (node.add(&gone1), node.add(&gone2));
    let mut conf = node.conf(node.ipam());
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{ "containerID": keep, "ifname": "eth0" }]);
    node.run("GC", "", &conf).assert_ok();
    let ips = node.port_ips();
    assert!(ips.contains(&kept) && !ips.contains(&g1) && !ips.contains(&g2), "{ips:?}");
    assert_eq!(node.recorded(), 1);
    node.del(&keep);
    assert_eq!(node.port_ips(), vec![node.primary]);
}

#[test]
fn warm_pool_serves_adds_without_neutron_writes_and_shrinks_on_gc() {
    let node = Node::new(shared());
    let mut ipam = node.ipam();
    ipam["pool"] = json!({ "min": 2, "max": 4 });
    let conf = node.conf(ipam.clone());
    let add = |cid: &str| address_of(&node.run("ADD", cid, &conf).result());
    let cids: Vec<String> = (0..4).map(|_| unique("c")).collect();

    add(&cids[0]);
    // One PUT: the address plus four spares.
    assert_eq!(node.port_ips().len(), 1 + 1 + 4);
    let rev = node.port().revision_number;
    add(&cids[1]);
    add(&cids[2]);
    assert_eq!(node.port().revision_number, rev, "spare-served ADDs must not write to Neutron");
    // Below min (1 spare left after this one): refill to max in one PUT.
    add(&cids[3]);
    assert_eq!(node.port_ips().len(), 1 + 4 + 4);
    assert_eq!(node.state()["spares"].as_array().unwrap().len(), 4);

    // DEL keeps up to max spares and releases the rest.
    for cid in &cids {
        node.run("DEL", cid, &conf).assert_ok();
    }
    assert_eq!(node.port_ips().len(), 1 + 4);
    // A smaller pool: GC trims the spares to the new max.
    ipam["pool"] = json!({ "min": 0, "max": 1 });
    let mut gc = node.conf(ipam);
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    node.run("GC", "", &gc).assert_ok();
    assert_eq!(node.port_ips().len(), 1 + 1);
    assert_eq!(node.recorded(), 0);
}

#[test]
fn the_defaults_keep_two_spares_so_most_adds_and_dels_write_nothing() {
    // No pool key at all: what a user of the design note's config gets.
    let node = Node::new(shared());
    let ipam = node.default_ipam();
    assert!(ipam.get("pool").is_none(), "{ipam}");
    let conf = node.conf(ipam);
    let cids: Vec<String> = (0..4).map(|_| unique("c")).collect();
    let add = |cid: &str| address_of(&node.run("ADD", cid, &conf).result());
    let spares = || node.state()["spares"].as_array().map_or(0, Vec::len);

    // The first ADD puts its address and two spares on the port in one PUT.
    let first = add(&cids[0]);
    assert_eq!(node.port_ips().len(), 1 + 1 + 2);
    assert_eq!(spares(), 2);
    let rev = node.port().revision_number;
    add(&cids[1]);
    add(&cids[2]);
    assert_eq!(node.port().revision_number, rev, "spare-served ADDs must not write to Neutron");
    // No spare left: one PUT for this ADD's address and two new spares.
    add(&cids[3]);
    assert_eq!(node.port_ips().len(), 1 + 4 + 2);
    assert_eq!(spares(), 2);

    // Pods replaced within the pool write nothing either: an ADD takes a spare, a DEL
    // gives its address back as one.
    let rev = node.port().revision_number;
    add(&unique("c"));
    node.run("DEL", &cids[0], &conf).assert_ok();
    assert!(node.port_ips().contains(&first), "{first} is a spare now");
    add(&unique("c"));
    assert_eq!(node.port().revision_number, rev, "churn within the pool must not write to Neutron");

    // GC with no pod left: the port keeps the VM's address and two spares, no more.
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    node.run("GC", "", &gc).assert_ok();
    assert_eq!(node.recorded(), 0);
    assert_eq!(spares(), 2);
    assert_eq!(node.port_ips().len(), 1 + 2);
    // Turning the pool off (`"max": 0`) and GC again releases them.
    gc["ipam"]["pool"] = json!({ "max": 0 });
    node.run("GC", "", &gc).assert_ok();
    assert_eq!(node.port_ips(), vec![node.primary]);
}

#[test]
fn revoked_token_is_replaced_transparently() {
    // A Neutron that asks Keystone about every request (`token_cache_time = -1`, which
    // operators set to make revocation immediate): the shared stack's Neutron, like a
    // default one, would go on trusting the revoked token for minutes.
    let stack = &Stack::start(StackOptions { validate_every_request: true, ..Default::default() }).expect("private stack");
    let node = Node::new(stack);
    let first = node.add(&unique("c"));
    let token_file = std::fs::read_dir(node.data.path().join("ipamtest"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("token-"))
        .expect("token cache file");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token_file).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "token cache must be private");
    let cached: serde_json::Value = serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    let old = cached["token"]["value"].as_str().unwrap().to_string();
    // Revoke it in Keystone.
    block_on(async {
        let http = reqwest::Client::new();
        let admin = stack.neutron().session().token().await.unwrap();
        let r = http
            .delete(format!("{}/auth/tokens", stack.env().auth_url))
            .header("X-Auth-Token", admin.value.expose())
            .header("X-Subject-Token", &old)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    });
    let second = node.add(&unique("c"));
    assert!(node.port_ips().contains(&second) && second != first);
    let cached: serde_json::Value = serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    assert_ne!(cached["token"]["value"].as_str().unwrap(), old, "a new token should be cached");
}

#[test]
fn status_reports_reachability() {
    let node = Node::new(shared());
    let mut conf = node.conf(node.ipam());
    conf["cniVersion"] = json!("1.1.0");
    node.run("STATUS", "", &conf).assert_ok();
    let mut dead = node.ipam();
    dead["openstackConf"]["authUrl"] = json!("http://127.0.0.1:9/v3");
    let mut conf = node.conf(dead);
    conf["cniVersion"] = json!("1.1.0");
    let (code, msg, _) = node.run("STATUS", "", &conf).error();
    assert_eq!(code, 50);
    assert!(msg.contains("127.0.0.1:9"), "{msg}");
    // ADD against an unreachable Keystone: try again later, naming the endpoint.
    conf["cniVersion"] = json!("1.0.0");
    let (code, msg, _) = node.run("ADD", &unique("c"), &conf).error();
    assert_eq!(code, 11, "{msg}");
    assert!(msg.contains("Keystone") && msg.contains("127.0.0.1:9"), "{msg}");
    assert_eq!(node.recorded(), 0);
}

#[test]
fn del_with_lost_state_releases_the_address_named_by_prev_result() {
    let node = Node::new(shared());
    let conf = node.conf(node.ipam());
    let cid = unique("c");
    let result = node.run("ADD", &cid, &conf).result();
    let ip = address_of(&result);
    // The node's state is lost (e.g. a wiped /var/lib); the runtime still has prevResult.
    std::fs::remove_dir_all(node.data.path().join("ipamtest")).unwrap();
    let mut del = conf.clone();
    del["prevResult"] = result;
    node.run("DEL", &cid, &del).assert_ok();
    assert!(!node.port_ips().contains(&ip), "{ip} should be released");
    assert_eq!(node.port_ips(), vec![node.primary]);
    // Again: already gone is success; the VM's own address is never released this way.
    node.run("DEL", &cid, &del).assert_ok();
    let mut primary = del.clone();
    primary["prevResult"]["ips"][0]["address"] = json!(format!("{}/24", node.primary));
    node.run("DEL", &unique("c"), &primary).assert_ok();
    assert_eq!(node.port_ips(), vec![node.primary]);
}

#[test]
fn bad_credentials_and_unknown_network_fail_clearly_and_leave_nothing() {
    let stack = shared();
    let node = Node::new(stack);
    let mut ipam = node.ipam();
    ipam["openstackConf"].as_object_mut().unwrap().remove("passwordFile");
    ipam["openstackConf"]["password"] = json!("not-the-password");
    let out = node.run("ADD", &unique("c"), &node.conf(ipam));
    let (code, msg, _) = out.error();
    assert_eq!(code, 101, "{msg}");
    assert!(msg.contains("authentication failed") && !msg.contains("not-the-password"), "{msg}");
    assert_eq!(node.port_ips(), vec![node.primary]);
    assert_eq!(node.recorded(), 0);

    let mut ipam = node.ipam();
    ipam["neutronConf"]["networks"] = json!(["00000000-0000-0000-0000-000000000000"]);
    let (code, msg, _) = node.run("ADD", &unique("c"), &node.conf(ipam)).error();
    assert_eq!(code, 7, "{msg}");
    assert!(msg.contains("00000000-0000-0000-0000-000000000000") && msg.contains("does not exist"), "{msg}");

    let mut ipam = node.ipam();
    ipam["neutronConf"]["mode"] = json!("eni");
    let (code, msg, _) = node.run("ADD", &unique("c"), &node.conf(ipam)).error();
    assert_eq!(code, 7);
    assert!(msg.contains("eni"), "{msg}");
    assert_eq!(node.port_ips(), vec![node.primary]);
}

#[test]
fn exhausted_subnet_is_reported_and_nothing_is_half_allocated() {
    let stack = shared();
    let name = unique("small");
    let (net, _subnet) = stack
        .create_network(&name, "10.77.0.0/29".parse().unwrap(), Some(("10.77.0.2".parse().unwrap(), "10.77.0.4".parse().unwrap())))
        .unwrap();
    {
        let node = Node::on(stack, &net);
        let (c1, c2) = (unique("c"), unique("c"));
        node.add(&c1);
        node.add(&c2);
        let before = node.port_ips();
        assert_eq!(before.len(), 3);
        let (code, msg, _) = node.run("ADD", &unique("c"), &node.conf(node.ipam())).error();
        assert_eq!(code, 102, "{msg}");
        assert!(msg.contains("IpAddressGenerationFailure"), "{msg}");
        assert_eq!(node.port_ips().len(), 3);
        assert_eq!(node.recorded(), 2);
        assert!(node.state()["pending"].is_null(), "journal left behind: {}", node.state());
        // A pool the subnet cannot fill: the ADD still gets the one address it needs...
        node.del(&c2);
        let mut pooled = node.ipam();
        pooled["pool"] = json!({ "min": 1, "max": 3 });
        let c3 = unique("c");
        node.run("ADD", &c3, &node.conf(pooled.clone())).result();
        assert_eq!(node.port_ips().len(), 3);
        // ...and once nothing is left, fails as a whole with nothing added.
        let (code, _, _) = node.run("ADD", &unique("c"), &node.conf(pooled.clone())).error();
        assert_eq!(code, 102);
        assert_eq!(node.port_ips().len(), 3);
        node.run("DEL", &c3, &node.conf(pooled)).assert_ok();
        node.del(&c1);
    }
    block_on(stack.neutron().delete_network(&net)).unwrap();
}

#[test]
fn node_affine_blocks_are_claimed_whole_and_released_by_gc() {
    let stack = shared();
    let name = unique("blk");
    let (net, _) = stack.create_network(&name, "10.88.0.0/24".parse().unwrap(), None).unwrap();
    {
        let (a, b) = (Node::on(stack, &net), Node::on(stack, &net));
        let blocks_conf = |n: &Node| {
            let mut ipam = n.ipam();
            ipam["nodeBlocks"] = json!({ "prefixLength": 28 });
            n.conf(ipam)
        };
        let (conf_a, conf_b) = (blocks_conf(&a), blocks_conf(&b));
        let adds = |n: &Node, conf: &serde_json::Value, count: usize| -> Vec<(String, IpAddr)> {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..count)
                    .map(|_| {
                        s.spawn(|| {
                            let cid = unique("c");
                            let ip = address_of(&n.run("ADD", &cid, conf).result());
                            (cid, ip)
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            })
        };
        // Both nodes claim concurrently.
        let (got_a, got_b) = std::thread::scope(|s| {
            let ha = s.spawn(|| adds(&a, &conf_a, 5));
            let hb = s.spawn(|| adds(&b, &conf_b, 5));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        let block_of = |n: &Node| -> ipnet::IpNet {
            let blocks = n.state()["blocks"].as_array().cloned().unwrap_or_default();
            assert_eq!(blocks.len(), 1, "one /28 holds 5 pods: {}", n.state());
            blocks[0].as_str().unwrap().parse().unwrap()
        };
        let (block_a, block_b) = (block_of(&a), block_of(&b));
        assert_ne!(block_a, block_b);
        for (n, got, block) in [(&a, &got_a, block_a), (&b, &got_b, block_b)] {
            assert_eq!(block.prefix_len(), 28);
            assert!(got.iter().all(|(_, ip)| block.contains(ip)), "{got:?} outside {block}");
            let on_port: HashSet<IpAddr> = n.port_ips().into_iter().collect();
            let whole: HashSet<IpAddr> = block.hosts().chain([block.network(), block.broadcast()]).collect();
            assert!(whole.is_subset(&on_port), "the whole block {block} must be on the port");
            assert_eq!(on_port.len(), 17, "primary + 16: {on_port:?}");
        }
        let distinct: HashSet<IpAddr> = got_a.iter().chain(&got_b).map(|(_, ip)| *ip).collect();
        assert_eq!(distinct.len(), 10);

        // DEL keeps the block (zero Neutron writes); GC releases the idle block.
        let rev = a.port().revision_number;
        for (cid, _) in &got_a {
            a.run("DEL", cid, &conf_a).assert_ok();
        }
        assert_eq!(a.port().revision_number, rev);
        let mut gc = conf_a.clone();
        gc["cniVersion"] = json!("1.1.0");
        gc["cni.dev/valid-attachments"] = json!([]);
        a.run("GC", "", &gc).assert_ok();
        assert_eq!(a.port_ips(), vec![a.primary]);
        assert_eq!(a.state()["blocks"], json!([]));
        // B's block is untouched by A's GC.
        assert_eq!(b.port_ips().len(), 17);
    }
    block_on(stack.neutron().delete_network(&net)).unwrap();
}

#[test]
fn two_lock_domains_on_one_port_stay_consistent_through_if_match() {
    // Two data directories = two node locks on the same VM port: only Neutron's revision
    // check (If-Match + description nonce) keeps their read-modify-write cycles apart.
    let node = Node::new(shared());
    let other = testbed::netns::TempDir::new("ipd2");
    let conf_a = node.conf(node.ipam());
    let mut ipam_b = node.ipam();
    ipam_b["dataDir"] = json!(other.path());
    let conf_b = node.conf(ipam_b);
    let ips: Vec<(String, IpAddr, bool)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|i| {
                let conf = if i % 2 == 0 { &conf_a } else { &conf_b };
                let node = &node;
                s.spawn(move || {
                    let cid = unique("c");
                    let ip = address_of(&node.run("ADD", &cid, conf).result());
                    (cid, ip, i % 2 == 0)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: HashSet<IpAddr> = ips.iter().map(|(_, ip, _)| *ip).collect();
    assert_eq!(distinct.len(), 16, "an address was handed out twice: {ips:?}");
    let on_port: HashSet<IpAddr> = node.port_ips().into_iter().collect();
    assert!(distinct.is_subset(&on_port), "lost: {:?}", distinct.difference(&on_port).collect::<Vec<_>>());
    assert_eq!(on_port.len(), 17);
    for (cid, _, a) in &ips {
        node.run("DEL", cid, if *a { &conf_a } else { &conf_b }).assert_ok();
    }
    assert_eq!(node.port_ips(), vec![node.primary]);
}

/// Node-affine blocks at cluster bring-up: six nodes make their first ADD at the same moment
/// on a fresh subnet. Each starts its claim at a hash of its port among the free blocks;
/// were they all to start at the lowest free block, each collision would cost a node one of
/// its 5 claim attempts, and the sixth would run out.
#[test]
fn nodes_brought_up_together_claim_distinct_blocks_without_running_out_of_attempts() {
    let stack = shared();
    let (net, _) = stack.create_network(&unique("bring"), "10.89.0.0/24".parse().unwrap(), None).unwrap();
    {
        let nodes: Vec<Node> = (0..6).map(|_| Node::on(stack, &net)).collect();
        let confs: Vec<_> = nodes
            .iter()
            .map(|n| {
                let mut ipam = n.ipam();
                ipam["nodeBlocks"] = json!({ "prefixLength": 28 });
                n.conf(ipam)
            })
            .collect();
        let cids: Vec<String> = nodes.iter().map(|_| unique("c")).collect();
        let outs: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = nodes.iter().zip(&confs).zip(&cids).map(|((n, c), cid)| s.spawn(move || n.run("ADD", cid, c))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut blocks = HashSet::new();
        let mut retries = 0;
        for (node, out) in nodes.iter().zip(&outs) {
            assert_eq!(out.exit, 0, "a node could not claim a block: {}\n{}", out.stdout, node.log());
            let ip = address_of(&out.result());
            let state = node.state();
            let claimed: Vec<IpNet> = state["blocks"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().parse().unwrap()).collect();
            assert_eq!(claimed.len(), 1, "{state}");
            assert!(claimed[0].contains(&ip), "{ip} is not in the node's block {}", claimed[0]);
            // The whole block is on this node's port, and only there.
            let on_port: HashSet<IpAddr> = node.port_ips().into_iter().filter(|a| *a != node.primary).collect();
            assert_eq!(on_port.len(), 16, "{:?}", on_port);
            assert!(on_port.iter().all(|a| claimed[0].contains(a)), "{on_port:?} outside {}", claimed[0]);
            assert!(blocks.insert(claimed[0]), "block {} claimed twice", claimed[0]);
            retries += node.log().matches("was taken meanwhile").count();
        }
        println!("6 nodes at once: {retries} claim(s) repeated after a collision");
        for ((node, conf), cid) in nodes.iter().zip(&confs).zip(&cids) {
            node.run("DEL", cid, conf).assert_ok();
            let mut gc = conf.clone();
            gc["cniVersion"] = json!("1.1.0");
            gc["cni.dev/valid-attachments"] = json!([]);
            node.run("GC", "", &gc).assert_ok();
            assert_eq!(node.port_ips(), vec![node.primary], "GC must release the idle block");
        }
    }
    block_on(stack.neutron().delete_network(&net)).unwrap();
}
