//! Several writers on one router, against the real Neutron: two clusters (one controller
//! each, on two networks behind one router) never remove each other's routes or records;
//! records written before cluster ids existed are migrated safely; and two replicas of one
//! controller running at once (a node partition) lose no route and no record, because
//! route writes are conditional on the router's revision (`If-Match`, which the real
//! Neutron enforces on them: checked first) and tag writes are read back.

mod controller_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use controller_support::{status_of, wait_for, HoldProxy, Lab, Vm};
use ipnet::Ipv4Net;
use testbed::openstack::{block_on, shared};

type Routes = BTreeSet<(Ipv4Net, Ipv4Addr)>;

fn hosts(lab: &Lab, vm: &Vm, range: std::ops::Range<u32>) -> Routes {
    range.map(|n| (Ipv4Net::new(lab.ip(n), 32).unwrap(), vm.primary)).collect()
}

/// The routes the ledger tags of `cluster` record on the router.
fn recorded(lab: &Lab, cluster: &str) -> Routes {
    let prefix = format!("vrouter-route:{cluster}:");
    let mut out = Routes::new();
    for t in lab.router_tags() {
        let Some(entries) = t.strip_prefix(&prefix) else { continue };
        for e in entries.split('+') {
            let (dst, nexthop) = e.split_once('@').unwrap();
            let (addr, len) = dst.split_once('_').unwrap();
            out.insert((Ipv4Net::new(addr.parse().unwrap(), len.parse().unwrap()).unwrap(), nexthop.parse().unwrap()));
        }
    }
    out
}

fn ok(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "controller failed: {stderr}");
    stderr
}

fn route(dst: Ipv4Addr, nexthop: Ipv4Addr) -> openstack::Route {
    openstack::Route { destination: format!("{dst}/32").parse().unwrap(), nexthop: IpAddr::V4(nexthop) }
}

#[test]
fn neutron_refuses_stale_conditional_route_writes_and_tag_writes_move_the_revision() {
    let mut lab = Lab::new(shared(), "vrc-ifmatch", "10.80.0.0/24");
    let vm = lab.vm("vm0", lab.ip(11), "fa:16:3e:80:00:01");
    let n = lab.neutron();
    let stale = lab.revision();
    // Someone else writes: the revision moves on.
    lab.add_route_by_hand(&format!("{}/32", lab.ip(50)), vm.primary);
    let r = route(lab.ip(51), vm.primary);
    let e = block_on(n.add_extraroutes_if(&lab.router_id, std::slice::from_ref(&r), stale)).expect_err("stale add accepted");
    assert!(e.is_revision_conflict(), "add_extraroutes: {e}");
    let e = block_on(n.remove_extraroutes_if(&lab.router_id, &[route(lab.ip(50), vm.primary)], stale)).expect_err("stale remove accepted");
    assert!(e.is_revision_conflict(), "remove_extraroutes: {e}");
    // A tag write (which cannot be conditional: Neutron 29 answers 500 to If-Match on
    // its tag API) moves the revision too, so it fences the next conditional route write.
    let current = lab.revision();
    block_on(n.add_router_tag(&lab.router_id, "someone-else")).unwrap();
    let e = block_on(n.add_extraroutes_if(&lab.router_id, std::slice::from_ref(&r), current)).expect_err("add after a tag write accepted");
    assert!(e.is_revision_conflict(), "{e}");
    // At the current revision the call goes through and answers with the new revision.
    let current = lab.revision();
    let after = block_on(n.add_extraroutes_if(&lab.router_id, &[r], current)).expect("add at the current revision");
    assert!(after.revision_number > current);
    assert_eq!(after.revision_number, lab.revision());
}

#[test]
fn two_clusters_behind_one_router_never_remove_each_others_routes() {
    let stack = shared();
    let mut one = Lab::new(stack, "vrc-cl1", "10.81.0.0/24");
    let mut two = Lab::on_router(stack, "vrc-cl2", "10.82.0.0/24", &one.router_id.clone());
    let vm1 = one.vm("vm1", one.ip(11), "fa:16:3e:81:00:01");
    let vm2 = two.vm("vm2", two.ip(11), "fa:16:3e:82:00:01");
    one.set_pods(&vm1, &(20..24).map(|n| one.ip(n)).collect::<Vec<_>>());
    two.set_pods(&vm2, &(20..24).map(|n| two.ip(n)).collect::<Vec<_>>());
    let (routes1, routes2) = (hosts(&one, &vm1, 20..24), hosts(&two, &vm2, 20..24));
    let c1 = ["--cluster-id", "c1", "--no-aggregate"];
    let c2 = ["--cluster-id", "c2", "--no-aggregate"];
    // One hand-made tag and route of an operator on the shared router.
    one.add_route_by_hand("192.168.90.0/24", vm1.primary);
    block_on(one.neutron().add_router_tag(&one.router_id, "owner=netops")).unwrap();

    ok(&one.controller_once(&c1));
    ok(&two.controller_once(&c2));
    let all = one.routes();
    assert!(routes1.is_subset(&all) && routes2.is_subset(&all), "{all:?}");
    assert_eq!((recorded(&one, "c1"), recorded(&one, "c2")), (routes1.clone(), routes2.clone()));

    // Each controller sees the other's routes as foreign: a second pass of either writes nothing.
    let revision = one.revision();
    ok(&one.controller_once(&c1));
    ok(&two.controller_once(&c2));
    assert_eq!(one.revision(), revision, "a converged controller wrote to the shared router");

    // Cluster 1's pods go: its routes go, cluster 2's routes and records stay.
    one.set_pods(&vm1, &[]);
    ok(&one.controller_once(&c1));
    let all = one.routes();
    assert!(routes2.is_subset(&all), "cluster 2 lost routes: {all:?}");
    assert!(all.is_disjoint(&routes1), "cluster 1's routes should be gone: {all:?}");
    assert_eq!(recorded(&one, "c2"), routes2);
    assert!(recorded(&one, "c1").is_empty());

    // Uninstalling cluster 1 (`--release`) takes nothing of cluster 2's, nor the operator's.
    one.set_pods(&vm1, &[one.ip(30)]);
    ok(&one.controller_once(&c1));
    ok(&one.controller_once(&[&c1[..], &["--release"]].concat()));
    let all = one.routes();
    assert_eq!(all, routes2.iter().copied().chain([("192.168.90.0/24".parse().unwrap(), vm1.primary)]).collect());
    assert_eq!(recorded(&one, "c2"), routes2);
    assert!(one.router_tags().contains(&"owner=netops".to_string()));
    drop(two);
}

#[test]
fn legacy_records_are_migrated_by_the_cluster_whose_vms_they_route_to() {
    let stack = shared();
    let mut one = Lab::new(stack, "vrc-mig1", "10.83.0.0/24");
    let mut two = Lab::on_router(stack, "vrc-mig2", "10.84.0.0/24", &one.router_id.clone());
    let vm1 = one.vm("vm1", one.ip(11), "fa:16:3e:83:00:01");
    let vm2 = two.vm("vm2", two.ip(11), "fa:16:3e:84:00:01");
    let gone = one.ip(12); // a VM of cluster 1 that no longer exists
    one.set_pods(&vm1, &[one.ip(20), one.ip(21)]);
    two.set_pods(&vm2, &[two.ip(20)]);
    // What controllers before cluster ids left: routes, and records without a cluster
    // (both clusters' routes in one tag, as the old ledger packed whatever it added).
    let legacy = [(one.ip(20), vm1.primary), (one.ip(21), vm1.primary), (two.ip(20), vm2.primary), (one.ip(40), gone)];
    let wire: Vec<openstack::Route> = legacy.iter().map(|(d, n)| route(*d, *n)).collect();
    let n = one.neutron();
    block_on(n.add_extraroutes(&one.router_id, &wire[..3])).unwrap();
    let entry = |(d, n): &(Ipv4Addr, Ipv4Addr)| format!("{d}_32@{n}");
    let tag = |entries: &[(Ipv4Addr, Ipv4Addr)]| format!("vrouter-route:{}", entries.iter().map(entry).collect::<Vec<_>>().join("+"));
    one.set_router_tags(&[tag(&legacy[..3]), tag(&legacy[3..])]);

    let c1 = ["--cluster-id", "c1", "--no-aggregate"];
    let c2 = ["--cluster-id", "c2", "--no-aggregate"];
    ok(&one.controller_once(&c1));
    assert_eq!(recorded(&one, "c1"), hosts(&one, &vm1, 20..22), "cluster 1 adopts its own VM's records");
    let tags = one.router_tags();
    assert!(tags.contains(&tag(&legacy[2..3])), "cluster 2's record stays legacy: {tags:?}");
    assert!(tags.contains(&tag(&legacy[3..])), "a gone VM's record is nobody's to take: {tags:?}");
    ok(&two.controller_once(&c2));
    assert_eq!(recorded(&one, "c2"), hosts(&two, &vm2, 20..21));

    // From now on each removes only its own: cluster 1's pods go, cluster 2's route stays.
    one.set_pods(&vm1, &[]);
    ok(&one.controller_once(&c1));
    assert_eq!(one.routes(), hosts(&two, &vm2, 20..21));
    let ledger: Vec<String> = one.router_tags().into_iter().filter(|t| t.starts_with("vrouter-route:")).collect();
    assert_eq!(ledger.len(), 2, "the gone VM's legacy record and cluster 2's: {ledger:?}");
    assert!(ledger.contains(&tag(&legacy[3..])) && ledger.iter().any(|t| t.starts_with("vrouter-route:c2:")), "{ledger:?}");
    drop(two);
}

fn neutron_addr() -> SocketAddr {
    shared().env().neutron_url.trim_start_matches("http://").parse().unwrap()
}

#[test]
fn two_replicas_interleaved_lose_no_route_and_no_record() {
    let mut lab = Lab::new(shared(), "vrc-replicas", "10.85.0.0/24");
    let vm = lab.vm("vm0", lab.ip(11), "fa:16:3e:85:00:01");
    let host = ["--no-aggregate"];
    // .21 first, then .20: each is recorded in a tag of its own.
    lab.set_pods(&vm, &[lab.ip(21)]);
    ok(&lab.controller_once(&host));
    lab.set_pods(&vm, &[lab.ip(20), lab.ip(21)]);
    ok(&lab.controller_once(&host));
    assert_eq!(recorded(&lab, "lab"), hosts(&lab, &vm, 20..22));

    // The pod at .21 goes. Replica B plans from that, removes the route, and is held just
    // before it drops the record (a partition, a slow node: B's pass goes on later).
    lab.set_pods(&vm, &[lab.ip(20)]);
    let proxy = HoldProxy::start(neutron_addr());
    let tag_delete = format!("DELETE /v2.0/routers/{}/tags/", lab.router_id);
    proxy.hold_next(move |line| line.starts_with(&tag_delete));
    let b = lab.controller(&["--once", "--no-aggregate", "--neutron-url", &proxy.url()]).spawn_output();
    proxy.wait_held();
    assert_eq!(lab.routes(), hosts(&lab, &vm, 20..21), "B removed the route of the gone pod");

    // Meanwhile a new pod gets the released address .21, and replica A routes it: the
    // record B is about to drop is exactly the one A relies on.
    lab.set_pods(&vm, &[lab.ip(20), lab.ip(21)]);
    ok(&lab.controller_once(&host));
    assert_eq!(lab.routes(), hosts(&lab, &vm, 20..22));

    // B goes on: its record drop was planned on a router that has changed since.
    proxy.release();
    let b = b.wait();
    let log = ok(&b);
    assert!(log.contains("another writer routed"), "B should have noticed A's write and kept the record: {log}");
    assert_eq!(lab.routes(), hosts(&lab, &vm, 20..22), "a route was lost");
    assert_eq!(recorded(&lab, "lab"), lab.routes(), "every route of ours is recorded, every record routed");

    // So nothing is left behind when the pods go.
    lab.set_pods(&vm, &[]);
    ok(&lab.controller_once(&host));
    assert!(lab.routes().is_empty(), "{:?}", lab.routes());
    assert!(recorded(&lab, "lab").is_empty());
}

#[test]
fn two_replica_daemons_at_once_converge_and_agree() {
    let mut lab = Lab::new(shared(), "vrc-twins", "10.86.0.0/24");
    let vms: Vec<Vm> = (0..3u32).map(|i| lab.vm(&format!("vm{i}"), lab.ip(11 + i), &format!("fa:16:3e:86:00:{i:02x}"))).collect();
    let flags = ["--poll-interval", "1", "--resync-interval", "3600", "--no-aggregate"];
    let a = lab.controller_daemon(&flags);
    let b = lab.controller_daemon(&flags);
    // Rounds of pods coming and going on every VM, both replicas reacting to each.
    for round in 0..4u32 {
        let mut want = Routes::new();
        for (k, vm) in vms.iter().enumerate() {
            let start = 20 + 10 * k as u32 + round;
            let ips: Vec<Ipv4Addr> = (start..start + 3 + round % 2).map(|n| lab.ip(n)).collect();
            lab.set_pods(vm, &ips);
            want.extend(ips.iter().map(|ip| (Ipv4Net::new(*ip, 32).unwrap(), vm.primary)));
        }
        wait_for(&format!("round {round}"), || (lab.routes() == want && recorded(&lab, "lab") == want).then_some(()));
    }
    for d in [&a, &b] {
        assert_eq!(d.get("/readyz").map(|(c, _)| c), Some(200), "{}", d.log());
    }
    let st = status_of(&lab.controller_once(&["--no-aggregate", "--dry-run"]));
    assert_eq!(st["routers"][0]["desired"], st["routers"][0]["applied"], "{st}");
}

/// `Command::spawn` with captured output, waited for later.
trait SpawnOutput {
    fn spawn_output(&mut self) -> Pending;
}

struct Pending(std::process::Child);

impl Pending {
    fn wait(self) -> std::process::Output {
        self.0.wait_with_output().expect("wait controller")
    }
}

impl SpawnOutput for std::process::Command {
    fn spawn_output(&mut self) -> Pending {
        use std::process::Stdio;
        Pending(self.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start controller"))
    }
}
