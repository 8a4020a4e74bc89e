//! Plain data the controller reasons about, independent of how Neutron spells it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// One static route of a Neutron router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix. Kept as given by Neutron (it does not normalise), see `is_canonical`.
    pub destination: Ipv4Net,
    /// Next hop: the VM's own (primary) address.
    pub nexthop: Ipv4Addr,
}

impl Route {
    /// A route to `destination` through `nexthop`.
    pub fn new(destination: Ipv4Net, nexthop: Ipv4Addr) -> Self {
        Self { destination, nexthop }
    }

    /// A host route (`/32`) to `ip` through `nexthop`.
    pub fn host(ip: Ipv4Addr, nexthop: Ipv4Addr) -> Self {
        Self::new(Ipv4Net::new(ip, 32).expect("/32 is a valid prefix"), nexthop)
    }

    /// How many addresses the route covers: the measure of its usefulness under a limit.
    pub fn coverage(&self) -> u64 {
        1u64 << (32 - u32::from(self.destination.prefix_len()))
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.destination, self.nexthop)
    }
}

/// A VM's Neutron port that tcnp-ipam manages: its own address plus the pod addresses on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPort {
    /// Neutron port id.
    pub port_id: String,
    /// The VM's own address, the next hop for its pods.
    pub primary: Ipv4Addr,
    /// Every other IPv4 fixed IP of the port: pod addresses and warm spares alike.
    pub pod_ips: BTreeSet<Ipv4Addr>,
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
