//! Thin typed helpers over rtnetlink: links, IPv4 addresses, routes and neighbours.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
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

/// The IPv4 addresses on link `index`.
pub async fn ipv4_addrs(h: &Handle, index: u32) -> Result<Vec<Ipv4Net>> {
    let msgs: Vec<AddressMessage> =
        h.address().get().set_link_index_filter(index).execute().try_collect().await.map_err(Error::netlink("list addresses"))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.family == AddressFamily::Inet && m.header.index == index)
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Ipv4Net::new(*ip, m.header.prefix_len).ok(),
                _ => None,
            })
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

/// An IPv4 route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    /// Destination.
    pub dst: Ipv4Net,
    /// Next hop.
    pub gw: Option<Ipv4Addr>,
    /// Output interface.
    pub oif: Option<u32>,
    /// Scope.
    pub scope: RouteScope,
    /// Protocol (`boot` for routes we add, like `ip route add`).
    pub protocol: RouteProtocol,
    /// Metric (0 for routes we add).
    pub priority: u32,
}

impl Route4 {
    /// A route as `ip route add` would create it: protocol boot, main table.
    pub fn new(dst: Ipv4Net, gw: Option<Ipv4Addr>, oif: u32, scope: RouteScope) -> Route4 {
        Route4 { dst, gw, oif: Some(oif), scope, protocol: RouteProtocol::Boot, priority: 0 }
    }

    fn message(&self) -> RouteMessage {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(self.dst.addr(), self.dst.prefix_len())
            .scope(self.scope)
            .protocol(self.protocol);
        if let Some(gw) = self.gw {
            b = b.gateway(gw);
        }
        if let Some(oif) = self.oif {
            b = b.output_interface(oif);
        }
        b.build()
    }

    fn from_message(m: &RouteMessage) -> Option<Route4> {
        if m.header.address_family != AddressFamily::Inet
            || m.header.table != 254 && !m.attributes.iter().any(|a| matches!(a, RouteAttribute::Table(254)))
        {
            return None;
        }
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut gw = None;
        let mut oif = None;
        let mut priority = 0;
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Priority(p) => priority = *p,
                _ => {}
            }
        }
        Some(Route4 {
            dst: Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?,
            gw,
            oif,
            scope: m.header.scope,
            protocol: m.header.protocol,
            priority,
        })
    }
}

/// IPv4 routes of the main table.
pub async fn ipv4_routes(h: &Handle) -> Result<Vec<Route4>> {
    let msgs: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(Error::netlink("list routes"))?;
    Ok(msgs.iter().filter_map(Route4::from_message).collect())
}

/// Add a route; `Ok(false)` when an identical one exists.
pub async fn add_route(h: &Handle, r: &Route4) -> Result<bool> {
    match h.route().add(r.message()).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(Error::netlink(format!("add route {}", describe(r)))(e)),
    }
}

/// Delete a route; `Ok(false)` when it was not there.
pub async fn del_route(h: &Handle, r: &Route4) -> Result<bool> {
    match h.route().del(r.message()).execute().await {
        Ok(()) => Ok(true),
        Err(e) if matches!(errno(&e), Some(libc::ESRCH) | Some(libc::ENOENT)) => Ok(false),
        Err(e) => Err(Error::netlink(format!("delete route {}", describe(r)))(e)),
    }
}

/// `ip route`-like text for messages.
pub fn describe(r: &Route4) -> String {
    let dst = if r.dst.prefix_len() == 0 {
        "default".to_string()
    } else if r.dst.prefix_len() == 32 {
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

/// An IPv4 neighbour (ARP) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neigh4 {
    /// The neighbour's address.
    pub ip: Ipv4Addr,
    /// Its link-layer address (none while incomplete or failed).
    pub mac: Option<[u8; 6]>,
    /// NUD state.
    pub state: NeighbourState,
}

/// The IPv4 neighbour entries on link `index`.
pub async fn ipv4_neighbours(h: &Handle, index: u32) -> Result<Vec<Neigh4>> {
    let msgs: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute()
        .try_collect()
        .await
        .map_err(Error::netlink("list neighbours"))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.family == AddressFamily::Inet && m.header.ifindex == index)
        .filter_map(|m| {
            let mut ip = None;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => ip = Some(*d),
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => mac = Some([l[0], l[1], l[2], l[3], l[4], l[5]]),
                    _ => {}
                }
            }
            Some(Neigh4 { ip: ip?, mac, state: m.header.state })
        })
        .collect())
}

/// Make `ip` resolve to `mac` on link `index` for good (`ip neigh replace ... nud
/// permanent`): the kernel never sends ARP for it, and neither ARP traffic nor timers
/// change it.
pub async fn set_permanent_neighbour(h: &Handle, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
    h.neighbours()
        .add(index, IpAddr::V4(ip))
        .state(NeighbourState::Permanent)
        .link_layer_address(&mac)
        .replace()
        .execute()
        .await
        .map_err(Error::netlink(format!("add permanent neighbour {ip} lladdr {}", mac_string(&mac))))
}
