//! What the router's routes should be: each pod address routed to its VM's own address of
//! the same family (IPv4 pods via the VM's IPv4 address, IPv6 pods via its IPv6 one).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::aggregate::collapse;
use crate::model::{HostAddr, Route, VmPort};

/// How desired routes are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Collapse aligned blocks that sit wholly behind one VM into one route.
    pub aggregate: bool,
    /// The widest block one route may cover, as an IPv4 prefix length; IPv6 blocks may
    /// cover as many addresses (`/24` here: `/120`).
    pub min_prefix: u8,
}

impl Shape {
    /// The widest block one route may cover in `family`'s prefix lengths.
    fn min_prefix_of<A: HostAddr>(&self) -> u8 {
        A::MAX_PREFIX - (32 - self.min_prefix)
    }

    /// Routes to `pods` behind `primary`: aligned blocks or host routes.
    fn routes<A: HostAddr>(&self, pods: impl Iterator<Item = A>, primary: A) -> Vec<Route> {
        if !self.aggregate {
            return pods.map(|ip| Route::host(ip, primary)).collect();
        }
        let pods: BTreeSet<A> = pods.collect();
        collapse(&pods, self.min_prefix_of::<A>())
            .into_iter()
            .map(|block| Route::checked(block, primary.into()).expect("blocks of the primary's family"))
            .collect()
    }
}

impl Default for Shape {
    fn default() -> Self {
        Self { aggregate: true, min_prefix: 24 }
    }
}

/// Routes a router attached to `router_subnets` (of both families) should carry for `ports`.
///
/// Per family, only VMs whose own address of that family is on one of the router's subnets
/// qualify: Neutron accepts a next hop only on a connected subnet, and another router (or
/// none, for a router without an IPv6 interface) serves the rest.
pub fn desired_routes(ports: &[VmPort], router_subnets: &[IpNet], shape: Shape) -> Vec<Route> {
    let on_router = |ip: IpAddr| router_subnets.iter().any(|s| s.contains(&ip));
    let mut routes = BTreeSet::new();
    for port in ports {
        let v4 = &port.v4;
        if on_router(v4.primary.into()) {
            routes.extend(shape.routes(v4.pods(), v4.primary));
        }
        if let Some(v6) = port.v6.as_ref().filter(|v6| on_router(v6.primary.into())) {
            routes.extend(shape.routes(v6.pods(), v6.primary));
        }
    }
    routes.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Hosted;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn port(primary: [u8; 4], pods: &[u8]) -> VmPort {
        VmPort {
            port_id: format!("port-{}", primary[3]),
            v4: Hosted { primary: primary.into(), pod_ips: pods.iter().map(|i| Ipv4Addr::new(10, 10, 10, *i)).collect() },
            v6: None,
        }
    }

    fn v6(i: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, i)
    }

    /// `port` with IPv6 primary `fd00:10::<primary>` and pods `fd00:10::<pod>`.
    fn dual(primary: [u8; 4], pods: &[u8], primary6: u16, pods6: &[u16]) -> VmPort {
        VmPort { v6: Some(Hosted { primary: v6(primary6), pod_ips: pods6.iter().map(|i| v6(*i)).collect() }), ..port(primary, pods) }
    }

    fn subnet() -> Vec<IpNet> {
        vec!["10.10.10.0/24".parse().unwrap()]
    }

    fn dual_subnets() -> Vec<IpNet> {
        vec!["10.10.10.0/24".parse().unwrap(), "fd00:10::/64".parse().unwrap()]
    }

    fn strings(routes: &[Route]) -> Vec<String> {
        routes.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn each_pod_routes_to_its_vm() {
        let ports = [port([10, 10, 10, 8], &[19, 21]), port([10, 10, 10, 9], &[20])];
        let shape = Shape { aggregate: false, ..Shape::default() };
        let got = strings(&desired_routes(&ports, &subnet(), shape));
        assert_eq!(got, ["10.10.10.19/32 via 10.10.10.8", "10.10.10.20/32 via 10.10.10.9", "10.10.10.21/32 via 10.10.10.8"]);
    }

    #[test]
    fn ipv6_pods_get_128s_via_the_vms_ipv6_address_beside_the_ipv4_routes() {
        let ports = [dual([10, 10, 10, 8], &[19], 8, &[0x19, 0x20]), dual([10, 10, 10, 9], &[20], 9, &[0x21])];
        let shape = Shape { aggregate: false, ..Shape::default() };
        let got = strings(&desired_routes(&ports, &dual_subnets(), shape));
        assert_eq!(
            got,
            [
                "10.10.10.19/32 via 10.10.10.8",
                "10.10.10.20/32 via 10.10.10.9",
                "fd00:10::19/128 via fd00:10::8",
                "fd00:10::20/128 via fd00:10::8",
                "fd00:10::21/128 via fd00:10::9",
            ]
        );
    }

    #[test]
    fn node_affine_blocks_of_both_families_become_one_route_each() {
        // A whole aligned /28 and /124 behind one VM, and one more IPv6 pod of another VM.
        let ports = [
            dual([10, 10, 10, 8], &(32..48).collect::<Vec<u8>>(), 8, &(0x30..0x40).collect::<Vec<u16>>()),
            dual([10, 10, 10, 9], &[], 9, &[0x50]),
        ];
        let got = strings(&desired_routes(&ports, &dual_subnets(), Shape::default()));
        assert_eq!(got, ["10.10.10.32/28 via 10.10.10.8", "fd00:10::30/124 via fd00:10::8", "fd00:10::50/128 via fd00:10::9"]);
        // The cap counts addresses alike: /30 for IPv4 is /126 for IPv6.
        let got = desired_routes(&ports, &dual_subnets(), Shape { min_prefix: 30, ..Shape::default() });
        assert!(got.iter().filter(|r| r.nexthop() == IpAddr::V6(self::v6(8))).all(|r| r.destination().prefix_len() == 126));
        assert_eq!(got.len(), 4 + 4 + 1);
    }

    #[test]
    fn a_router_without_an_ipv6_interface_gets_ipv4_routes_only() {
        let ports = [dual([10, 10, 10, 8], &[19], 8, &[0x19])];
        let got = strings(&desired_routes(&ports, &subnet(), Shape::default()));
        assert_eq!(got, ["10.10.10.19/32 via 10.10.10.8"]);
        // And one on another IPv6 subnet than the VM's: none either.
        let other = vec!["10.10.10.0/24".parse().unwrap(), "fd00:11::/64".parse().unwrap()];
        assert_eq!(desired_routes(&ports, &other, Shape::default()).len(), 1);
    }

    #[test]
    fn vm_on_another_subnet_is_not_this_routers_business() {
        let ports = [port([10, 10, 11, 8], &[19])];
        assert!(desired_routes(&ports, &subnet(), Shape::default()).is_empty());
        // Only its IPv6 address is on the router: its IPv6 pods are routed, not the IPv4 ones.
        let ports = [dual([10, 10, 11, 8], &[19], 8, &[0x19])];
        assert_eq!(strings(&desired_routes(&ports, &dual_subnets(), Shape::default())), ["fd00:10::19/128 via fd00:10::8"]);
    }

    #[test]
    fn node_affine_block_becomes_one_route() {
        let pods: Vec<u8> = (32..48).collect();
        let ports = [port([10, 10, 10, 8], &pods), port([10, 10, 10, 9], &[50])];
        let got = desired_routes(&ports, &subnet(), Shape::default());
        assert_eq!(
            got,
            vec![
                Route::v4("10.10.10.32/28".parse().unwrap(), Ipv4Addr::new(10, 10, 10, 8)),
                Route::host(Ipv4Addr::new(10, 10, 10, 50), Ipv4Addr::new(10, 10, 10, 9)),
            ]
        );
    }

    #[test]
    fn interleaved_pods_of_two_vms_never_merge() {
        let ports = [port([10, 10, 10, 8], &[20, 22, 24, 26]), port([10, 10, 10, 9], &[21, 23, 25, 27])];
        let got = desired_routes(&ports, &subnet(), Shape::default());
        assert_eq!(got.len(), 8);
        assert!(got.iter().all(|r| r.destination().prefix_len() == 32));
    }

    #[test]
    fn primary_listed_as_pod_is_ignored() {
        let ports = [dual([10, 10, 10, 8], &[8, 19], 8, &[8, 0x19])];
        let got = strings(&desired_routes(&ports, &dual_subnets(), Shape { aggregate: false, ..Shape::default() }));
        assert_eq!(got, ["10.10.10.19/32 via 10.10.10.8", "fd00:10::19/128 via fd00:10::8"]);
    }
}
