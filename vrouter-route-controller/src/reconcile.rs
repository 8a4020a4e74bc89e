//! One reconcile pass: read Neutron, plan each router, apply the plan with atomic calls.
//!
//! Safety rules: nothing is removed unless a complete, successful read says it is not
//! wanted (a failed read aborts the pass before any write); only routes in this cluster's
//! ledger are removed; removals go first when they must free room under the limit; every
//! write is conditional on the router being as last seen (see `writer`), and a pass that
//! meets a concurrent writer starts over from a fresh read.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::cloud::{Cloud, CloudError, RouterView};
use crate::desired::{desired_routes, Shape};
use crate::ledger::Cluster;
use crate::model::Route;
use crate::plan::plan;
use crate::writer::Writer;

/// How often one pass starts over after a concurrent write before giving up until the
/// next one (the daemon's backoff then spaces the attempts).
const CONFLICT_ATTEMPTS: usize = 4;

/// Settings of the reconciler.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whose routes these are: the scope of the ownership ledger.
    pub cluster: Cluster,
    /// Route shape (aggregation).
    pub shape: Shape,
    /// Operator-set cap on routes per router (overrides what Neutron says).
    pub max_routes: Option<usize>,
    /// Plan and report, but write nothing.
    pub dry_run: bool,
    /// Remove every route this controller owns (uninstall, or before detaching a router:
    /// Neutron refuses to remove an interface that routes still use as next hop).
    pub release: bool,
}

impl Settings {
    /// Defaults for `cluster`: aggregation on, no cap, writing, not releasing.
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster, shape: Shape::default(), max_routes: None, dry_run: false, release: false }
    }
}

/// The outcome for one router.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterReport {
    /// Router id.
    pub router: String,
    /// Routes wanted for this router.
    pub desired: usize,
    /// Desired routes present on the router after the pass.
    pub applied: usize,
    /// Desired routes left out because of the limit, most useful first.
    pub refused: Vec<Route>,
    /// The limit in force, when known.
    pub limit: Option<usize>,
    /// Routes added and removed in this pass.
    pub added: usize,
    /// Routes removed in this pass.
    pub removed: usize,
    /// Limit refusals Neutron answered in this pass (409 OverQuota, 400 RoutesExhausted,
    /// full ledger); zero when the known limit predicted them.
    pub limit_errors: usize,
}

/// The outcome of a pass.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One entry per router.
    pub routers: Vec<RouterReport>,
    /// Router ids seen (for the change check).
    pub router_ids: Vec<String>,
    /// Times the pass started over because another writer changed a router meanwhile.
    pub conflicts: usize,
}

/// Keeps limits learned from refusals between passes.
#[derive(Debug)]
pub struct Reconciler {
    settings: Settings,
    learned: HashMap<String, usize>,
    limit_errors: usize,
}

impl Reconciler {
    /// A reconciler with no learned limits.
    pub fn new(settings: Settings) -> Self {
        Self { settings, learned: HashMap::new(), limit_errors: 0 }
    }

    /// Forgets limits learned from refusals, so that a raised quota is noticed.
    pub fn forget_learned_limits(&mut self) {
        self.learned.clear();
    }

    /// One full pass over every router, started over from a fresh read when another
    /// writer changed a router under it. Errors abort the pass; what was written stays valid.
    pub async fn run<C: Cloud>(&mut self, cloud: &C) -> Result<Report, CloudError> {
        let mut conflicts = 0;
        loop {
            match self.pass(cloud).await {
                Err(CloudError::Conflict(why)) if conflicts + 1 < CONFLICT_ATTEMPTS => {
                    conflicts += 1;
                    log::info!("{why}; reading again (attempt {})", conflicts + 1);
                }
                Ok(report) => return Ok(Report { conflicts, ..report }),
                Err(e) => return Err(e),
            }
        }
    }

    async fn pass<C: Cloud>(&mut self, cloud: &C) -> Result<Report, CloudError> {
        let snapshot = cloud.snapshot().await?;
        let mut report = Report { router_ids: snapshot.routers.iter().map(|r| r.state.id.clone()).collect(), ..Report::default() };
        let our_vms: BTreeSet<IpAddr> = snapshot
            .ports
            .iter()
            .flat_map(|p| std::iter::once(IpAddr::V4(p.v4.primary)).chain(p.v6.as_ref().map(|v6| IpAddr::V6(v6.primary))))
            .collect();
        for router in &snapshot.routers {
            let desired =
                if self.settings.release { vec![] } else { desired_routes(&snapshot.ports, &router.subnets, self.settings.shape) };
            report.routers.push(self.router(cloud, router, &desired, &our_vms).await?);
        }
        Ok(report)
    }

    fn limit(&self, router: &RouterView) -> Option<usize> {
        let learned = self.learned.get(&router.state.id).copied();
        [self.settings.max_routes, router.quota, learned].into_iter().flatten().min()
    }

    async fn router<C: Cloud>(
        &mut self,
        cloud: &C,
        view: &RouterView,
        desired: &[Route],
        our_vms: &BTreeSet<IpAddr>,
    ) -> Result<RouterReport, CloudError> {
        let cluster = self.settings.cluster.clone();
        let mut w = Writer::new(cloud, &cluster, view.state.clone());
        if !self.settings.dry_run {
            w.adopt_legacy(our_vms).await?;
        }
        let id = view.state.id.as_str();
        let limit = self.limit(view);
        let p = plan(desired, &w.state.routes, &w.owned(), limit);
        let mut report = RouterReport {
            router: id.to_string(),
            desired: desired.len(),
            applied: p.satisfied,
            refused: p.refused.clone(),
            limit,
            ..RouterReport::default()
        };
        if p.is_noop() || self.settings.dry_run {
            if self.settings.dry_run && !p.is_noop() {
                log::info!("router {id}: dry run: would add {:?}, remove {:?}", p.add, p.remove);
            }
            warn_refused(&report);
            return Ok(report);
        }

        // Make before break when there is room: a block replacing its smaller routes (or a
        // /32 overriding a block) goes in first, so no pod is unrouted in between. At the
        // limit, removals must free the room first.
        let room = limit.is_none_or(|l| w.state.routes.len() + p.add.len() <= l);
        self.limit_errors = 0;
        let mut outcome = None;
        if room {
            outcome = Some(self.add(&mut w, &p.add).await?);
        }
        if !p.remove.is_empty() {
            log::info!("router {id}: removing {} route(s): {}", p.remove.len(), list(&p.remove));
            w.remove_routes(&p.remove).await?;
            report.removed = p.remove.len();
        }
        let gone: BTreeSet<Route> = p.remove.iter().chain(&p.forget).copied().collect();
        w.unrecord(&gone).await?;
        let (added, refused) = match outcome {
            // The limit was unknown and refused some adds: the removals may have made room.
            Some((mut added, refused)) if !refused.is_empty() && !p.remove.is_empty() => {
                let (more, still) = self.add(&mut w, &refused).await?;
                added.extend(more);
                (added, still)
            }
            Some(o) => o,
            None => self.add(&mut w, &p.add).await?,
        };
        report.added = added.len();
        report.limit_errors = self.limit_errors;
        let present: BTreeSet<Route> = w.state.routes.iter().copied().collect();
        report.applied = desired.iter().filter(|r| present.contains(r)).count();
        if !refused.is_empty() {
            report.refused = refused.into_iter().chain(p.refused.iter().copied()).collect();
            report.limit = self.learned.get(id).copied().or(limit);
        }
        warn_refused(&report);
        Ok(report)
    }

    /// Adds routes (ledger record first); on a limit refusal, falls back to one route at a
    /// time in priority order and learns the limit. Returns (added, refused).
    async fn add<C: Cloud>(&mut self, w: &mut Writer<'_, C>, add: &[Route]) -> Result<(Vec<Route>, Vec<Route>), CloudError> {
        if add.is_empty() {
            return Ok((vec![], vec![]));
        }
        let id = w.state.id.clone();
        let recorded = w.record(add).await?;
        if recorded < add.len() {
            self.limit_errors += 1;
        }
        let tagged = add[..recorded].to_vec();
        let mut refused = add[recorded..].to_vec();
        if tagged.is_empty() {
            self.note_refusals(&id, &refused, w.state.routes.len());
            return Ok((vec![], refused));
        }
        log::info!("router {id}: adding {} route(s): {}", tagged.len(), list(&tagged));
        match w.add_routes(&tagged).await {
            Ok(()) => {
                self.note_refusals(&id, &refused, w.state.routes.len());
                return Ok((tagged, refused));
            }
            Err(CloudError::RouteLimit(why)) => {
                self.limit_errors += 1;
                log::warn!("router {id}: {why}; adding one route at a time, most useful first");
            }
            Err(e) => return Err(e),
        }
        let mut added = Vec::new();
        for (i, r) in tagged.iter().enumerate() {
            match w.add_routes(std::slice::from_ref(r)).await {
                Ok(()) => added.push(*r),
                Err(CloudError::RouteLimit(_)) => {
                    self.limit_errors += 1;
                    let rest: Vec<Route> = tagged[i..].to_vec();
                    w.unrecord(&rest.iter().copied().collect()).await?;
                    refused.splice(0..0, rest);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        self.note_refusals(&id, &refused, w.state.routes.len());
        Ok((added, refused))
    }

    fn note_refusals(&mut self, id: &str, refused: &[Route], count: usize) {
        if refused.is_empty() {
            return;
        }
        log::info!("router {id}: Neutron refused more routes at {count}; remembering that limit until the next resync");
        self.learned.insert(id.to_string(), count);
    }
}

/// The one clear statement an operator needs when routes do not fit.
fn warn_refused(r: &RouterReport) {
    if r.refused.is_empty() {
        return;
    }
    log::warn!(
        "router {}: route limit reached ({}): {} of {} desired route(s) applied, {} refused (most useful kept); first refused: {}. \
         Use node-affine blocks in tcnp-ipam, raise the router_route quota, or use proxyNeighbor mode",
        r.router,
        r.limit.map_or("limit unknown".to_string(), |l| format!("{l} routes per router")),
        r.applied,
        r.desired,
        r.refused.len(),
        list(&r.refused[..r.refused.len().min(5)])
    );
}

fn list(routes: &[Route]) -> String {
    routes.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
