//! What the reconciler needs from Neutron, as a trait so the apply logic is testable alone.

use std::future::Future;

use ipnet::IpNet;

use crate::model::{Route, RouterState, VmPort};

/// Everything one reconcile pass reads.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Routers serving the configured networks.
    pub routers: Vec<RouterView>,
    /// Managed VM ports of the configured networks.
    pub ports: Vec<VmPort>,
}

/// A router, the subnets it is attached to, and its route limit when Neutron tells it.
#[derive(Debug, Clone)]
pub struct RouterView {
    /// Routes and tags.
    pub state: RouterState,
    /// Subnets (of both families) of the configured networks with an interface on this router.
    pub subnets: Vec<IpNet>,
    /// `router_route` quota of the router's project (`None`: unlimited or unreadable).
    pub quota: Option<usize>,
}

/// How a Neutron call failed, as far as the reconciler cares.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    /// The router refuses more routes: 409 OverQuota, 400 RoutesExhausted, or the ledger's
    /// per-router tag limit.
    #[error("route limit reached: {0}")]
    RouteLimit(String),
    /// Neutron or Keystone is unreachable or failing: retry later, change nothing.
    #[error("{0}")]
    Unavailable(String),
    /// The router changed since it was read (412 on `If-Match: revision_number=N`, or a
    /// write by someone else seen right after ours): read again and plan anew.
    #[error("router changed concurrently: {0}")]
    Conflict(String),
    /// Anything else (bad request, permissions, configuration).
    #[error("{0}")]
    Failed(String),
}

/// The Neutron calls of one controller.
pub trait Cloud {
    /// Reads routers, their routes and tags, and the managed ports.
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, CloudError>>;
    /// A cheap digest that changes when managed ports or the given routers change.
    fn fingerprint(&self, routers: &[String]) -> impl Future<Output = Result<u64, CloudError>>;
    /// `add_extraroutes` if the router is still at `revision`; returns the router afterwards.
    fn add_routes(&self, router: &str, routes: &[Route], revision: u64) -> impl Future<Output = Result<RouterState, CloudError>>;
    /// `remove_extraroutes` if the router is still at `revision`; returns the router afterwards.
    fn remove_routes(&self, router: &str, routes: &[Route], revision: u64) -> impl Future<Output = Result<RouterState, CloudError>>;
    /// Adds one tag to the router. Not conditional: Neutron 29 answers 500 to `If-Match`
    /// on its tag calls, so the writer reads the router back instead.
    fn add_tag(&self, router: &str, tag: &str) -> impl Future<Output = Result<(), CloudError>>;
    /// Removes one tag from the router (missing is success). Not conditional either.
    fn remove_tag(&self, router: &str, tag: &str) -> impl Future<Output = Result<(), CloudError>>;
    /// Reads one router.
    fn router(&self, router: &str) -> impl Future<Output = Result<RouterState, CloudError>>;
}
