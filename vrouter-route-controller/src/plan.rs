//! The difference between desired and actual routes, cut to fit the router's route limit.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::model::Route;

/// What one reconcile pass should do to one router.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Routes to add, most useful first.
    pub add: Vec<Route>,
    /// Owned routes to remove (no longer desired, or displaced by more useful ones).
    pub remove: Vec<Route>,
    /// Desired routes that do not fit under the limit, most useful first.
    pub refused: Vec<Route>,
    /// Ledger entries whose route is absent and not wanted: drop the record only.
    pub forget: Vec<Route>,
    /// Desired routes already on the router (ours or someone else's identical one).
    pub satisfied: usize,
}

impl Plan {
    /// True when the router needs no write at all.
    pub fn is_noop(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.forget.is_empty()
    }
}

/// Plans the writes for one router.
///
/// * `actual`: every route on the router; `owned`: the ledger. Only owned routes are ever
///   removed, so a hand-made route survives, and an identical hand-made route satisfies a
///   desired one without being adopted.
/// * `limit`: how many routes the router accepts in total (configured or learned from a
///   refusal), `None` when unknown. Routes that do not fit are kept in order of usefulness:
///   wider blocks first (they cover more pods), then routes already in place (no churn),
///   then by address for a stable choice.
pub fn plan(desired: &[Route], actual: &[Route], owned: &BTreeSet<Route>, limit: Option<usize>) -> Plan {
    let actual: BTreeSet<Route> = actual.iter().copied().collect();
    let desired: BTreeSet<Route> = desired.iter().copied().collect();
    let foreign = actual.iter().filter(|r| !owned.contains(r)).count();

    // A foreign route identical to a desired one already does the job.
    let foreign_match = |r: &Route| actual.contains(r) && !owned.contains(r);
    let mut wanted: Vec<Route> = desired.iter().copied().filter(|r| !foreign_match(r)).collect();
    let satisfied_by_foreign = desired.len() - wanted.len();
    wanted.sort_by_key(|r| (Reverse(r.coverage()), !actual.contains(r), *r));

    let budget = limit.map_or(usize::MAX, |l| l.saturating_sub(foreign));
    let refused = wanted.split_off(budget.min(wanted.len()));
    let keep: BTreeSet<Route> = wanted.iter().copied().collect();

    let remove: Vec<Route> = actual.iter().filter(|r| owned.contains(r) && !keep.contains(r)).copied().collect();
    let forget: Vec<Route> = owned.iter().filter(|r| !actual.contains(r) && !keep.contains(r)).copied().collect();
    let add: Vec<Route> = wanted.iter().filter(|r| !actual.contains(r)).copied().collect();
    let satisfied = satisfied_by_foreign + wanted.iter().filter(|r| actual.contains(r)).count();
    Plan { add, remove, refused, forget, satisfied }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const VM: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 8);

    fn host(i: u8) -> Route {
        Route::host(Ipv4Addr::new(10, 0, 0, i), VM)
    }

    fn set(routes: &[Route]) -> BTreeSet<Route> {
        routes.iter().copied().collect()
    }

    #[test]
    fn adds_missing_and_removes_stale_owned_routes() {
        let p = plan(&[host(20), host(21)], &[host(21), host(22)], &set(&[host(21), host(22)]), None);
        assert_eq!(p.add, vec![host(20)]);
        assert_eq!(p.remove, vec![host(22)]);
        assert!(p.refused.is_empty());
        assert_eq!(p.satisfied, 1);
    }

    #[test]
    fn foreign_routes_are_never_removed() {
        let hand_made = Route::v4("192.168.0.0/24".parse().unwrap(), VM);
        let p = plan(&[], &[hand_made, host(30)], &BTreeSet::new(), None);
        assert!(p.remove.is_empty());
        assert!(p.is_noop());
    }

    #[test]
    fn identical_foreign_route_satisfies_without_adoption() {
        let p = plan(&[host(20)], &[host(20)], &BTreeSet::new(), None);
        assert!(p.is_noop());
        assert_eq!(p.satisfied, 1);
    }

    #[test]
    fn converged_state_is_a_noop() {
        let routes = [host(20), host(21)];
        assert!(plan(&routes, &routes, &set(&routes), Some(30)).is_noop());
    }

    #[test]
    fn ledger_entry_without_route_is_forgotten_or_readded() {
        let p = plan(&[host(20)], &[], &set(&[host(20), host(21)]), None);
        assert_eq!(p.add, vec![host(20)]);
        assert_eq!(p.forget, vec![host(21)]);
    }

    #[test]
    fn limit_keeps_widest_blocks_first_and_counts_foreign_routes() {
        let block = Route::v4("10.0.0.32/28".parse().unwrap(), VM);
        let foreign = Route::v4("192.168.0.0/24".parse().unwrap(), VM);
        let desired = [host(20), host(21), block, host(22)];
        let p = plan(&desired, &[foreign], &BTreeSet::new(), Some(3));
        assert_eq!(p.add, vec![block, host(20)]);
        assert_eq!(p.refused, vec![host(21), host(22)]);
    }

    #[test]
    fn under_limit_routes_in_place_win_ties() {
        // .25 is already applied; with room for one /32 it stays rather than churning to .20.
        let p = plan(&[host(20), host(25)], &[host(25)], &set(&[host(25)]), Some(1));
        assert!(p.add.is_empty() && p.remove.is_empty());
        assert_eq!(p.refused, vec![host(20)]);
    }

    #[test]
    fn a_new_block_displaces_a_host_route_when_full() {
        let block = Route::v4("10.0.0.32/28".parse().unwrap(), VM);
        let p = plan(&[host(20), block], &[host(20)], &set(&[host(20)]), Some(1));
        assert_eq!(p.remove, vec![host(20)]);
        assert_eq!(p.add, vec![block]);
        assert_eq!(p.refused, vec![host(20)]);
    }

    #[test]
    fn limit_below_foreign_count_refuses_everything_and_removes_ours() {
        let foreign = Route::v4("192.168.0.0/24".parse().unwrap(), VM);
        let p = plan(&[host(20)], &[foreign, host(20)], &set(&[host(20)]), Some(1));
        assert_eq!(p.remove, vec![host(20)]);
        assert_eq!(p.refused, vec![host(20)]);
    }
}
