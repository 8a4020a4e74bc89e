//! vrouter-route-controller against a real Neutron: routes converge on 40 pods over 3 VMs,
//! follow pod deletions, leave hand-made routes alone, cause no churn on restart, and stay
//! within the router_route quota (30 by default) with a clear refusal, or fit entirely when
//! pods come in node-affine blocks; see every VM across Neutron's pages; and stop routing a
//! released (quarantined) address at the next change check.

mod controller_support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use controller_support::{lookup, status_of, Lab};
use testbed::openstack::shared;

/// Every pod routes to its VM, and every address a route covers is a pod of that VM.
fn assert_exact(lab: &Lab, pods: &BTreeMap<Ipv4Addr, Ipv4Addr>) {
    let routes = lab.routes();
    for (pod, vm) in pods {
        assert_eq!(lookup(&routes, *pod), Some(*vm), "pod {pod} should route to {vm}; routes: {routes:?}");
    }
    for (dst, nexthop) in routes.iter().filter(|(d, _)| lab.cidr.contains(&d.network())) {
        if pods.values().any(|v| v == nexthop) {
            for ip in dst.hosts().chain([dst.network(), dst.broadcast()]) {
                if let Some(vm) = pods.get(&ip) {
                    assert_eq!(vm, nexthop, "{dst} via {nexthop} covers {ip} of {vm}");
                }
            }
        }
    }
}

#[test]
fn routes_follow_pods_spare_hand_made_routes_and_restart_quietly() {
    let mut lab = Lab::new(shared(), "vrc-follow", "10.61.0.0/24");
    let vms: Vec<_> = (0..3u32).map(|i| lab.vm(&format!("vm{i}"), lab.ip(11 + i), &format!("fa:16:3e:61:00:{i:02x}"))).collect();
    // 40 pods: contiguous runs per VM (14 + 13 + 13), as a per-node IPAM would hand them out.
    let runs = [(20u32, 14u32), (34, 13), (47, 13)];
    let mut pods = BTreeMap::new();
    for (vm, (start, len)) in vms.iter().zip(runs) {
        let ips: Vec<Ipv4Addr> = (start..start + len).map(|n| lab.ip(n)).collect();
        lab.set_pods(vm, &ips);
        pods.extend(ips.iter().map(|ip| (*ip, vm.primary)));
    }
    // Hand-made routes, one of them looking exactly like ours (in-subnet /32 via a managed VM).
    lab.add_route_by_hand("192.168.77.0/24", vms[0].primary);
    lab.add_route_by_hand(&format!("{}/32", lab.ip(200)), vms[1].primary);

    let out = lab.controller_once(&[]);
    assert!(out.status.success(), "first pass failed: {}", String::from_utf8_lossy(&out.stderr));
    let st = status_of(&out);
    assert_eq!(st["routers"][0]["desired"], st["routers"][0]["applied"], "{st}");
    assert_exact(&lab, &pods);
    let n_routes = lab.routes().len();
    assert!(n_routes < 40, "aggregation should need fewer routes than pods, got {n_routes}");

    // Ten pods go away (4 from the first VM, 3 each from the others).
    for (vm, (start, len)) in vms.iter().zip(runs) {
        let drop = if start == 20 { 4 } else { 3 };
        let keep: Vec<Ipv4Addr> = (start..start + len - drop).map(|n| lab.ip(n)).collect();
        lab.set_pods(vm, &keep);
        for n in start + len - drop..start + len {
            pods.remove(&lab.ip(n));
        }
    }
    let out = lab.controller_once(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_exact(&lab, &pods);
    let routes = lab.routes();
    for n in 20..60 {
        let ip = lab.ip(n);
        if !pods.contains_key(&ip) {
            assert_eq!(lookup(&routes, ip), None, "deleted pod {ip} still routed");
        }
    }
    assert!(routes.contains(&("192.168.77.0/24".parse().unwrap(), vms[0].primary)), "hand-made route removed");
    assert!(routes.contains(&(format!("{}/32", lab.ip(200)).parse().unwrap(), vms[1].primary)), "hand-made look-alike removed");

    // A restarted controller finds everything in place and writes nothing.
    let revision = lab.revision();
    let out = lab.controller_once(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lab.revision(), revision, "restart caused writes: {}", String::from_utf8_lossy(&out.stderr));

    // --release (uninstall) takes back every route of ours and its ledger tag, nothing else.
    let out = lab.controller_once(&["--release"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lab.routes().len(), 2, "only the hand-made routes remain: {:?}", lab.routes());
    assert!(lab.router_tags().iter().all(|t| !t.starts_with("vrouter-route:")), "{:?}", lab.router_tags());
    assert!(lab.controller_once(&[]).status.success());
    assert_exact(&lab, &pods);

    // All pods gone: every route of ours goes, hand-made ones stay.
    for vm in &vms {
        lab.set_pods(vm, &[]);
    }
    assert!(lab.controller_once(&[]).status.success());
    assert_eq!(lab.routes().len(), 2, "only the hand-made routes remain: {:?}", lab.routes());
}

#[test]
fn quota_refusal_is_clear_and_node_affine_blocks_fit_under_it() {
    let mut lab = Lab::new(shared(), "vrc-quota", "10.62.0.0/24");
    let vms: Vec<_> = (0..3u32).map(|i| lab.vm(&format!("vm{i}"), lab.ip(11 + i), &format!("fa:16:3e:62:00:{i:02x}"))).collect();
    // 40 pods handed out round-robin: neighbours always sit on different VMs, nothing aggregates.
    let mut per_vm: Vec<Vec<Ipv4Addr>> = vec![vec![]; 3];
    let mut pods = BTreeMap::new();
    for i in 0..40u32 {
        let ip = lab.ip(64 + i);
        per_vm[(i % 3) as usize].push(ip);
        pods.insert(ip, vms[(i % 3) as usize].primary);
    }
    for (vm, ips) in vms.iter().zip(&per_vm) {
        lab.set_pods(vm, ips);
    }

    let out = lab.controller_once(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "exit code 3 means 'converged, routes refused'; stderr: {stderr}");
    assert!(stderr.contains("route limit reached"), "the refusal must be stated: {stderr}");
    let st = status_of(&out);
    let r = &st["routers"][0];
    assert_eq!((r["desired"].as_u64(), r["applied"].as_u64(), r["limit"].as_u64()), (Some(40), Some(30), Some(30)), "{st}");
    assert_eq!(r["refused"].as_array().unwrap().len(), 10, "{st}");
    assert!(r["message"].as_str().unwrap().contains("node-affine"), "{st}");
    let routes = lab.routes();
    assert_eq!(routes.len(), 30);
    for (dst, nexthop) in &routes {
        assert_eq!(pods.get(&dst.addr()), Some(nexthop), "wrong route {dst} via {nexthop}");
    }

    // What the controller relies on: the real Neutron refuses the 31st route with 409 OverQuota.
    let extra = openstack::Route { destination: "10.62.0.250/32".parse().unwrap(), nexthop: vms[0].primary.into() };
    let err = testbed::openstack::block_on(lab.neutron().add_extraroutes(&lab.router_id, &[extra])).expect_err("31st route accepted");
    assert_eq!((err.status(), err.kind()), (Some(409), Some("OverQuota")), "{err}");

    // Under the limit, a restart does not shuffle which 30 routes are kept.
    let revision = lab.revision();
    assert_eq!(lab.controller_once(&[]).status.code(), Some(3));
    assert_eq!(lab.revision(), revision, "no churn while at the limit");

    // Node-affine blocks (each VM holds an aligned /28: its pods plus spares): 3 routes.
    for vm in &vms {
        lab.set_pods(vm, &[]);
    }
    let mut pods = BTreeMap::new();
    let counts = [14u32, 13, 13];
    for (k, vm) in vms.iter().enumerate() {
        let base = 64 + 16 * k as u32;
        let block: Vec<Ipv4Addr> = (base..base + 16).map(|n| lab.ip(n)).collect();
        lab.set_pods(vm, &block);
        pods.extend(block.iter().take(counts[k] as usize).map(|ip| (*ip, vm.primary)));
    }
    let out = lab.controller_once(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pods.len(), 40);
    assert_exact(&lab, &pods);
    let routes = lab.routes();
    assert_eq!(routes.len(), 3, "one /28 per VM: {routes:?}");
    assert!(routes.iter().all(|(d, _)| d.prefix_len() == 28));
}

#[test]
fn a_full_tag_ledger_is_a_clear_refusal_not_an_error() {
    let mut lab = Lab::new(shared(), "vrc-tags", "10.71.0.0/24");
    let vm = lab.vm("vm0", lab.ip(11), "fa:16:3e:71:00:01");
    lab.set_pods(&vm, &[lab.ip(20), lab.ip(22), lab.ip(24)]);
    // Another tool already uses all 50 tags Neutron allows on a router.
    let foreign: Vec<String> = (0..50).map(|i| format!("other-tool-{i}")).collect();
    lab.set_router_tags(&foreign);

    let out = lab.controller_once(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("ownership ledger full"), "{stderr}");
    let st = status_of(&out);
    assert_eq!((st["routers"][0]["applied"].as_u64(), st["routers"][0]["refused"].as_array().map(Vec::len)), (Some(0), Some(3)), "{st}");
    assert!(lab.routes().is_empty(), "no route without its ledger tag");

    // One tag freed: the packed ledger records all three routes in it.
    lab.set_router_tags(&foreign[1..]);
    let out = lab.controller_once(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lab.routes().len(), 3);
    let tags = lab.router_tags();
    assert!(foreign[1..].iter().all(|t| tags.contains(t)), "foreign tags must survive");
    assert_eq!(tags.iter().filter(|t| t.starts_with("vrouter-route:")).count(), 1, "{tags:?}");
}

#[test]
fn every_vm_is_seen_across_neutrons_pages_and_keeps_its_routes() {
    let mut lab = Lab::new(shared(), "vrc-pages", "10.72.0.0/24");
    // More managed VM ports than one page of the test Neutron holds, so the controller's
    // port listing (and its change check's) must follow the `next` links: taking the first
    // page for the whole list would remove the routes of the VMs on the other pages.
    let n_vms = 2 * testbed::openstack::PAGINATION_MAX_LIMIT as u32 + 1;
    let mut pods = BTreeMap::new();
    for i in 0..n_vms {
        let vm = lab.vm(&format!("vm{i}"), lab.ip(11 + i), &format!("fa:16:3e:72:00:{i:02x}"));
        let ip = lab.ip(100 + i);
        lab.set_pods(&vm, &[ip]);
        pods.insert(ip, vm.primary);
    }
    let out = lab.controller_once(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(status_of(&out)["routers"][0]["desired"].as_u64(), Some(u64::from(n_vms)));
    assert_exact(&lab, &pods);
    // A pass over the same pages finds everything in place: nothing removed, nothing written.
    let revision = lab.revision();
    assert!(lab.controller_once(&[]).status.success());
    assert_eq!(lab.revision(), revision);
    assert_exact(&lab, &pods);
}

#[test]
fn a_released_address_loses_its_route_at_the_next_change_check() {
    let mut lab = Lab::new(shared(), "vrc-release", "10.73.0.0/24");
    let vm = lab.vm("vm0", lab.ip(11), "fa:16:3e:73:00:01");
    // A node block: 16 addresses on the port, one route.
    let block: Vec<Ipv4Addr> = (32..48).map(|n| lab.ip(n)).collect();
    lab.set_pods(&vm, &block);
    // Resync only hourly: what happens below is driven by the change check.
    let d = lab.controller_daemon(&["--poll-interval", "1", "--resync-interval", "3600"]);
    controller_support::wait_for("the block route", || (lab.routes().len() == 1).then_some(()));

    // tcnp-ipam releases .40: it stays on the port, tagged released (quarantine), until
    // no route sends it to this VM any more; only then may it leave the port.
    let released = lab.ip(40);
    let n = lab.neutron();
    let tag = format!("veth-route:released={released}");
    testbed::openstack::block_on(n.add_port_tag(&vm.port_id, &tag)).unwrap();
    controller_support::wait_for("the released address unrouted", || (lookup(&lab.routes(), released).is_none()).then_some(()));
    let routes = lab.routes();
    for ip in block.iter().filter(|ip| **ip != released) {
        assert_eq!(lookup(&routes, *ip), Some(vm.primary), "{ip} lost its route: {routes:?}");
    }
    assert!(
        testbed::openstack::block_on(n.get_port(&vm.port_id)).unwrap().fixed_ips.iter().any(|f| f.ip_address == released),
        "the address is still held on the port"
    );
    assert!(d.log().contains("removing"), "{}", d.log());
}
