//! Thin typed helpers over rtnetlink: links, and addresses, routes and neighbours of either
//! family (one type per object, not one per family: CHECK compares them all the same way).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::error::{errno, Error, Result};

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// ifindex.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// IFLA_IFALIAS.
    pub alias: Option<String>,
    /// Link kind (veth, dummy...).
    pub kind: Option<InfoKind>,
    /// Administratively up.
    pub up: bool,
    /// MTU.
    pub mtu: Option<u32>,
}

impl Link {
    fn from_message(m: LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            peer_index: None,
            alias: None,
            kind: None,
            up: m.header.flags.contains(LinkFlags::Up),
            mtu: None,
        };
        for a in m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Address(a) if a.len() == 6 => l.mac = Some([a[0], a[1], a[2], a[3], a[4], a[5]]),
                LinkAttribute::Link(i) => l.peer_index = Some(i),
                LinkAttribute::IfAlias(s) => l.alias = Some(s),
                LinkAttribute::Mtu(m) => l.mtu = Some(m),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = Some(k);
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

/// Format a MAC the way CNI results and `ip` do.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The link called `name`, if it exists.
pub async fn link_by_name(h: &Handle, name: &str) -> Result<Option<Link>> {
    match h.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(m) => Ok(m.map(Link::from_message)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(Error::netlink(format!("look up link {name}"))(e)),
    }
}

/// The link with index `index`, if it exists.
pub async fn link_by_index(h: &Handle, index: u32) -> Result<Option<Link>> {
    match h.link().get().match_index(index).execute().try_next().await {
        Ok(m) => Ok(m.map(Link::from_message)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(Error::netlink(format!("look up link #{index}"))(e)),
    }
}

/// Every link of the namespace.
pub async fn links(h: &Handle) -> Result<Vec<Link>> {
    let msgs: Vec<LinkMessage> = h.link().get().execute().try_collect().await.map_err(Error::netlink("list links"))?;
    Ok(msgs.into_iter().map(Link::from_message).collect())
}

/// Delete link `name`; Ok(false) when it does not exist.
pub async fn delete_link(h: &Handle, name: &str) -> Result<bool> {
    let Some(link) = link_by_name(h, name).await? else { return Ok(false) };
    match h.link().del(link.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(Error::netlink(format!("delete link {name}"))(e)),
    }
}

/// Bring a link up.
pub async fn set_up(h: &Handle, index: u32, what: &str) -> Result<()> {
    h.link().change(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(Error::netlink(format!("set {what} up")))
}

/// The addresses of both families on link `index`.
pub async fn addrs(h: &Handle, index: u32) -> Result<Vec<IpNet>> {
    let msgs: Vec<AddressMessage> =
        h.address().get().set_link_index_filter(index).execute().try_collect().await.map_err(Error::netlink("list addresses"))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.index == index)
        .filter_map(|m| {
            // IPv6 has IFA_ADDRESS only; IPv4 has IFA_LOCAL (the peer address on point-to-point links is IFA_ADDRESS).
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = local.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) if m.header.family == AddressFamily::Inet6 => Some(*ip),
                    _ => None,
                })
            })?;
            IpNet::new(ip, m.header.prefix_len).ok()
        })
        .collect())
}

/// The IPv4 addresses on link `index`.
pub async fn ipv4_addrs(h: &Handle, index: u32) -> Result<Vec<Ipv4Net>> {
    Ok(addrs(h, index)
        .await?
        .into_iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        })
        .collect())
}

/// Add `addr` to link `index` without a broadcast address (as `ip addr add` does);
/// `Ok(false)` when it was already there.
pub async fn add_ipv4_addr(h: &Handle, index: u32, addr: Ipv4Net) -> Result<bool> {
    let mut req = h.address().add(index, IpAddr::V4(addr.addr()), addr.prefix_len());
    req.message_mut().attributes.retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
    match req.execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(Error::netlink(format!("add address {addr}"))(e)),
    }
}

/// Add the IPv6 `addr` to link `index` with `nodad` (`ip addr add ... nodad`): the
/// address is usable at once instead of after duplicate address detection's second or
/// more, and nothing else on a pod's point-to-point veth could hold it. `Ok(false)` when
/// it was already there.
pub async fn add_ipv6_addr_nodad(h: &Handle, index: u32, addr: Ipv6Net) -> Result<bool> {
    let mut req = h.address().add(index, IpAddr::V6(addr.addr()), addr.prefix_len());
    req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    match req.execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(Error::netlink(format!("add address {addr}"))(e)),
    }
}

/// A route in the main table, of either family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop (of the destination's family).
    pub gw: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
    /// Scope.
    pub scope: RouteScope,
    /// Protocol (`boot` for routes we add, like `ip route add`).
    pub protocol: RouteProtocol,
    /// Metric (0 for routes we add; the kernel gives IPv6 routes 1024 when none is set).
    pub priority: u32,
}

impl Route {
    /// A route as `ip route add` would create it: protocol boot, main table.
    pub fn new(dst: impl Into<IpNet>, gw: Option<IpAddr>, oif: u32, scope: RouteScope) -> Route {
        Route { dst: dst.into(), gw, oif: Some(oif), scope, protocol: RouteProtocol::Boot, priority: 0 }
    }

    fn message(&self) -> Result<RouteMessage> {
        let bad = |e| Error::Command(format!("route {}: {e:?}", describe(self)));
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(self.dst.addr(), self.dst.prefix_len())
            .map_err(bad)?
            .scope(self.scope)
            .protocol(self.protocol);
        if let Some(gw) = self.gw {
            b = b.gateway(gw).map_err(bad)?;
        }
        if let Some(oif) = self.oif {
            b = b.output_interface(oif);
        }
        if self.priority != 0 {
            b = b.priority(self.priority);
        }
        Ok(b.build())
    }

    fn from_message(m: &RouteMessage) -> Option<Route> {
        if m.header.table != 254 && !m.attributes.iter().any(|a| matches!(a, RouteAttribute::Table(254))) {
            return None;
        }
        let mut dst = match m.header.address_family {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => return None,
        };
        let mut gw = None;
        let mut oif = None;
        let mut priority = 0;
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = IpAddr::V4(*ip),
                RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = IpAddr::V6(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(IpAddr::V4(*ip)),
                RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => gw = Some(IpAddr::V6(*ip)),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Priority(p) => priority = *p,
                _ => {}
            }
        }
        Some(Route {
            dst: IpNet::new(dst, m.header.destination_prefix_length).ok()?,
            gw,
            oif,
            scope: m.header.scope,
            protocol: m.header.protocol,
            priority,
        })
    }
}

/// IPv4 routes of the main table.
pub async fn ipv4_routes(h: &Handle) -> Result<Vec<Route>> {
    routes(h, RouteMessageBuilder::<Ipv4Addr>::new().build()).await
}

/// IPv6 routes of the main table.
pub async fn ipv6_routes(h: &Handle) -> Result<Vec<Route>> {
    routes(h, RouteMessageBuilder::<Ipv6Addr>::new().build()).await
}

async fn routes(h: &Handle, filter: RouteMessage) -> Result<Vec<Route>> {
    let msgs: Vec<RouteMessage> = h.route().get(filter).execute().try_collect().await.map_err(Error::netlink("list routes"))?;
    Ok(msgs.iter().filter_map(Route::from_message).collect())
}

/// Add a route; `Ok(false)` when an identical one exists.
pub async fn add_route(h: &Handle, r: &Route) -> Result<bool> {
    match h.route().add(r.message()?).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(Error::netlink(format!("add route {}", describe(r)))(e)),
    }
}

/// Delete a route; `Ok(false)` when it was not there.
pub async fn del_route(h: &Handle, r: &Route) -> Result<bool> {
    match h.route().del(r.message()?).execute().await {
        Ok(()) => Ok(true),
        Err(e) if matches!(errno(&e), Some(libc::ESRCH) | Some(libc::ENOENT)) => Ok(false),
        Err(e) => Err(Error::netlink(format!("delete route {}", describe(r)))(e)),
    }
}

/// `ip route`-like text for messages.
pub fn describe(r: &Route) -> String {
    let dst = if r.dst.prefix_len() == 0 {
        "default".to_string()
    } else if r.dst.prefix_len() == r.dst.max_prefix_len() {
        r.dst.addr().to_string()
    } else {
        r.dst.to_string()
    };
    let mut s = dst;
    if let Some(gw) = r.gw {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev #{oif}"));
    }
    if r.scope == RouteScope::Link {
        s.push_str(" scope link");
    }
    if r.priority != 0 {
        s.push_str(&format!(" metric {}", r.priority));
    }
    s
}

/// A neighbour entry (ARP for IPv4, NDP for IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neigh {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its link-layer address (none while incomplete or failed).
    pub mac: Option<[u8; 6]>,
    /// NUD state.
    pub state: NeighbourState,
}

/// The neighbour entries of both families on link `index`.
pub async fn neighbours(h: &Handle, index: u32) -> Result<Vec<Neigh>> {
    let msgs: Vec<NeighbourMessage> = h.neighbours().get().execute().try_collect().await.map_err(Error::netlink("list neighbours"))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.ifindex == index)
        .filter_map(|m| {
            let mut ip = None;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => ip = Some(IpAddr::V4(*d)),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) => ip = Some(IpAddr::V6(*d)),
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => mac = Some([l[0], l[1], l[2], l[3], l[4], l[5]]),
                    _ => {}
                }
            }
            Some(Neigh { ip: ip?, mac, state: m.header.state })
        })
        .collect())
}

/// Make `ip` resolve to `mac` on link `index` for good (`ip neigh replace ... nud
/// permanent`): the kernel never sends ARP or neighbour solicitations for it, and neither
/// traffic nor timers change it.
pub async fn set_permanent_neighbour(h: &Handle, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
    h.neighbours()
        .add(index, ip)
        .state(NeighbourState::Permanent)
        .link_layer_address(&mac)
        .replace()
        .execute()
        .await
        .map_err(Error::netlink(format!("add permanent neighbour {ip} lladdr {}", mac_string(&mac))))
}
