//! [`Cloud`] on the workspace's Neutron client.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use ipnet::IpNet;
use serde_json::Value;

use crate::cloud::{Cloud, CloudError, RouterView, Snapshot};
use crate::managed::{vm_port, MANAGED_TAG};
use crate::model::{Route, RouterState};
use openstack::{Error, Neutron, Router};

/// Router interface ports, whatever the router flavour.
const INTERFACE_OWNERS: [&str; 3] =
    ["network:router_interface", "network:router_interface_distributed", "network:ha_router_replicated_interface"];

/// Neutron, scoped to the configured networks (and routers, when given).
pub struct NeutronCloud {
    neutron: Neutron,
    networks: Vec<String>,
    routers: Vec<String>,
}

impl NeutronCloud {
    /// Manages routes for pods on `networks`; `routers` empty means every router attached.
    pub fn new(neutron: Neutron, networks: Vec<String>, routers: Vec<String>) -> Self {
        Self { neutron, networks, routers }
    }

    async fn quota(&self, project: &str, cache: &mut HashMap<String, Option<usize>>) -> Option<usize> {
        if let Some(q) = cache.get(project) {
            return *q;
        }
        let q = match self.neutron.get_quota(project).await {
            Ok(v) => v.get("router_route").and_then(Value::as_i64).and_then(|n| usize::try_from(n).ok()),
            Err(e) => {
                log::debug!("cannot read the router_route quota of project {project}: {e}; learning the limit from refusals");
                None
            }
        };
        cache.insert(project.to_string(), q);
        q
    }
}

impl Cloud for NeutronCloud {
    async fn snapshot(&self) -> Result<Snapshot, CloudError> {
        let mut subnets: HashMap<String, IpNet> = HashMap::new();
        let mut attached: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
        let mut ports = Vec::new();
        for net in &self.networks {
            for s in self.neutron.list_subnets(net).await.map_err(classify)? {
                subnets.insert(s.id, s.cidr);
            }
            let mut filters = vec![("network_id", net.as_str())];
            filters.extend(INTERFACE_OWNERS.iter().map(|o| ("device_owner", *o)));
            for p in self.neutron.list_ports(&filters).await.map_err(classify)? {
                if !self.routers.is_empty() && !self.routers.contains(&p.device_id) {
                    continue;
                }
                let entry = attached.entry(p.device_id.clone()).or_default();
                entry.extend(p.fixed_ips.iter().filter_map(|f| subnets.get(&f.subnet_id).copied()));
            }
            for p in self.neutron.list_ports(&[("network_id", net.as_str()), ("tags", MANAGED_TAG)]).await.map_err(classify)? {
                match vm_port(&p) {
                    Ok(Some(managed)) => {
                        // Its IPv4 routes stay; only its IPv6 pods go unrouted.
                        if let Some(e) = managed.ipv6_error {
                            log::warn!("no IPv6 routes for {e}");
                        }
                        ports.push(managed.vm);
                    }
                    Ok(None) => {}
                    // One badly marked port must not stop routes for everyone else.
                    Err(e) => log::warn!("skipping {e}"),
                }
            }
        }
        let mut quotas = HashMap::new();
        let mut routers = Vec::new();
        for (id, subnets) in attached {
            let router = match self.neutron.get_router(&id).await.map_err(classify) {
                Ok(r) => r,
                // Interface of a router we cannot see (another project): not ours to manage.
                Err(CloudError::Failed(e)) => {
                    log::warn!("skipping router {id}: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let quota = self.quota(&router.project_id, &mut quotas).await;
            routers.push(RouterView { state: state(&router), subnets, quota });
        }
        Ok(Snapshot { routers, ports })
    }

    async fn fingerprint(&self, routers: &[String]) -> Result<u64, CloudError> {
        let mut h = DefaultHasher::new();
        for net in &self.networks {
            let ports = self
                .neutron
                .list_ports(&[
                    ("network_id", net.as_str()),
                    ("tags", MANAGED_TAG),
                    ("fields", "id"),
                    ("fields", "revision_number"),
                    ("fields", "network_id"),
                    ("fields", "mac_address"),
                ])
                .await
                .map_err(classify)?;
            let mut revs: Vec<(String, u64)> = ports.into_iter().map(|p| (p.id, p.revision_number)).collect();
            revs.sort();
            revs.hash(&mut h);
        }
        for id in routers {
            let r = self.neutron.get_router_fields(id, &["id", "revision_number"]).await.map_err(classify)?;
            r.revision_number.hash(&mut h);
        }
        Ok(h.finish())
    }

    async fn add_routes(&self, router: &str, routes: &[Route], revision: u64) -> Result<RouterState, CloudError> {
        self.neutron.add_extraroutes_if(router, &to_wire(routes), revision).await.map(|r| state(&r)).map_err(classify)
    }

    async fn remove_routes(&self, router: &str, routes: &[Route], revision: u64) -> Result<RouterState, CloudError> {
        self.neutron.remove_extraroutes_if(router, &to_wire(routes), revision).await.map(|r| state(&r)).map_err(classify)
    }

    async fn add_tag(&self, router: &str, tag: &str) -> Result<(), CloudError> {
        self.neutron.add_router_tag(router, tag).await.map_err(classify)
    }

    async fn remove_tag(&self, router: &str, tag: &str) -> Result<(), CloudError> {
        self.neutron.remove_router_tag(router, tag).await.map_err(classify)
    }

    async fn router(&self, router: &str) -> Result<RouterState, CloudError> {
        self.neutron.get_router(router).await.map(|r| state(&r)).map_err(classify)
    }
}

fn state(r: &Router) -> RouterState {
    RouterState { id: r.id.clone(), routes: r.routes.iter().filter_map(route).collect(), tags: r.tags.clone(), revision: r.revision_number }
}

fn to_wire(routes: &[Route]) -> Vec<openstack::Route> {
    routes.iter().map(|r| openstack::Route { destination: r.destination(), nexthop: r.nexthop() }).collect()
}

/// A route of the router as the controller sees it. Neutron refuses mixed families, so a
/// mixed route cannot be there; were it, it would be nobody's business here.
fn route(r: &openstack::Route) -> Option<Route> {
    Route::checked(r.destination, r.nexthop)
}

/// Sorts a client error into what the reconciler does about it.
fn classify(e: Error) -> CloudError {
    if e.is_revision_conflict() {
        CloudError::Conflict(e.to_string())
    } else if matches!(e.kind(), Some("OverQuota" | "RoutesExhausted")) {
        CloudError::RouteLimit(e.to_string())
    } else if e.is_transient() {
        CloudError::Unavailable(e.to_string())
    } else {
        CloudError::Failed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openstack::Service;

    #[test]
    fn both_limit_errors_are_route_limits() {
        for (status, kind) in [(409, "OverQuota"), (400, "RoutesExhausted")] {
            let e = Error::Api {
                service: Service::Neutron,
                endpoint: "PUT /routers/x/add_extraroutes".into(),
                status,
                kind: kind.into(),
                message: "m".into(),
            };
            assert!(matches!(classify(e), CloudError::RouteLimit(_)), "{kind}");
        }
        let e =
            Error::Api { service: Service::Neutron, endpoint: "e".into(), status: 400, kind: "InvalidRoutes".into(), message: "m".into() };
        assert!(matches!(classify(e), CloudError::Failed(_)));
        let e = Error::Unreachable { service: Service::Neutron, endpoint: "e".into(), reason: "refused".into() };
        assert!(matches!(classify(e), CloudError::Unavailable(_)));
    }

    #[test]
    fn routes_of_both_families_are_read_and_written_back_as_they_are() {
        let wire = |d: &str, n: &str| openstack::Route { destination: d.parse().unwrap(), nexthop: n.parse().unwrap() };
        let both = [wire("10.0.0.19/32", "10.0.0.8"), wire("fd00::19/128", "fd00::8"), wire("fd00::/64", "fd00::1")];
        let read: Vec<Route> = both.iter().filter_map(route).collect();
        assert_eq!(read.len(), 3);
        assert_eq!(to_wire(&read), both);
        assert_eq!(route(&wire("fd00::19/128", "10.0.0.8")), None);
    }
}
