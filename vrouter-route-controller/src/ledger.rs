//! Which routes are ours: an ownership ledger kept as tags on the router itself.
//!
//! Neutron routes carry no owner or description, and a rule such as "the next hop is a
//! managed VM" would both steal hand-made routes that happen to match and leak routes whose
//! VM is gone. So every route the controller adds is first recorded as a router tag
//! (`vrouter-route:<dst>_<len>@<nexthop>`), written before the route and removed after it:
//! a crash in between leaves at most a tag without a route, which the next pass cleans up,
//! never a route nobody owns. The ledger lives in Neutron, so a restart needs no local state.

use std::collections::BTreeSet;

use crate::model::Route;

/// Prefix of every ledger tag.
pub const TAG_PREFIX: &str = "vrouter-route:";

/// The ledger tag for `route`. No `/` (tags travel in URL paths) and no `,` (tag filters).
pub fn tag(route: &Route) -> String {
    format!(
        "{TAG_PREFIX}{}_{}@{}",
        route.destination.addr(),
        route.destination.prefix_len(),
        route.nexthop
    )
}

/// The route a ledger tag records; `None` for anyone else's tag.
pub fn parse(tag: &str) -> Option<Route> {
    let rest = tag.strip_prefix(TAG_PREFIX)?;
    let (dst, nexthop) = rest.split_once('@')?;
    let (addr, len) = dst.split_once('_')?;
    let destination = ipnet::Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()?;
    Some(Route::new(destination, nexthop.parse().ok()?))
}

/// All routes recorded in `tags`.
pub fn owned(tags: &[String]) -> BTreeSet<Route> {
    tags.iter().filter_map(|t| parse(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trips() {
        let r = Route::new("10.10.10.32/28".parse().unwrap(), "10.10.10.8".parse().unwrap());
        let t = tag(&r);
        assert_eq!(t, "vrouter-route:10.10.10.32_28@10.10.10.8");
        assert!(!t.contains('/') && !t.contains(','));
        assert_eq!(parse(&t), Some(r));
    }

    #[test]
    fn foreign_and_malformed_tags_are_not_ours() {
        for t in ["owner=ops", "vrouter-route:", "vrouter-route:10.0.0.1_33@10.0.0.2", "vrouter-route:x_32@10.0.0.2", "vrouter-route:10.0.0.1_32"] {
            assert_eq!(parse(t), None, "{t}");
        }
    }

    #[test]
    fn owned_collects_only_ledger_tags() {
        let tags = vec!["team=net".to_string(), "vrouter-route:10.0.0.5_32@10.0.0.2".to_string()];
        assert_eq!(owned(&tags).len(), 1);
    }
}
