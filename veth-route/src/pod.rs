//! The pod side: CNI_IFNAME up with the IPAM address (announced by gratuitous ARP), a
//! permanent neighbour entry for the gateway, and only the gateway routes. A dual-stack
//! pod gets the same for IPv6: its address as a /128, the link-local gateway `fe80::1`
//! (`gateway::GATEWAY6`) with a permanent neighbour entry, and the routes via it.
//! Everything here runs inside the pod's namespace (see `netns`).
//!
//! Why the neighbour entry: the host may answer ARP only for addresses on the device the
//! request arrives on (`net.ipv4.conf.all.arp_ignore=1`, as kube-proxy's IPVS strictARP and
//! MetalLB set it), and the gateway lives on `dummy0`, not on the host veth. With the
//! gateway's MAC (the host veth's) fixed in the pod, the pod never ARPs for its gateway,
//! so the host's arp_ignore/arp_filter/arp_announce, now or changed later, cannot cut it
//! off. Every pod route goes via the gateway, so the pod sends no ARP requests at all; it
//! only answers the host's, which those settings do not affect. (Setting the pod's
//! interface down flushes even permanent entries; CHECK reports the entry missing then.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::Handle;

use crate::error::{Error, Result};
use crate::gateway::GATEWAY6;
use crate::netlink::{self, mac_string, Link, Neigh, Route};
use crate::netns::NetNs;
use crate::sysctl;

/// What the pod side should look like.
#[derive(Debug, Clone)]
pub struct PodPlan {
    /// CNI_IFNAME.
    pub ifname: String,
    /// The IPAM address with its prefix (e.g. 10.10.10.19/24).
    pub addr: Ipv4Net,
    /// The host gateway (169.254.1.1).
    pub gateway: Ipv4Addr,
    /// Extra destinations routed via the gateway (from IPAM; never the default route).
    pub extra: Vec<Ipv4Net>,
    /// The host veth's MAC, which the gateway resolves to in the pod (see the module docs).
    pub gateway_mac: Option<[u8; 6]>,
    /// The IPv6 side of a dual-stack pod.
    pub v6: Option<Plan6>,
}

/// The IPv6 side of a dual-stack pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan6 {
    /// The pod's address. It goes on the pod as a /128 whatever the subnet's prefix: as
    /// the IPv4 /32 routes, every peer is then reached through the host.
    pub addr: Ipv6Addr,
    /// Extra destinations routed via the gateway (from IPAM; never the default route).
    pub extra: Vec<Ipv6Net>,
}

impl Plan6 {
    /// The address as configured.
    pub fn net(&self) -> Ipv6Net {
        Ipv6Net::new(self.addr, 128).expect("/128 is valid")
    }
}

/// The metric the kernel gives an IPv6 route added without one (`IP6_RT_PRIO_USER`).
const IPV6_USER_METRIC: u32 = 1024;

impl PodPlan {
    /// Build a plan; IPAM route destinations are deduplicated, the default route dropped
    /// (the plan always has one). Destinations are kept as given: one with host bits set
    /// is the IPAM's mistake and the kernel's refusal is reported, not papered over.
    pub fn new(ifname: &str, addr: Ipv4Net, gateway: Ipv4Addr, ipam_routes: impl IntoIterator<Item = Ipv4Net>) -> PodPlan {
        let mut extra: Vec<Ipv4Net> = Vec::new();
        for dst in ipam_routes {
            if dst.prefix_len() != 0 && !extra.contains(&dst) {
                extra.push(dst);
            }
        }
        PodPlan { ifname: ifname.to_string(), addr, gateway, extra, gateway_mac: None, v6: None }
    }

    /// The plan with an IPv6 address and its IPAM routes (deduplicated, no default route).
    pub fn with_ipv6(self, addr: Option<Ipv6Addr>, ipam_routes: impl IntoIterator<Item = Ipv6Net>) -> PodPlan {
        let v6 = addr.map(|addr| {
            let mut extra: Vec<Ipv6Net> = Vec::new();
            for dst in ipam_routes {
                if dst.prefix_len() != 0 && !extra.contains(&dst) {
                    extra.push(dst);
                }
            }
            Plan6 { addr, extra }
        });
        PodPlan { v6, ..self }
    }

    /// The plan with the gateway's neighbour entry pointing at `mac` (the host veth's).
    pub fn with_gateway_mac(self, mac: Option<[u8; 6]>) -> PodPlan {
        PodPlan { gateway_mac: mac, ..self }
    }

    /// The routes the pod must have, in the order they are added.
    pub fn routes(&self, index: u32) -> Vec<Route> {
        let mut r = vec![
            Route::new(Ipv4Net::new(self.gateway, 32).expect("/32"), None, index, RouteScope::Link),
            Route::new(Ipv4Net::default(), Some(self.gateway.into()), index, RouteScope::Universe),
        ];
        r.extend(self.extra.iter().map(|dst| Route::new(*dst, Some(self.gateway.into()), index, RouteScope::Universe)));
        if let Some(v6) = &self.v6 {
            // A link-local gateway with the device needs no route to itself.
            let via =
                |dst: Ipv6Net| Route { priority: IPV6_USER_METRIC, ..Route::new(dst, Some(GATEWAY6.into()), index, RouteScope::Universe) };
            r.push(via(Ipv6Net::default()));
            r.extend(v6.extra.iter().map(|dst| via(*dst)));
        }
        r
    }
}

/// The pod interface after configuration.
#[derive(Debug, Clone)]
pub struct PodIface {
    /// ifindex inside the pod.
    pub index: u32,
    /// MAC.
    pub mac: [u8; 6],
    /// IFLA_LINK: the host veth's ifindex.
    pub peer_index: Option<u32>,
    /// MTU.
    pub mtu: Option<u32>,
}

/// Whether `ifname` already exists in the pod.
pub async fn exists(h: &Handle, ifname: &str) -> Result<bool> {
    Ok(netlink::link_by_name(h, ifname).await?.is_some())
}

/// Configure the pod interface as planned.
pub async fn configure(h: &Handle, ns: &NetNs, plan: &PodPlan) -> Result<PodIface> {
    let link = netlink::link_by_name(h, &plan.ifname)
        .await?
        .ok_or_else(|| Error::Command(format!("{} vanished from the pod right after creation", plan.ifname)))?;
    // Gratuitous ARP: with arp_notify the kernel announces the address itself when the
    // link comes up. (A packet socket of our own would cost an RCU grace period, ~10 ms,
    // when it is closed.)
    let key = format!("net/ipv4/conf/{}/arp_notify", plan.ifname);
    ns.enter(|| sysctl::ensure(&key, "1"))?;
    if plan.v6.is_some() {
        ns.enter(|| ipv6_sysctls(&plan.ifname))?;
    }
    netlink::add_ipv4_addr(h, link.index, plan.addr).await?;
    if let Some(v6) = &plan.v6 {
        netlink::add_ipv6_addr_nodad(h, link.index, v6.net()).await?;
    }
    netlink::set_up(h, link.index, &plan.ifname).await?;
    // Before the routes, so no lookup through the gateway ever starts an ARP resolution
    // (or, for IPv6, a neighbour solicitation).
    let gw_mac = plan.gateway_mac.ok_or_else(|| Error::Command(format!("no MAC known for gateway {} of {}", plan.gateway, plan.ifname)))?;
    netlink::set_permanent_neighbour(h, link.index, plan.gateway.into(), gw_mac).await?;
    if plan.v6.is_some() {
        netlink::set_permanent_neighbour(h, link.index, GATEWAY6.into(), gw_mac).await?;
    }
    // The design note shows only the two gateway routes: drop the kernel's prefix route,
    // so on-subnet peers are also reached through the host (which routes per pod /32).
    if plan.addr.prefix_len() < 32 {
        let prefix = Route { protocol: RouteProtocol::Kernel, ..Route::new(plan.addr.trunc(), None, link.index, RouteScope::Link) };
        netlink::del_route(h, &prefix).await?;
    }
    for route in plan.routes(link.index) {
        netlink::add_route(h, &route).await.map_err(|e| match e {
            Error::Netlink { op, source } => Error::Rejected { op: format!("{op} in the pod"), source },
            other => other,
        })?;
    }
    let mac = link.mac.ok_or_else(|| Error::Command(format!("{} has no MAC address", plan.ifname)))?;
    Ok(PodIface { index: link.index, mac, peer_index: link.peer_index, mtu: link.mtu })
}

/// The pod's IPv6 settings, before its interface is up: IPv6 on (a runtime may have
/// turned it off), no router advertisements or SLAAC (a stray RA must not add a route or an
/// address), no duplicate address detection (the address is usable at once; IPAM made it
/// unique). `accept_dad` counts as the larger of `all` and the device's, so both are set.
fn ipv6_sysctls(ifname: &str) -> Result<()> {
    sysctl::ensure_ipv6_conf(ifname, &[("disable_ipv6", "0"), ("accept_ra", "0"), ("autoconf", "0"), ("accept_dad", "0")])?;
    sysctl::ensure("net/ipv6/conf/all/accept_dad", "0")
}

/// What the pod side looks like now (for CHECK).
#[derive(Debug, Clone)]
pub struct PodState {
    /// The interface.
    pub link: Link,
    /// Its addresses (both families).
    pub addrs: Vec<ipnet::IpNet>,
    /// The namespace's main-table routes: IPv4, and IPv6 when `ipv6` was asked for.
    pub routes: Vec<Route>,
    /// The interface's IPv4 neighbour entries.
    pub neighbours: Vec<Neigh>,
}

/// Read the pod side; `None` when `ifname` does not exist. IPv6 routes only with `ipv6`:
/// an IPv4-only pod's IPv6 routes are the kernel's (its link-local prefix), not ours.
pub async fn inspect(h: &Handle, ifname: &str, ipv6: bool) -> Result<Option<PodState>> {
    let Some(link) = netlink::link_by_name(h, ifname).await? else { return Ok(None) };
    let addrs = netlink::addrs(h, link.index).await?;
    let mut routes = netlink::ipv4_routes(h).await?;
    if ipv6 {
        routes.extend(netlink::ipv6_routes(h).await?);
    }
    let neighbours = netlink::neighbours(h, link.index).await?;
    Ok(Some(PodState { link, addrs, routes, neighbours }))
}

/// What CHECK finds wrong with the gateways' neighbour entries (IPv4, and IPv6 for a
/// dual-stack pod): each must be permanent and hold `plan.gateway_mac`. A learned
/// (reachable, stale...) entry is wrong too: it means the pod resolves its gateway by ARP
/// again, which `arp_ignore=1` on the host breaks.
pub fn gateway_neigh_diffs(plan: &PodPlan, state: &PodState) -> Vec<String> {
    let Some(want) = plan.gateway_mac else { return Vec::new() };
    let (ifname, want_s) = (&plan.ifname, mac_string(&want));
    let gateways = std::iter::once(IpAddr::V4(plan.gateway)).chain(plan.v6.as_ref().map(|_| IpAddr::V6(GATEWAY6)));
    gateways
        .filter_map(|gw| match state.neighbours.iter().find(|n| n.ip == gw) {
            None => Some(format!("pod {ifname} has no neighbour entry for gateway {gw} (want lladdr {want_s} permanent)")),
            Some(n) if n.mac == Some(want) && n.state == NeighbourState::Permanent => None,
            Some(n) => Some(format!(
                "pod {ifname} neighbour entry for gateway {gw} is {} {:?}, want lladdr {want_s} permanent (the host veth's MAC)",
                n.mac.as_ref().map_or_else(|| "without lladdr".to_string(), |m| format!("lladdr {}", mac_string(m))),
                n.state
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_has_the_two_gateway_routes_then_deduplicated_extras() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let gw = Ipv4Addr::new(169, 254, 1, 1);
        let plan = PodPlan::new("eth0", net("10.10.10.19/24"), gw, [net("0.0.0.0/0"), net("10.9.0.0/16"), net("10.9.0.0/16")]);
        assert_eq!(plan.extra, vec![net("10.9.0.0/16")]);
        let r = plan.routes(7);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].dst, r[0].gw, r[0].scope), (net("169.254.1.1/32").into(), None, RouteScope::Link));
        assert_eq!((r[1].dst, r[1].gw, r[1].scope), (net("0.0.0.0/0").into(), Some(gw.into()), RouteScope::Universe));
        assert!(r.iter().all(|x| x.oif == Some(7) && x.protocol == RouteProtocol::Boot));
    }

    #[test]
    fn gateway_neighbour_must_be_permanent_with_the_host_veth_mac() {
        let gw = Ipv4Addr::new(169, 254, 1, 1);
        let host_mac = [2, 0, 0, 0, 0, 1];
        let plan = PodPlan::new("eth0", "10.10.10.19/24".parse().unwrap(), gw, []).with_gateway_mac(Some(host_mac));
        let link = Link { index: 2, name: "eth0".into(), mac: None, peer_index: None, alias: None, kind: None, up: true, mtu: None };
        let state = |n: Vec<Neigh>| PodState { link: link.clone(), addrs: vec![], routes: vec![], neighbours: n };
        let entry = |mac, state| Neigh { ip: gw.into(), mac, state };

        assert!(gateway_neigh_diffs(&plan, &state(vec![entry(Some(host_mac), NeighbourState::Permanent)])).is_empty());
        let missing = gateway_neigh_diffs(&plan, &state(vec![]));
        assert_eq!(missing, ["pod eth0 has no neighbour entry for gateway 169.254.1.1 (want lladdr 02:00:00:00:00:01 permanent)"]);
        let wrong = gateway_neigh_diffs(&plan, &state(vec![entry(Some([2, 0, 0, 0, 0, 9]), NeighbourState::Permanent)]));
        assert!(wrong[0].contains("is lladdr 02:00:00:00:00:09 Permanent, want lladdr 02:00:00:00:00:01"), "{wrong:?}");
        let learned = gateway_neigh_diffs(&plan, &state(vec![entry(Some(host_mac), NeighbourState::Reachable)]));
        assert!(learned[0].contains("Reachable"), "{learned:?}");
        // Entries for other addresses do not count.
        let other = Neigh { ip: Ipv4Addr::new(10, 10, 10, 8).into(), mac: Some(host_mac), state: NeighbourState::Permanent };
        assert_eq!(gateway_neigh_diffs(&plan, &state(vec![other])).len(), 1);
    }
}
