//! What the router's routes should be: each pod address routed to its VM's own address.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;

use crate::aggregate::collapse;
use crate::model::{Route, VmPort};

/// How desired routes are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Collapse aligned blocks that sit wholly behind one VM into one route.
    pub aggregate: bool,
    /// The widest block one route may cover (prefix length).
    pub min_prefix: u8,
}

impl Default for Shape {
    fn default() -> Self {
        Self { aggregate: true, min_prefix: 24 }
    }
}

/// Routes a router attached to `router_subnets` should carry for `ports`.
///
/// Only VMs whose own address is on one of the router's subnets qualify: Neutron accepts a
/// next hop only on a connected subnet, and another router serves the rest.
pub fn desired_routes(ports: &[VmPort], router_subnets: &[Ipv4Net], shape: Shape) -> Vec<Route> {
    let mut routes = BTreeSet::new();
    for port in ports {
        if !router_subnets.iter().any(|s| s.contains(&port.primary)) {
            continue;
        }
        // Defensive: a port never lists its own address twice, but a malformed record must
        // not produce a route to the VM through itself.
        let mut pods = port.pod_ips.clone();
        pods.remove(&port.primary);
        if shape.aggregate {
            for block in collapse(&pods, shape.min_prefix) {
                routes.insert(Route::new(block, port.primary));
            }
        } else {
            routes.extend(pods.iter().map(|ip| Route::host(*ip, port.primary)));
        }
    }
    routes.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn port(primary: [u8; 4], pods: &[u8]) -> VmPort {
        VmPort {
            port_id: format!("port-{}", primary[3]),
            primary: primary.into(),
            pod_ips: pods.iter().map(|i| Ipv4Addr::new(10, 10, 10, *i)).collect(),
        }
    }

    fn subnet() -> Vec<Ipv4Net> {
        vec!["10.10.10.0/24".parse().unwrap()]
    }

    #[test]
    fn each_pod_routes_to_its_vm() {
        let ports = [port([10, 10, 10, 8], &[19, 21]), port([10, 10, 10, 9], &[20])];
        let shape = Shape { aggregate: false, ..Shape::default() };
        let got: Vec<String> = desired_routes(&ports, &subnet(), shape).iter().map(|r| r.to_string()).collect();
        assert_eq!(got, ["10.10.10.19/32 via 10.10.10.8", "10.10.10.20/32 via 10.10.10.9", "10.10.10.21/32 via 10.10.10.8"]);
    }

    #[test]
    fn vm_on_another_subnet_is_not_this_routers_business() {
        let ports = [port([10, 10, 11, 8], &[19])];
        assert!(desired_routes(&ports, &subnet(), Shape::default()).is_empty());
    }

    #[test]
    fn node_affine_block_becomes_one_route() {
        let pods: Vec<u8> = (32..48).collect();
        let ports = [port([10, 10, 10, 8], &pods), port([10, 10, 10, 9], &[50])];
        let got = desired_routes(&ports, &subnet(), Shape::default());
        assert_eq!(
            got,
            vec![
                Route::new("10.10.10.32/28".parse().unwrap(), Ipv4Addr::new(10, 10, 10, 8)),
                Route::host(Ipv4Addr::new(10, 10, 10, 50), Ipv4Addr::new(10, 10, 10, 9)),
            ]
        );
    }

    #[test]
    fn interleaved_pods_of_two_vms_never_merge() {
        let ports = [port([10, 10, 10, 8], &[20, 22, 24, 26]), port([10, 10, 10, 9], &[21, 23, 25, 27])];
        let got = desired_routes(&ports, &subnet(), Shape::default());
        assert_eq!(got.len(), 8);
        assert!(got.iter().all(|r| r.destination.prefix_len() == 32));
    }

    #[test]
    fn primary_listed_as_pod_is_ignored() {
        let ports = [port([10, 10, 10, 8], &[8, 19])];
        let got = desired_routes(&ports, &subnet(), Shape { aggregate: false, ..Shape::default() });
        assert_eq!(got, vec![Route::host(Ipv4Addr::new(10, 10, 10, 19), Ipv4Addr::new(10, 10, 10, 8))]);
    }
}
