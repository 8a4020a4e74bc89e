//! Plain data the controller reasons about, independent of how Neutron spells it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One static route of a Neutron router, of either family: IPv4 pods get `/32`s (or
/// aggregated blocks) via the VM's IPv4 address, IPv6 pods `/128`s via its IPv6 address.
///
/// The fields are private so that a route can only be built with a destination and a
/// next hop of the same family: Neutron refuses a mixed route, and the ledger must never
/// record one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    /// Destination prefix. Kept as given by Neutron (it does not normalise).
    destination: IpNet,
    /// Next hop: the VM's own (primary) address of the destination's family.
    nexthop: IpAddr,
}

/// A host address of one family: the two ends of a host route are of the same one.
pub trait HostAddr: Copy + Ord + Into<IpAddr> + sealed::Sealed {
    /// The family's host prefix length (32, 128).
    const MAX_PREFIX: u8;
    /// The address as a host prefix (`/32`, `/128`).
    fn host_net(self) -> IpNet;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::net::Ipv4Addr {}
    impl Sealed for std::net::Ipv6Addr {}
}

impl HostAddr for Ipv4Addr {
    const MAX_PREFIX: u8 = 32;
    fn host_net(self) -> IpNet {
        IpNet::V4(Ipv4Net::from(self))
    }
}

impl HostAddr for Ipv6Addr {
    const MAX_PREFIX: u8 = 128;
    fn host_net(self) -> IpNet {
        IpNet::V6(Ipv6Net::from(self))
    }
}

impl Route {
    /// An IPv4 route to `destination` through `nexthop`.
    pub fn v4(destination: Ipv4Net, nexthop: Ipv4Addr) -> Self {
        Self { destination: IpNet::V4(destination), nexthop: IpAddr::V4(nexthop) }
    }

    /// An IPv6 route to `destination` through `nexthop`.
    pub fn v6(destination: Ipv6Net, nexthop: Ipv6Addr) -> Self {
        Self { destination: IpNet::V6(destination), nexthop: IpAddr::V6(nexthop) }
    }

    /// A route as read from outside (Neutron, the ledger); `None` when the families differ.
    pub fn checked(destination: IpNet, nexthop: IpAddr) -> Option<Self> {
        match (destination, nexthop) {
            (IpNet::V4(d), IpAddr::V4(n)) => Some(Self::v4(d, n)),
            (IpNet::V6(d), IpAddr::V6(n)) => Some(Self::v6(d, n)),
            _ => None,
        }
    }

    /// A host route (`/32`, `/128`) to `ip` through `nexthop`.
    pub fn host<A: HostAddr>(ip: A, nexthop: A) -> Self {
        Self { destination: ip.host_net(), nexthop: nexthop.into() }
    }

    /// The destination prefix.
    pub fn destination(&self) -> IpNet {
        self.destination
    }

    /// The next hop.
    pub fn nexthop(&self) -> IpAddr {
        self.nexthop
    }

    /// How many addresses the route covers: the measure of its usefulness under a limit
    /// (a `/32` and a `/128` both cover one pod).
    pub fn coverage(&self) -> u128 {
        let host_bits = self.destination.max_prefix_len() - self.destination.prefix_len();
        1u128.checked_shl(u32::from(host_bits)).unwrap_or(u128::MAX)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.destination, self.nexthop)
    }
}

/// The addresses of one family on a VM port: the VM's own and its pods'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosted<A> {
    /// The VM's own address, the next hop for its pods.
    pub primary: A,
    /// The pod addresses (and warm spares, which route the same way).
    pub pod_ips: BTreeSet<A>,
}

impl<A: HostAddr + Ord> Hosted<A> {
    /// The pods, never the VM's own address: a port never lists its own address twice,
    /// but a malformed record must not produce a route to the VM through itself.
    pub fn pods(&self) -> impl Iterator<Item = A> + '_ {
        self.pod_ips.iter().copied().filter(|ip| *ip != self.primary)
    }
}

/// A VM's Neutron port that tcnp-ipam manages: its own addresses plus the pod addresses on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPort {
    /// Neutron port id.
    pub port_id: String,
    /// The VM's IPv4 address and every other IPv4 fixed IP of the port.
    pub v4: Hosted<Ipv4Addr>,
    /// The VM's IPv6 address (tcnp-ipam's `primary6` tag) and the other IPv6 fixed IPs of
    /// its subnet; `None` when the port names no usable IPv6 address (no IPv6 routes).
    pub v6: Option<Hosted<Ipv6Addr>>,
}

/// What the controller knows about one router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterState {
    /// Neutron router id.
    pub id: String,
    /// All static routes, ours and everyone else's.
    pub routes: Vec<Route>,
    /// The router's tags (our ownership ledger lives there).
    pub tags: Vec<String>,
    /// Neutron's revision of the router: every write is conditional on it (`If-Match`).
    pub revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_never_mix() {
        let v4: IpNet = "10.0.0.5/32".parse().unwrap();
        let v6: IpNet = "fd00::5/128".parse().unwrap();
        let (a4, a6): (IpAddr, IpAddr) = ("10.0.0.8".parse().unwrap(), "fd00::8".parse().unwrap());
        assert!(Route::checked(v4, a6).is_none() && Route::checked(v6, a4).is_none());
        assert_eq!(Route::checked(v6, a6), Some(Route::host("fd00::5".parse::<Ipv6Addr>().unwrap(), "fd00::8".parse().unwrap())));
    }

    #[test]
    fn a_host_route_of_either_family_covers_one_address() {
        let h4 = Route::host(Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 8));
        let h6 = Route::host("fd00::5".parse::<Ipv6Addr>().unwrap(), "fd00::8".parse().unwrap());
        assert_eq!((h4.coverage(), h6.coverage()), (1, 1));
        assert_eq!(h6.to_string(), "fd00::5/128 via fd00::8");
        assert_eq!(Route::v4("10.0.0.0/28".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 8)).coverage(), 16);
        assert_eq!(Route::v6("::/0".parse().unwrap(), "fd00::8".parse().unwrap()).coverage(), u128::MAX);
    }
}
