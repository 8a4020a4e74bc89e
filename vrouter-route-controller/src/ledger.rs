//! Which routes are ours: an ownership ledger kept as tags on the router itself.
//!
//! Neutron routes carry no owner or description, and a rule such as "the next hop is a
//! managed VM" would both steal hand-made routes that happen to match and leak routes whose
//! VM is gone. So every route the controller adds is first recorded in a router tag, written
//! before the route and dropped after it: a crash in between leaves at most a record
//! without a route, which the next pass forgets, never a route nobody owns. The ledger
//! lives in Neutron, so a restart needs no local state.
//!
//! A tag is `vrouter-route:<cluster>:<dst>_<len>@<nexthop>+<dst>_<len>@<nexthop>...`,
//! packed up to Neutron's 255 characters (about 6-8 routes): Neutron allows 50 tags per
//! router, so packing is what lets the ledger hold a few hundred routes. No `/` (tags travel
//! in URL paths) and no `,` (tag filters). The cluster id scopes ownership: several
//! clusters (one controller each) may share a router, and each reads and rewrites only its
//! own records.
//!
//! IPv6 routes use the same entry, e.g. `fd00::19_128@fd00::8`: `_`, `@` and `+` never
//! occur in an address's text, and the `:`s of IPv6 come only after the cluster id, which
//! has none (legacy records, below, are IPv4 only and have no `:` at all), so the first
//! `:` after the prefix still ends the cluster id. A tag holds routes of one family only:
//! a build before IPv6 reads a tag as all or nothing, so it still reads every IPv4 record
//! and takes an IPv6 tag for someone else's, which it never touches. The longest IPv6
//! entry (two 39-character addresses) is 83 characters, so two always fit in a tag, even
//! with the longest cluster id. Neutron hands out stateful addresses with random interface
//! ids, so real entries are long: two or three per tag (IPv4: five to eight), and IPv6
//! pods fill the 50 tags sooner (about 100-150 routes; Neutron's default `router_route`
//! quota of 30 is usually reached first). A full ledger refuses like the quota. Neutron 29
//! allows 255 characters per tag (`MAX_TAG_LEN` in neutron/extensions/tagging.py).
//!
//! Records written before cluster ids existed (`vrouter-route:<entries>`, "legacy") belong
//! to no cluster. A controller adopts a legacy record (rewrites it as its own) only when its
//! next hop is one of its own VMs: a managed port on its own networks. A cluster's VMs are
//! on its networks, so another cluster's legacy records are never taken; legacy records of
//! VMs that are gone stay untouched, as hand-made routes do (remove them by hand).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::Route;

/// Prefix of every ledger tag.
pub const TAG_PREFIX: &str = "vrouter-route:";
/// Neutron's maximum tag length.
pub const MAX_TAG_LEN: usize = 255;
/// Neutron's maximum number of tags per resource (`MAX_TAGS` in neutron's tagging extension).
pub const MAX_TAGS: usize = 50;
/// Longest cluster id: leaves room for at least five of the longest IPv4 route entries per
/// tag, and two of the longest IPv6 ones.
pub const MAX_CLUSTER_LEN: usize = 63;
const SEP: char = '+';

/// Why a cluster id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster id {0:?} must be 1-{MAX_CLUSTER_LEN} characters of a-z, A-Z, 0-9, '.', '-' (it becomes part of router tags)")]
pub struct BadClusterId(pub String);

/// A validated cluster id: the scope of one controller's ownership records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster(String);

impl Cluster {
    /// Checks `id` against what a tag can carry unambiguously.
    pub fn new(id: &str) -> Result<Cluster, BadClusterId> {
        let ok = !id.is_empty() && id.len() <= MAX_CLUSTER_LEN && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if ok {
            Ok(Cluster(id.to_string()))
        } else {
            Err(BadClusterId(id.to_string()))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn prefix(&self) -> String {
        format!("{TAG_PREFIX}{}:", self.0)
    }
}

fn entry(route: &Route) -> String {
    let d = route.destination();
    format!("{}_{}@{}", d.addr(), d.prefix_len(), route.nexthop())
}

fn parse_entry(s: &str) -> Option<Route> {
    let (dst, nexthop) = s.split_once('@')?;
    let (addr, len) = dst.split_once('_')?;
    let destination = IpNet::new(addr.parse::<IpAddr>().ok()?, len.parse().ok()?).ok()?;
    // A mixed entry is malformed, and so its whole tag is not ours.
    Route::checked(destination, nexthop.parse().ok()?)
}

fn parse_entries(s: &str) -> Option<Vec<Route>> {
    s.split(SEP).map(parse_entry).collect()
}

/// Whose record a ledger tag is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner<'a> {
    /// Written by the controller of this cluster.
    Cluster(&'a str),
    /// Written before cluster ids existed.
    Legacy,
}

/// The owner and routes of a ledger tag; `None` for anyone else's tag (or a malformed one).
pub fn parse_any(tag: &str) -> Option<(Owner<'_>, Vec<Route>)> {
    let rest = tag.strip_prefix(TAG_PREFIX)?;
    // Legacy entries are IPv4 (no ':') and cluster ids have no ':', so the first ':' ends
    // a cluster id; IPv6 entries come only after one.
    match rest.split_once(':') {
        Some((cluster, entries)) => Some((Owner::Cluster(cluster), parse_entries(entries)?)),
        None => Some((Owner::Legacy, parse_entries(rest)?)),
    }
}

/// The routes a tag records for `cluster`; `None` for any other tag.
pub fn parse(tag: &str, cluster: &Cluster) -> Option<Vec<Route>> {
    match parse_any(tag)? {
        (Owner::Cluster(c), routes) if c == cluster.as_str() => Some(routes),
        _ => None,
    }
}

/// All routes recorded in `tags` for `cluster`.
pub fn owned(tags: &[String], cluster: &Cluster) -> BTreeSet<Route> {
    tags.iter().filter_map(|t| parse(t, cluster)).flatten().collect()
}

/// Packs in order, starting a new tag when the family changes: an IPv4 record must stay
/// readable by a build before IPv6 (see the module docs). Callers list routes grouped by
/// family (the planner's order and `Route`'s order both do), so that costs one tag at most.
fn pack_with(prefix: &str, routes: &[Route]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    let mut family = None;
    for r in routes {
        let e = entry(r);
        let v4 = r.destination().addr().is_ipv4();
        let same_family = family == Some(v4);
        family = Some(v4);
        match out.last_mut() {
            Some((tag, n)) if same_family && tag.len() + 1 + e.len() <= MAX_TAG_LEN => {
                tag.push(SEP);
                tag.push_str(&e);
                *n += 1;
            }
            _ => out.push((format!("{prefix}{e}"), 1)),
        }
    }
    out
}

/// Tags recording `routes` for `cluster`, in order, each within [`MAX_TAG_LEN`]; with the
/// number of routes in each, so a caller that can store only the first n tags knows which
/// routes are recorded.
pub fn pack(routes: &[Route], cluster: &Cluster) -> Vec<(String, usize)> {
    pack_with(&cluster.prefix(), routes)
}

/// A change of the ledger: tags to add and tags to delete (applied together, in one
/// conditional write of the router's whole tag list).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// New tags.
    pub write: Vec<String>,
    /// Old tags.
    pub delete: Vec<String>,
}

impl Rewrite {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.write.is_empty() && self.delete.is_empty()
    }

    /// `tags` after the rewrite: the old order kept, new tags appended, no duplicates.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = tags.iter().filter(|t| !self.delete.contains(t)).cloned().collect();
        for t in &self.write {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }
}

/// Rewrites the tags `select` picks so that they no longer record the routes `drop` picks:
/// each affected tag is deleted and what it still records (unless recorded elsewhere) is
/// packed anew under `prefix`.
fn rewrite(tags: &[String], prefix: &str, select: impl Fn(&str) -> Option<Vec<Route>>, drop: impl Fn(&Route) -> bool) -> Rewrite {
    let mut rw = Rewrite::default();
    let mut keep: Vec<Route> = Vec::new();
    for t in tags {
        let Some(routes) = select(t) else { continue };
        if routes.iter().any(&drop) {
            keep.extend(routes.into_iter().filter(|r| !drop(r)));
            rw.delete.push(t.clone());
        }
    }
    // Routes recorded elsewhere too need no new record.
    let elsewhere: BTreeSet<Route> = tags.iter().filter(|t| !rw.delete.contains(t)).filter_map(|t| select(t)).flatten().collect();
    keep.retain(|r| !elsewhere.contains(r));
    keep.sort();
    keep.dedup();
    rw.write = pack_with(prefix, &keep).into_iter().map(|(t, _)| t).collect();
    rw
}

/// The rewrite that removes `gone` from `cluster`'s records in `tags`.
pub fn without(tags: &[String], gone: &BTreeSet<Route>, cluster: &Cluster) -> Rewrite {
    rewrite(tags, &cluster.prefix(), |t| parse(t, cluster), |r| gone.contains(r))
}

fn legacy(tag: &str) -> Option<Vec<Route>> {
    match parse_any(tag)? {
        (Owner::Legacy, routes) => Some(routes),
        _ => None,
    }
}

/// Migration: the rewrite that moves the legacy records whose next hop is one of
/// `our_vms` into `cluster`'s records (see the module docs for why that is safe). Legacy
/// records of other next hops stay legacy.
pub fn adopt(tags: &[String], cluster: &Cluster, our_vms: &BTreeSet<IpAddr>) -> Rewrite {
    let mine = |r: &Route| our_vms.contains(&r.nexthop());
    let mut rw = rewrite(tags, TAG_PREFIX, legacy, mine);
    let have = owned(tags, cluster);
    let mut adopted: Vec<Route> = tags.iter().filter_map(|t| legacy(t)).flatten().filter(|r| mine(r) && !have.contains(r)).collect();
    adopted.sort();
    adopted.dedup();
    rw.write.extend(pack(&adopted, cluster).into_iter().map(|(t, _)| t));
    rw
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn host(i: u8) -> Route {
        Route::host(Ipv4Addr::new(10, 10, 10, i), Ipv4Addr::new(10, 10, 10, 8))
    }

    fn c1() -> Cluster {
        Cluster::new("c1").unwrap()
    }

    fn tag(routes: &[Route]) -> String {
        pack(routes, &c1()).remove(0).0
    }

    #[test]
    fn tag_round_trips() {
        let r = Route::v4("10.10.10.32/28".parse().unwrap(), "10.10.10.8".parse().unwrap());
        let tags = pack(&[r, host(50)], &c1());
        assert_eq!(tags, vec![("vrouter-route:c1:10.10.10.32_28@10.10.10.8+10.10.10.50_32@10.10.10.8".to_string(), 2)]);
        let t = &tags[0].0;
        assert!(!t.contains('/') && !t.contains(','));
        assert_eq!(parse(t, &c1()), Some(vec![r, host(50)]));
    }

    #[test]
    fn packing_respects_neutrons_tag_length_and_keeps_order() {
        let widest = Route::host(Ipv4Addr::new(255, 255, 255, 255), Ipv4Addr::new(255, 255, 255, 254));
        let routes: Vec<Route> = (0..20).map(|_| widest).chain((20..60).map(host)).collect();
        let longest = Cluster::new(&"x".repeat(MAX_CLUSTER_LEN)).unwrap();
        for cluster in [c1(), longest] {
            let tags = pack(&routes, &cluster);
            assert!(tags.iter().all(|(t, _)| t.len() <= MAX_TAG_LEN));
            assert!(tags[0].1 >= 5, "at least five of the longest routes per tag");
            let back: Vec<Route> = tags.iter().flat_map(|(t, _)| parse(t, &cluster).unwrap()).collect();
            assert_eq!(back, routes);
            assert_eq!(tags.iter().map(|(_, n)| n).sum::<usize>(), 60);
        }
    }

    fn host6(i: u16) -> Route {
        Route::host(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i), Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 8))
    }

    /// What a build before IPv6 made of a tag (its `parse_entries`, verbatim but for names):
    /// the test that its records stay readable to it.
    fn previous_build_parse(tag: &str) -> Option<Vec<(ipnet::Ipv4Net, Ipv4Addr)>> {
        let entries = tag.strip_prefix(TAG_PREFIX)?.split_once(':')?.1;
        entries
            .split(SEP)
            .map(|e| {
                let (dst, nexthop) = e.split_once('@')?;
                let (addr, len) = dst.split_once('_')?;
                Some((ipnet::Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()?, nexthop.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn ipv6_tag_round_trips() {
        let tags = pack(&[host6(0x19), host6(0x20)], &c1());
        assert_eq!(tags, vec![("vrouter-route:c1:fd00::19_128@fd00::8+fd00::20_128@fd00::8".to_string(), 2)]);
        assert!(!tags[0].0.contains('/') && !tags[0].0.contains(','));
        assert_eq!(parse(&tags[0].0, &c1()), Some(vec![host6(0x19), host6(0x20)]));
        assert_eq!(parse_any(&tags[0].0).map(|(o, _)| o), Some(Owner::Cluster("c1")));
    }

    #[test]
    fn tags_hold_one_family_so_a_build_before_ipv6_still_reads_every_ipv4_record() {
        let v4: Vec<Route> = (20..30).map(host).collect();
        let v6: Vec<Route> = (0x20..0x30).map(host6).collect();
        let routes: Vec<Route> = [v4.clone(), v6.clone()].concat();
        let tags = pack(&routes, &c1());
        let back: Vec<Route> = tags.iter().flat_map(|(t, _)| parse(t, &c1()).unwrap()).collect();
        assert_eq!(back, routes);
        let mut old_reads = Vec::new();
        for (t, _) in &tags {
            let ours = parse(t, &c1()).unwrap();
            assert!(ours.iter().all(|r| r.destination().addr().is_ipv4()) || ours.iter().all(|r| r.destination().addr().is_ipv6()), "{t}");
            match previous_build_parse(t) {
                Some(entries) => old_reads.extend(entries),
                None => assert!(ours.iter().all(|r| r.destination().addr().is_ipv6()), "the old build lost IPv4 records in {t}"),
            }
        }
        let want: Vec<(ipnet::Ipv4Net, Ipv4Addr)> =
            (20..30).map(|i| (Ipv4Addr::new(10, 10, 10, i).into(), Ipv4Addr::new(10, 10, 10, 8))).collect();
        assert_eq!(old_reads, want);
        // Interleaved input still gives one-family tags (and loses nothing), one tag per run.
        let zigzag = [host(20), host6(0x20), host(21), host6(0x21)];
        let tags = pack(&zigzag, &c1());
        assert_eq!(tags.len(), 4);
        assert_eq!(tags.iter().flat_map(|(t, _)| parse(t, &c1()).unwrap()).collect::<Vec<_>>(), zigzag);
    }

    #[test]
    fn the_longest_ipv6_entries_fit_twice_in_a_tag_of_the_longest_cluster_id() {
        let full = Ipv6Addr::new(0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff);
        let widest = Route::host(full, Ipv6Addr::new(0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xfffe));
        assert_eq!(entry(&widest).len(), 83);
        let longest = Cluster::new(&"x".repeat(MAX_CLUSTER_LEN)).unwrap();
        let routes = vec![widest; 9];
        let tags = pack(&routes, &longest);
        assert!(tags.iter().all(|(t, n)| t.len() <= MAX_TAG_LEN && *n >= 1));
        assert_eq!(tags[0].1, 2, "two of the longest IPv6 routes per tag");
        assert_eq!(tags.iter().flat_map(|(t, _)| parse(t, &longest).unwrap()).count(), 9);
        // Usual Neutron addresses (random interface ids in a global /64) with a short id: three.
        let addr = |i: u16| Ipv6Addr::new(0x2001, 0xdb8, 0x1234, 0x5678, 0xf816, 0x3eff, 0xfe12, i);
        let usual: Vec<Route> = (0x1000..0x1010).map(|i| Route::host(addr(i), addr(1))).collect();
        assert_eq!(pack(&usual, &c1())[0].1, 3);
    }

    #[test]
    fn cluster_ids_that_a_tag_cannot_carry_are_refused() {
        for bad in ["", "a:b", "a+b", "a/b", "a,b", "a b", "a_b", "a@b", &"x".repeat(MAX_CLUSTER_LEN + 1)] {
            assert!(Cluster::new(bad).is_err(), "{bad:?}");
        }
        assert!(Cluster::new("prod-eu.1").is_ok());
    }

    #[test]
    fn foreign_malformed_legacy_and_other_clusters_tags_are_not_ours() {
        for t in [
            "owner=ops",
            "vrouter-route:",
            "vrouter-route:c1:",
            "vrouter-route:c1:10.0.0.1_33@10.0.0.2",
            "vrouter-route:c1:x_32@10.0.0.2",
            "vrouter-route:c1:10.0.0.1_32",
            "vrouter-route:c1:10.0.0.1_32@10.0.0.2+junk",
            "vrouter-route:c2:10.0.0.1_32@10.0.0.2",
            "vrouter-route:10.0.0.1_32@10.0.0.2",
            // Families never mix, not even in a record.
            "vrouter-route:c1:10.0.0.1_32@fd00::2",
            "vrouter-route:c1:fd00::1_128@10.0.0.2",
            "vrouter-route:c1:fd00::1_129@fd00::2",
            "vrouter-route:c1:fd00::1_128@fd00::2+10.0.0.1_32@fd00::2",
        ] {
            assert_eq!(parse(t, &c1()), None, "{t}");
        }
        assert_eq!(parse_any("vrouter-route:10.0.0.1_32@10.0.0.2").map(|(o, _)| o), Some(Owner::Legacy));
        assert_eq!(parse_any("vrouter-route:c2:10.0.0.1_32@10.0.0.2").map(|(o, _)| o), Some(Owner::Cluster("c2")));
        // No legacy record was ever IPv6: such a tag reads as a cluster "fd00" with a bad entry.
        assert_eq!(parse_any("vrouter-route:fd00::5_128@fd00::8"), None);
        let tags = vec!["team=net".to_string(), "vrouter-route:c1:10.0.0.5_32@10.0.0.2".to_string()];
        assert_eq!(owned(&tags, &c1()).len(), 1);
    }

    #[test]
    fn without_rewrites_only_this_clusters_affected_tags() {
        let a = tag(&[host(20), host(21)]);
        let b = tag(&[host(30)]);
        let other = pack(&[host(21)], &Cluster::new("c2").unwrap()).remove(0).0;
        let tags = vec!["team=net".to_string(), a.clone(), b.clone(), other.clone()];
        let rw = without(&tags, &[host(21)].into_iter().collect(), &c1());
        assert_eq!(rw.delete, vec![a.clone()]);
        assert_eq!(rw.write, vec![tag(&[host(20)])]);
        assert_eq!(rw.apply(&tags), vec!["team=net".to_string(), b.clone(), other.clone(), tag(&[host(20)])]);
        let rw = without(&tags, &[host(20), host(21)].into_iter().collect(), &c1());
        assert!(rw.write.is_empty());
        assert_eq!(without(&tags, &[host(99)].into_iter().collect(), &c1()), Rewrite::default());
    }

    #[test]
    fn a_route_recorded_twice_is_dropped_everywhere() {
        let tags = vec![tag(&[host(20), host(21)]), tag(&[host(21)])];
        let rw = without(&tags, &[host(21)].into_iter().collect(), &c1());
        assert_eq!(rw.delete.len(), 2);
        assert_eq!(owned(&rw.apply(&tags), &c1()), [host(20)].into_iter().collect());
    }

    #[test]
    fn migration_adopts_only_legacy_records_of_our_own_vms() {
        let theirs = Route::host(Ipv4Addr::new(10, 20, 0, 5), Ipv4Addr::new(10, 20, 0, 9));
        let mixed = format!("{TAG_PREFIX}10.10.10.20_32@10.10.10.8+10.20.0.5_32@10.20.0.9");
        let only_ours = format!("{TAG_PREFIX}10.10.10.21_32@10.10.10.8");
        let tags = vec![mixed.clone(), only_ours.clone(), "team=net".to_string()];
        let ours: BTreeSet<IpAddr> = [IpAddr::V4(Ipv4Addr::new(10, 10, 10, 8))].into_iter().collect();
        let rw = adopt(&tags, &c1(), &ours);
        let after = rw.apply(&tags);
        assert_eq!(owned(&after, &c1()), [host(20), host(21)].into_iter().collect());
        let legacy_left: BTreeSet<Route> = after.iter().filter_map(|t| legacy(t)).flatten().collect();
        assert_eq!(legacy_left, [theirs].into_iter().collect(), "the other next hop stays legacy");
        assert!(after.contains(&"team=net".to_string()));
        // Adopted once: nothing left to do.
        assert!(adopt(&after, &c1(), &ours).is_empty());
        assert!(adopt(&tags, &c1(), &BTreeSet::new()).is_empty(), "no VM of ours: nothing is taken");
    }
}
