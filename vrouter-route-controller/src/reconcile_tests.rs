//! The reconciler against an in-memory stand-in for Neutron (unit tests of the apply
//! logic only; the integration tests run against a real Neutron).
use super::*;
use crate::cloud::Snapshot;
use crate::ledger;
use crate::model::{Hosted, RouterState, VmPort};
use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A change another writer makes to the router.
type Interloper = Box<dyn FnOnce(&mut RouterState)>;

struct FakeNeutron {
    router: RefCell<RouterState>,
    ports: Vec<VmPort>,
    quota: usize,
    writes: RefCell<usize>,
    ops: RefCell<Vec<String>>,
    fail_reads: bool,
    known_quota: bool,
    /// Another writer's change, made once right after our next write's revision check
    /// passes (as if it slipped in between two of our calls).
    interloper: RefCell<Option<Interloper>>,
}

impl FakeNeutron {
    fn new(ports: Vec<VmPort>, quota: usize) -> Self {
        let router = RouterState { id: "r1".into(), routes: vec![], tags: vec![], revision: 1 };
        Self {
            router: RefCell::new(router),
            ports,
            quota,
            writes: RefCell::new(0),
            ops: RefCell::new(vec![]),
            fail_reads: false,
            known_quota: false,
            interloper: RefCell::new(None),
        }
    }

    /// Neutron's If-Match: checked only when the write changes something.
    fn write(
        &self,
        op: &str,
        revision: u64,
        change: impl FnOnce(&mut RouterState) -> Result<bool, CloudError>,
    ) -> Result<RouterState, CloudError> {
        *self.writes.borrow_mut() += 1;
        self.ops.borrow_mut().push(op.into());
        let mut r = self.router.borrow_mut();
        let mut next = r.clone();
        if change(&mut next)? {
            if r.revision != revision {
                return Err(CloudError::Conflict(format!("412: expected {revision}, current {}", r.revision)));
            }
            next.revision += 2;
            *r = next;
        }
        let answer = r.clone();
        if let Some(f) = self.interloper.borrow_mut().take() {
            f(&mut r);
            r.revision += 1;
        }
        Ok(answer)
    }
}

impl FakeNeutron {
    /// Tag calls: never conditional (Neutron 29 fails `If-Match` on them), but they
    /// move the revision when they change something.
    fn tag_write(&self, change: impl FnOnce(&mut Vec<String>)) -> Result<(), CloudError> {
        let current = self.router.borrow().revision;
        self.write("tags", current, |r| {
            let before = r.tags.clone();
            change(&mut r.tags);
            Ok(r.tags != before)
        })
        .map(drop)
    }
}

impl Cloud for FakeNeutron {
    async fn snapshot(&self) -> Result<Snapshot, CloudError> {
        if self.fail_reads {
            return Err(CloudError::Unavailable("down".into()));
        }
        let quota = self.known_quota.then_some(self.quota);
        let view = RouterView {
            state: self.router.borrow().clone(),
            subnets: vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
            quota,
        };
        Ok(Snapshot { routers: vec![view], ports: self.ports.clone() })
    }
    async fn fingerprint(&self, _: &[String]) -> Result<u64, CloudError> {
        Ok(0)
    }
    async fn add_routes(&self, _: &str, routes: &[Route], revision: u64) -> Result<RouterState, CloudError> {
        let quota = self.quota;
        self.write("add", revision, |r| {
            let new: Vec<Route> = routes.iter().filter(|x| !r.routes.contains(x)).copied().collect();
            if r.routes.len() + new.len() > quota {
                return Err(CloudError::RouteLimit("Quota exceeded for resources: ['router_route']".into()));
            }
            r.routes.extend(&new);
            Ok(!new.is_empty())
        })
    }
    async fn remove_routes(&self, _: &str, routes: &[Route], revision: u64) -> Result<RouterState, CloudError> {
        self.write("remove", revision, |r| {
            let before = r.routes.len();
            r.routes.retain(|x| !routes.contains(x));
            Ok(r.routes.len() != before)
        })
    }
    async fn add_tag(&self, _: &str, tag: &str) -> Result<(), CloudError> {
        self.tag_write(|tags| {
            if !tags.iter().any(|t| t == tag) {
                assert!(tags.len() < ledger::MAX_TAGS, "Neutron refuses more than 50 tags");
                tags.push(tag.to_string());
            }
        })
    }
    async fn remove_tag(&self, _: &str, tag: &str) -> Result<(), CloudError> {
        self.tag_write(|tags| tags.retain(|t| t != tag))
    }
    async fn router(&self, _: &str) -> Result<RouterState, CloudError> {
        Ok(self.router.borrow().clone())
    }
}

fn vm(n: u8, pods: impl IntoIterator<Item = u8>) -> VmPort {
    VmPort {
        port_id: format!("p{n}"),
        v4: Hosted { primary: Ipv4Addr::new(10, 0, 0, n), pod_ips: pods.into_iter().map(|i| Ipv4Addr::new(10, 0, 0, i)).collect() },
        v6: None,
    }
}

fn ip6(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)
}

/// `vm(n, pods)` dual-stack: own IPv6 address `fd00::<n>`, IPv6 pods `fd00::<i>`.
fn vm6(n: u8, pods: impl IntoIterator<Item = u8> + Clone) -> VmPort {
    let v6 = Hosted { primary: ip6(n.into()), pod_ips: pods.clone().into_iter().map(|i| ip6(i.into())).collect() };
    VmPort { v6: Some(v6), ..vm(n, pods) }
}

fn host6(i: u8, n: u8) -> Route {
    Route::host(ip6(i.into()), ip6(n.into()))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn cluster() -> Cluster {
    Cluster::new("c1").unwrap()
}

fn owned(c: &FakeNeutron) -> BTreeSet<Route> {
    ledger::owned(&c.router.borrow().tags, &cluster())
}

/// The route calls made (tag writes left out).
fn route_ops(c: &FakeNeutron) -> Vec<String> {
    c.ops.borrow().iter().filter(|o| *o != "tags").cloned().collect()
}

fn host_routes() -> Settings {
    Settings { shape: Shape { aggregate: false, min_prefix: 24 }, ..Settings::new(cluster()) }
}

#[test]
fn converges_then_second_pass_writes_nothing() {
    let cloud = FakeNeutron::new(vec![vm(2, 20..30), vm(3, 30..40)], 100);
    let mut rec = Reconciler::new(host_routes());
    let rep = block_on(rec.run(&cloud)).unwrap();
    assert_eq!((rep.routers[0].desired, rep.routers[0].applied), (20, 20));
    let writes = *cloud.writes.borrow();
    block_on(rec.run(&cloud)).unwrap();
    assert_eq!(*cloud.writes.borrow(), writes, "a converged router gets no writes");
    assert_eq!(owned(&cloud).len(), 20);
}

#[test]
fn over_quota_keeps_what_fits_and_reports_the_rest() {
    let cloud = FakeNeutron::new(vec![vm(2, 20..40)], 12);
    let foreign = Route::v4("192.168.0.0/24".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 2));
    cloud.router.borrow_mut().routes.push(foreign);
    let mut rec = Reconciler::new(host_routes());
    let rep = block_on(rec.run(&cloud)).unwrap();
    let r = &rep.routers[0];
    assert_eq!((r.applied, r.refused.len(), r.limit), (11, 9, Some(12)));
    assert_eq!(r.limit_errors, 2, "the batch and the 12th single add were refused");
    assert!(cloud.router.borrow().routes.contains(&foreign));
    // Tags of refused routes are cleaned up: the ledger matches the router.
    assert_eq!(owned(&cloud).len(), 11);
    // The learned limit makes the next pass a no-op instead of another refusal storm.
    let writes = *cloud.writes.borrow();
    let rep = block_on(rec.run(&cloud)).unwrap();
    assert_eq!(*cloud.writes.borrow(), writes);
    assert_eq!(rep.routers[0].refused.len(), 9);
    assert_eq!(rep.routers[0].limit_errors, 0, "the learned limit predicts the refusal");
}

#[test]
fn a_full_ledger_refuses_like_the_quota() {
    let cloud = FakeNeutron::new(vec![vm(2, 20..40)], 100);
    // Another tool uses all but one of Neutron's 50 tags.
    cloud.router.borrow_mut().tags = (0..ledger::MAX_TAGS - 1).map(|i| format!("other-{i}")).collect();
    let mut rec = Reconciler::new(host_routes());
    let r = block_on(rec.run(&cloud)).unwrap().routers.remove(0);
    let routes: Vec<Route> = (20..40).map(|i| Route::host(Ipv4Addr::new(10, 0, 0, i), Ipv4Addr::new(10, 0, 0, 2))).collect();
    let first_tag = ledger::pack(&routes, &cluster())[0].1;
    assert!(first_tag < 20);
    assert_eq!((r.applied, r.refused.len(), r.limit_errors, r.limit), (first_tag, 20 - first_tag, 1, Some(first_tag)));
    assert_eq!(cloud.router.borrow().routes.len(), first_tag, "no route without its ledger tag");
    assert_eq!(cloud.router.borrow().tags.len(), ledger::MAX_TAGS);
}

#[test]
fn another_clusters_routes_and_records_are_never_touched() {
    let cloud = FakeNeutron::new(vec![vm(2, 20..23)], 100);
    let c2 = Cluster::new("c2").unwrap();
    // Cluster c2's controller routes its pods (next hops on its own network) via this router.
    let theirs: Vec<Route> = (50..53).map(|i| Route::host(Ipv4Addr::new(10, 1, 0, i), Ipv4Addr::new(10, 1, 0, 2))).collect();
    {
        let mut r = cloud.router.borrow_mut();
        r.routes = theirs.clone();
        r.tags = ledger::pack(&theirs, &c2).into_iter().map(|(t, _)| t).collect();
    }
    let their_tags = cloud.router.borrow().tags.clone();
    block_on(Reconciler::new(host_routes()).run(&cloud)).unwrap();
    block_on(Reconciler::new(Settings { release: true, ..host_routes() }).run(&cloud)).unwrap();
    let r = cloud.router.borrow();
    assert_eq!(r.routes, theirs);
    assert_eq!(r.tags, their_tags);
}

#[test]
fn legacy_records_of_our_vms_are_adopted_and_others_left_alone() {
    let mut cloud = FakeNeutron::new(vec![vm(2, 20..22)], 100);
    let ours: Vec<Route> = (20..22).map(|i| Route::host(Ipv4Addr::new(10, 0, 0, i), Ipv4Addr::new(10, 0, 0, 2))).collect();
    let gone_vm = Route::host(Ipv4Addr::new(10, 0, 0, 30), Ipv4Addr::new(10, 0, 0, 9));
    {
        let mut r = cloud.router.borrow_mut();
        r.routes = [ours.clone(), vec![gone_vm]].concat();
        // What a controller without a cluster id wrote.
        r.tags = vec![format!("{}10.0.0.20_32@10.0.0.2+10.0.0.21_32@10.0.0.2+10.0.0.30_32@10.0.0.9", ledger::TAG_PREFIX)];
    }
    let mut rec = Reconciler::new(host_routes());
    block_on(rec.run(&cloud)).unwrap();
    assert_eq!(owned(&cloud), ours.iter().copied().collect());
    // The pods go: our adopted routes go with them; the legacy route of a VM that is not ours stays.
    cloud.ports = vec![vm(2, [])];
    block_on(rec.run(&cloud)).unwrap();
    let r = cloud.router.borrow();
    assert_eq!(r.routes, vec![gone_vm]);
    assert_eq!(r.tags, vec![format!("{}10.0.0.30_32@10.0.0.9", ledger::TAG_PREFIX)]);
}

#[test]
fn a_write_by_another_replica_in_between_restarts_the_pass_and_loses_nothing() {
    let mut cloud = FakeNeutron::new(vec![vm(2, 20..22)], 100);
    let mut rec = Reconciler::new(host_routes());
    block_on(rec.run(&cloud)).unwrap();
    // Pod .21 goes. Right after our route removal, the other replica (which saw .21
    // come back) adds it again: our record drop must not go through on that basis.
    cloud.ports = vec![vm(2, 20..21)];
    let again = Route::host(Ipv4Addr::new(10, 0, 0, 21), Ipv4Addr::new(10, 0, 0, 2));
    *cloud.interloper.borrow_mut() = Some(Box::new(move |r: &mut RouterState| r.routes.push(again)));
    let rep = block_on(rec.run(&cloud)).unwrap();
    assert_eq!(rep.conflicts, 1, "{:?}", cloud.ops.borrow());
    // The pass started over from what is there now and finished the job: the router
    // is as the ports say, and every route on it is recorded.
    let r = cloud.router.borrow().clone();
    assert_eq!(r.routes, vec![Route::host(Ipv4Addr::new(10, 0, 0, 20), Ipv4Addr::new(10, 0, 0, 2))]);
    assert_eq!(owned(&cloud), r.routes.iter().copied().collect());
}

#[test]
fn ledger_stays_exact_through_adds_removals_and_refusals() {
    let mut cloud = FakeNeutron::new(vec![vm(2, 20..40)], 15);
    let mut rec = Reconciler::new(host_routes());
    block_on(rec.run(&cloud)).unwrap();
    let exact = |c: &FakeNeutron| {
        let r = c.router.borrow();
        assert_eq!(ledger::owned(&r.tags, &cluster()), r.routes.iter().copied().collect::<BTreeSet<_>>());
    };
    exact(&cloud);
    cloud.ports = vec![vm(2, 25..33)];
    block_on(rec.run(&cloud)).unwrap();
    exact(&cloud);
    assert_eq!(cloud.router.borrow().routes.len(), 8);
}

#[test]
fn aggregation_fits_under_the_quota() {
    let cloud = FakeNeutron::new(vec![vm(2, 16..32), vm(3, 32..48), vm(4, 48..64)], 30);
    let mut rec = Reconciler::new(Settings::new(cluster()));
    let rep = block_on(rec.run(&cloud)).unwrap();
    assert_eq!((rep.routers[0].applied, rep.routers[0].refused.len()), (3, 0));
}

#[test]
fn failed_read_writes_nothing() {
    let mut cloud = FakeNeutron::new(vec![vm(2, 20..22)], 30);
    let mut rec = Reconciler::new(host_routes());
    block_on(rec.run(&cloud)).unwrap();
    cloud.fail_reads = true;
    let before = cloud.router.borrow().routes.clone();
    assert!(matches!(block_on(rec.run(&cloud)), Err(CloudError::Unavailable(_))));
    assert_eq!(cloud.router.borrow().routes, before);
}

#[test]
fn pods_gone_routes_removed_but_foreign_kept() {
    let mut cloud = FakeNeutron::new(vec![vm(2, 20..25)], 30);
    let mut rec = Reconciler::new(host_routes());
    block_on(rec.run(&cloud)).unwrap();
    let hand = Route::host(Ipv4Addr::new(10, 0, 0, 99), Ipv4Addr::new(10, 0, 0, 2));
    cloud.router.borrow_mut().routes.push(hand);
    cloud.ports = vec![vm(2, 20..21)];
    block_on(rec.run(&cloud)).unwrap();
    let routes = cloud.router.borrow().routes.clone();
    assert_eq!(routes.len(), 2);
    assert!(routes.contains(&hand));
}

#[test]
fn release_removes_all_owned_routes_and_their_tags() {
    let cloud = FakeNeutron::new(vec![vm(2, 20..25)], 30);
    let hand = Route::host(Ipv4Addr::new(10, 0, 0, 99), Ipv4Addr::new(10, 0, 0, 2));
    cloud.router.borrow_mut().routes.push(hand);
    block_on(Reconciler::new(host_routes()).run(&cloud)).unwrap();
    assert_eq!(cloud.router.borrow().routes.len(), 6);
    block_on(Reconciler::new(Settings { release: true, ..host_routes() }).run(&cloud)).unwrap();
    assert_eq!(cloud.router.borrow().routes, vec![hand]);
    assert!(owned(&cloud).is_empty());
}

#[test]
fn reaggregation_adds_the_block_before_removing_what_it_replaces() {
    let mut cloud = FakeNeutron::new(vec![vm(2, 16..31)], 30);
    let mut rec = Reconciler::new(Settings::new(cluster()));
    block_on(rec.run(&cloud)).unwrap();
    assert_eq!(cloud.router.borrow().routes.len(), 4, "15 addresses: /29 /30 /31 /32");
    cloud.ops.borrow_mut().clear();
    cloud.ports = vec![vm(2, 16..32)];
    block_on(rec.run(&cloud)).unwrap();
    assert_eq!(route_ops(&cloud), ["add", "remove"]);
    assert_eq!(cloud.router.borrow().routes, vec![Route::v4("10.0.0.16/28".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 2))]);
}

#[test]
fn at_a_known_limit_removals_make_room_first() {
    let mut cloud = FakeNeutron::new(vec![vm(2, 16..31)], 4);
    cloud.known_quota = true;
    let mut rec = Reconciler::new(Settings::new(cluster()));
    block_on(rec.run(&cloud)).unwrap();
    cloud.ops.borrow_mut().clear();
    cloud.ports = vec![vm(2, 16..32)];
    block_on(rec.run(&cloud)).unwrap();
    assert_eq!(route_ops(&cloud), ["remove", "add"]);
    assert_eq!(cloud.router.borrow().routes.len(), 1);
}

#[test]
fn at_an_unknown_limit_a_refused_add_is_retried_after_the_removals() {
    let mut cloud = FakeNeutron::new(vec![vm(2, 16..31)], 4);
    let mut rec = Reconciler::new(Settings::new(cluster()));
    block_on(rec.run(&cloud)).unwrap();
    cloud.ops.borrow_mut().clear();
    cloud.ports = vec![vm(2, 16..32)];
    let rep = block_on(rec.run(&cloud)).unwrap();
    assert_eq!(route_ops(&cloud), ["add", "add", "remove", "add"], "batch refused, single refused, room made, added");
    assert!(rep.routers[0].refused.is_empty());
    assert_eq!(cloud.router.borrow().routes, vec![Route::v4("10.0.0.16/28".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 2))]);
}

#[test]
fn dry_run_writes_nothing() {
    let cloud = FakeNeutron::new(vec![vm(2, 20..25)], 30);
    let mut rec = Reconciler::new(Settings { dry_run: true, ..host_routes() });
    block_on(rec.run(&cloud)).unwrap();
    assert_eq!(*cloud.writes.borrow(), 0);
}

#[test]
fn dual_stack_pods_get_both_families_with_one_ledger_and_follow_the_ports() {
    let mut cloud = FakeNeutron::new(vec![vm6(2, 20..23), vm(3, 30..32)], 100);
    let mut rec = Reconciler::new(Settings::new(cluster()));
    let rep = block_on(rec.run(&cloud)).unwrap();
    let r = &rep.routers[0];
    // 20..23 aggregates to .20/31 + .22/32 in IPv4, and alike in IPv6 (fd00::14/127 +
    // fd00::16/128); the other VM is IPv4 only.
    assert_eq!((r.desired, r.applied), (2 + 2 + 1, 5), "{r:?}");
    let v6: BTreeSet<Route> = cloud.router.borrow().routes.iter().filter(|r| r.destination().addr().is_ipv6()).copied().collect();
    assert_eq!(v6, [Route::v6("fd00::14/127".parse().unwrap(), ip6(2)), host6(22, 2)].into());
    assert_eq!(owned(&cloud), cloud.router.borrow().routes.iter().copied().collect(), "every route recorded");
    let tags = cloud.router.borrow().tags.clone();
    // A tag holds routes of one family (what a build before IPv6 relies on).
    assert!(tags.iter().all(|t| t.contains("fd00::") != t.contains("10.0.0.")), "{tags:?}");
    // A converged dual-stack router gets no writes.
    let writes = *cloud.writes.borrow();
    block_on(rec.run(&cloud)).unwrap();
    assert_eq!(*cloud.writes.borrow(), writes);
    // The IPv6 pods go (their primary6 tag goes with them): the /128s and their records go,
    // the IPv4 routes stay.
    cloud.ports = vec![vm(2, 20..23), vm(3, 30..32)];
    block_on(rec.run(&cloud)).unwrap();
    let routes = cloud.router.borrow().routes.clone();
    assert!(routes.iter().all(|r| r.destination().addr().is_ipv4()), "{routes:?}");
    assert_eq!(routes.len(), 3);
    assert_eq!(owned(&cloud), routes.iter().copied().collect());
    block_on(Reconciler::new(Settings { release: true, ..Settings::new(cluster()) }).run(&cloud)).unwrap();
    assert!(cloud.router.borrow().routes.is_empty() && cloud.router.borrow().tags.is_empty());
}

#[test]
fn ipv6_routes_share_the_quota_and_ipv4_ones_are_kept_first() {
    let cloud = FakeNeutron::new(vec![vm6(2, 20..26)], 8);
    let mut rec = Reconciler::new(host_routes());
    let r = block_on(rec.run(&cloud)).unwrap().routers.remove(0);
    assert_eq!((r.desired, r.applied, r.refused.len(), r.limit), (12, 8, 4, Some(8)), "{r:?}");
    // Of equally wide routes, IPv4 ones come first (the family every pod has).
    assert_eq!(r.refused, (22..26).map(|i| host6(i, 2)).collect::<Vec<_>>());
    assert_eq!(owned(&cloud), cloud.router.borrow().routes.iter().copied().collect());
}

#[test]
fn a_foreign_ipv6_route_counts_against_the_limit_and_stays() {
    let mut cloud = FakeNeutron::new(vec![vm6(2, 20..22)], 4);
    cloud.known_quota = true;
    let hand = Route::v6("2001:db8::/64".parse().unwrap(), ip6(2));
    cloud.router.borrow_mut().routes.push(hand);
    let r = block_on(Reconciler::new(host_routes()).run(&cloud)).unwrap().routers.remove(0);
    assert_eq!((r.applied, r.refused.len()), (3, 1), "{r:?}");
    block_on(Reconciler::new(Settings { release: true, ..host_routes() }).run(&cloud)).unwrap();
    assert_eq!(cloud.router.borrow().routes, vec![hand]);
}
