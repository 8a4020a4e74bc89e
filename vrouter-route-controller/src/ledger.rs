//! Which routes are ours: an ownership ledger kept as tags on the router itself.
//!
//! Neutron routes carry no owner or description, and a rule such as "the next hop is a
//! managed VM" would both steal hand-made routes that happen to match and leak routes whose
//! VM is gone. So every route the controller adds is first recorded in a router tag, written
//! before the route and dropped after it: a crash in between leaves at most a record
//! without a route, which the next pass forgets, never a route nobody owns. The ledger
//! lives in Neutron, so a restart needs no local state.
//!
//! A tag is `vrouter-route:<dst>_<len>@<nexthop>+<dst>_<len>@<nexthop>...`, packed up to
//! Neutron's 255 characters (about 6-9 routes): Neutron allows 50 tags per router, so
//! packing is what lets the ledger hold a few hundred routes, and it makes recording a
//! batch of routes one call per tag. No `/` (tags travel in URL paths) and no `,` (tag
//! filters). Tags are never edited in place: a changed set is written as a new tag before
//! the old one is deleted, so the ledger is a union that never loses a live record.

use std::collections::BTreeSet;

use crate::model::Route;

/// Prefix of every ledger tag.
pub const TAG_PREFIX: &str = "vrouter-route:";
/// Neutron's maximum tag length.
pub const MAX_TAG_LEN: usize = 255;
const SEP: char = '+';

fn entry(route: &Route) -> String {
    format!("{}_{}@{}", route.destination.addr(), route.destination.prefix_len(), route.nexthop)
}

fn parse_entry(s: &str) -> Option<Route> {
    let (dst, nexthop) = s.split_once('@')?;
    let (addr, len) = dst.split_once('_')?;
    let destination = ipnet::Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()?;
    Some(Route::new(destination, nexthop.parse().ok()?))
}

/// The routes a ledger tag records; `None` for anyone else's tag (or a malformed one).
pub fn parse(tag: &str) -> Option<Vec<Route>> {
    let rest = tag.strip_prefix(TAG_PREFIX)?;
    rest.split(SEP).map(parse_entry).collect()
}

/// All routes recorded in `tags`.
pub fn owned(tags: &[String]) -> BTreeSet<Route> {
    tags.iter().filter_map(|t| parse(t)).flatten().collect()
}

/// Tags recording `routes`, in order, each within [`MAX_TAG_LEN`]; with the number of
/// routes in each, so a caller whose n-th tag is refused knows which routes are recorded.
pub fn pack(routes: &[Route]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for r in routes {
        let e = entry(r);
        match out.last_mut() {
            Some((tag, n)) if tag.len() + 1 + e.len() <= MAX_TAG_LEN => {
                tag.push(SEP);
                tag.push_str(&e);
                *n += 1;
            }
            _ => out.push((format!("{TAG_PREFIX}{e}"), 1)),
        }
    }
    out
}

/// How to drop `gone` from the ledger: tags to write (what the affected tags still
/// record), then tags to delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// New tags, to be written first.
    pub write: Vec<String>,
    /// Old tags, to be deleted after.
    pub delete: Vec<String>,
}

/// The rewrite that removes `gone` from the ledger in `tags`.
pub fn without(tags: &[String], gone: &BTreeSet<Route>) -> Rewrite {
    let mut rw = Rewrite::default();
    let mut keep: Vec<Route> = Vec::new();
    for t in tags {
        let Some(routes) = parse(t) else { continue };
        if routes.iter().any(|r| gone.contains(r)) {
            keep.extend(routes.into_iter().filter(|r| !gone.contains(r)));
            rw.delete.push(t.clone());
        }
    }
    // Routes recorded elsewhere too need no new record.
    let elsewhere: BTreeSet<Route> = tags.iter().filter(|t| !rw.delete.contains(t)).filter_map(|t| parse(t)).flatten().collect();
    keep.retain(|r| !elsewhere.contains(r));
    keep.sort();
    keep.dedup();
    rw.write = pack(&keep).into_iter().map(|(t, _)| t).collect();
    rw
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn host(i: u8) -> Route {
        Route::host(Ipv4Addr::new(10, 10, 10, i), Ipv4Addr::new(10, 10, 10, 8))
    }

    #[test]
    fn tag_round_trips() {
        let r = Route::new("10.10.10.32/28".parse().unwrap(), "10.10.10.8".parse().unwrap());
        let tags = pack(&[r, host(50)]);
        assert_eq!(tags, vec![("vrouter-route:10.10.10.32_28@10.10.10.8+10.10.10.50_32@10.10.10.8".to_string(), 2)]);
        let t = &tags[0].0;
        assert!(!t.contains('/') && !t.contains(','));
        assert_eq!(parse(t), Some(vec![r, host(50)]));
    }

    #[test]
    fn packing_respects_neutrons_tag_length_and_keeps_order() {
        let widest = Route::host(Ipv4Addr::new(255, 255, 255, 255), Ipv4Addr::new(255, 255, 255, 254));
        let routes: Vec<Route> = (0..20).map(|_| widest).chain((20..60).map(host)).collect();
        let tags = pack(&routes);
        assert!(tags.iter().all(|(t, _)| t.len() <= MAX_TAG_LEN));
        assert!(tags[0].1 >= 6, "at least six of the longest routes per tag");
        let back: Vec<Route> = tags.iter().flat_map(|(t, _)| parse(t).unwrap()).collect();
        assert_eq!(back, routes);
        assert_eq!(tags.iter().map(|(_, n)| n).sum::<usize>(), 60);
    }

    #[test]
    fn foreign_and_malformed_tags_are_not_ours() {
        for t in [
            "owner=ops",
            "vrouter-route:",
            "vrouter-route:10.0.0.1_33@10.0.0.2",
            "vrouter-route:x_32@10.0.0.2",
            "vrouter-route:10.0.0.1_32",
            "vrouter-route:10.0.0.1_32@10.0.0.2+junk",
        ] {
            assert_eq!(parse(t), None, "{t}");
        }
        let tags = vec!["team=net".to_string(), "vrouter-route:10.0.0.5_32@10.0.0.2".to_string()];
        assert_eq!(owned(&tags).len(), 1);
    }

    #[test]
    fn without_rewrites_only_affected_tags_and_writes_before_deleting() {
        let a = pack(&[host(20), host(21)]).remove(0).0;
        let b = pack(&[host(30)]).remove(0).0;
        let tags = vec!["team=net".to_string(), a.clone(), b.clone()];
        let rw = without(&tags, &[host(21)].into_iter().collect());
        assert_eq!(rw.delete, vec![a]);
        assert_eq!(rw.write, vec![pack(&[host(20)]).remove(0).0]);
        let rw = without(&tags, &[host(20), host(21)].into_iter().collect());
        assert!(rw.write.is_empty());
        assert_eq!(without(&tags, &[host(99)].into_iter().collect()), Rewrite::default());
    }

    #[test]
    fn a_route_recorded_twice_after_a_crash_is_dropped_everywhere() {
        let tags = vec![pack(&[host(20), host(21)]).remove(0).0, pack(&[host(21)]).remove(0).0];
        let rw = without(&tags, &[host(21)].into_iter().collect());
        assert_eq!(rw.delete.len(), 2);
        let after: Vec<String> = rw.write.clone();
        assert_eq!(owned(&after), [host(20)].into_iter().collect());
    }
}
