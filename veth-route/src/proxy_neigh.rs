//! Proxy-neighbour mode: the VM answers ARP (and, for dual-stack pods' IPv6, neighbour
//! solicitations) for its pods' addresses on its uplink.
//!
//! One proxy neighbour entry per pod IP (`ip neigh add proxy <podIP> dev <uplink>`), never
//! blanket `proxy_arp`, so the VM claims exactly the addresses Neutron gave it and nothing
//! else on the segment. The vrouter and the other VMs on the subnet then reach a pod
//! directly, with no router route at all.
//!
//! Kernel conditions (verified on 6.18): the entry answers an ARP request only when
//! forwarding is on for the uplink and the route to the pod leaves through another device
//! (the host veth); `proxy_arp` on the uplink stays 0. Broadcast requests are answered after
//! up to `net.ipv4.neigh.<uplink>.proxy_delay` (default 0.8 s), the kernel's damping for
//! proxies; only the first packet to a pod pays it.
//!
//! IPv6 (proxy NDP) needs more: the entry answers only when the uplink forwards, which
//! comes from `all.forwarding` (set for dual-stack pods, see `host`); unicast solicitations
//! (the router's reachability probes) arrive as packets to forward, and the kernel hands
//! them to neighbour discovery only with `net.ipv6.conf.all.proxy_ndp=1`, not the
//! device's; and `net.ipv6.neigh.<uplink>.proxy_delay=0`, or multicast solicitations are
//! answered after up to 0.8 s (docs/dual-stack-design.md §5).
//!
//! Our entries carry the neighbour protocol [`PROTOCOL`], so GC and DEL touch only entries
//! this plugin made, never an administrator's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
use netlink_packet_route::AddressFamily;
use rtnetlink::IpVersion;
use serde::Deserialize;

/// Neighbour protocol stamped on our entries (`ip neigh show proxy` prints `proto 86`).
pub const PROTOCOL: u8 = 86;

/// `"proxyNeighbor": {"uplink": "eth0"}` in the network config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyNeighborConfig {
    /// The VM's interface on the tenant network; default: the interface of the default route.
    #[serde(default)]
    pub uplink: Option<String>,
}

/// Why a proxy neighbour operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyNeighError {
    /// The uplink named in the config does not exist in the host namespace.
    #[error("proxyNeighbor: uplink {0:?} not found")]
    UplinkNotFound(String),
    /// No uplink configured and no default route to take it from.
    #[error("proxyNeighbor: no uplink configured and no IPv4 default route to take it from")]
    NoDefaultRoute,
    /// Forwarding is off on the uplink, so the kernel would ignore the entry.
    #[error("proxyNeighbor: {family} forwarding is off on {uplink} (net.{family_key}.conf.{uplink}.forwarding=0); proxy entries answer only when it is on", family_key = family.to_lowercase())]
    ForwardingOff { family: &'static str, uplink: String },
    /// The entry expected by CHECK is missing.
    #[error("proxyNeighbor: no proxy neighbour entry for {ip} on {uplink}")]
    Missing { ip: IpAddr, uplink: String },
    /// A sysctl proxy NDP needs could not be read or written.
    #[error("proxyNeighbor: {0}")]
    Sysctl(String),
    /// A netlink request failed.
    #[error("proxyNeighbor: {op} on {uplink}: {source}")]
    Netlink { op: &'static str, uplink: String, source: rtnetlink::Error },
    /// Opening the netlink socket failed.
    #[error("proxyNeighbor: netlink socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// Makes the VM answer ARP (IPv4) or neighbour solicitations (IPv6) for `ip` on the
/// uplink. Idempotent (the kernel updates in place).
pub async fn add(cfg: &ProxyNeighborConfig, ip: IpAddr) -> Result<(), ProxyNeighError> {
    let nl = Netlink::open()?;
    let uplink = nl.uplink(cfg).await?;
    let index = nl.index(&uplink).await?;
    check_forwarding(&uplink, ip)?;
    if ip.is_ipv6() {
        proxy_ndp_sysctls(&uplink)?;
    }
    nl.handle
        .neighbours()
        .add(index, ip)
        .flags(NeighbourFlags::Proxy)
        .message_mut_with(|m| m.attributes.push(NeighbourAttribute::Protocol(RouteProtocol::Other(PROTOCOL))))
        .execute()
        .await
        .map_err(|source| ProxyNeighError::Netlink { op: "add proxy neighbour", uplink, source })
}

/// Stops answering for `ip`. Succeeds when the entry or even the uplink is already gone.
pub async fn remove(cfg: &ProxyNeighborConfig, ip: IpAddr) -> Result<(), ProxyNeighError> {
    let nl = Netlink::open()?;
    let uplink = match nl.uplink(cfg).await {
        Ok(u) => u,
        Err(ProxyNeighError::NoDefaultRoute) => return Ok(()),
        Err(e) => return Err(e),
    };
    let index = match nl.index(&uplink).await {
        Ok(i) => i,
        Err(ProxyNeighError::UplinkNotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in nl.ours(index, &uplink).await? {
        if entry.ip == ip {
            nl.delete(entry.message, &uplink).await?;
        }
    }
    Ok(())
}

/// True when our entry for `ip` is present (for CHECK).
pub async fn check(cfg: &ProxyNeighborConfig, ip: IpAddr) -> Result<(), ProxyNeighError> {
    let nl = Netlink::open()?;
    let uplink = nl.uplink(cfg).await?;
    let index = nl.index(&uplink).await?;
    if nl.ours(index, &uplink).await?.iter().any(|e| e.ip == ip) {
        Ok(())
    } else {
        Err(ProxyNeighError::Missing { ip, uplink })
    }
}

/// Removes our entries whose pod is no longer attached here: no `/32` (`/128`) route to
/// the address through a device other than the uplink. Run it after the plugin's own GC
/// has removed the stale veths (their routes vanish with them). Returns the addresses
/// released.
pub async fn gc(cfg: &ProxyNeighborConfig) -> Result<Vec<IpAddr>, ProxyNeighError> {
    let nl = Netlink::open()?;
    let uplink = nl.uplink(cfg).await?;
    let index = nl.index(&uplink).await?;
    let attached = nl.host_routes_not_via(index, &uplink).await?;
    let mut released = Vec::new();
    for entry in nl.ours(index, &uplink).await? {
        if !attached.contains(&entry.ip) {
            nl.delete(entry.message, &uplink).await?;
            released.push(entry.ip);
        }
    }
    Ok(released)
}

/// The kernel ignores proxy entries on an interface that does not forward `ip`'s family.
fn check_forwarding(uplink: &str, ip: IpAddr) -> Result<(), ProxyNeighError> {
    let (family, key) = if ip.is_ipv4() { ("IPv4", "ipv4") } else { ("IPv6", "ipv6") };
    let path = format!("/proc/sys/net/{key}/conf/{uplink}/forwarding");
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == "0" => Err(ProxyNeighError::ForwardingOff { family, uplink: uplink.to_string() }),
        // Unreadable (e.g. no /proc): let the add itself succeed or fail.
        _ => Ok(()),
    }
}

/// What proxy NDP needs beyond the entry (see the module docs). Both are node-wide and
/// harmless without entries: nothing to undo on DEL.
fn proxy_ndp_sysctls(uplink: &str) -> Result<(), ProxyNeighError> {
    let set = |key: &str| {
        crate::sysctl::ensure(key, if key.ends_with("proxy_delay") { "0" } else { "1" }).map_err(|e| ProxyNeighError::Sysctl(e.to_string()))
    };
    set("net/ipv6/conf/all/proxy_ndp")?;
    set(&format!("net/ipv6/neigh/{uplink}/proxy_delay"))
}

/// One of our proxy entries.
struct Entry {
    ip: IpAddr,
    message: NeighbourMessage,
}

/// A netlink connection in the current network namespace.
struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    fn open() -> Result<Self, ProxyNeighError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    async fn uplink(&self, cfg: &ProxyNeighborConfig) -> Result<String, ProxyNeighError> {
        if let Some(u) = &cfg.uplink {
            return Ok(u.clone());
        }
        match self.main_routes(IpVersion::V4, 0, "(default route)").await?.first() {
            Some((_, oif)) => self.name(*oif).await,
            None => Err(ProxyNeighError::NoDefaultRoute),
        }
    }

    async fn name(&self, index: u32) -> Result<String, ProxyNeighError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let link = links.try_next().await.ok().flatten().ok_or_else(|| ProxyNeighError::UplinkNotFound(format!("#{index}")))?;
        link.attributes
            .iter()
            .find_map(|a| match a {
                netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
            .ok_or_else(|| ProxyNeighError::UplinkNotFound(format!("#{index}")))
    }

    async fn index(&self, uplink: &str) -> Result<u32, ProxyNeighError> {
        let mut links = self.handle.link().get().match_name(uplink.to_string()).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            // ENODEV arrives as an error for a missing name.
            Ok(None) | Err(_) => Err(ProxyNeighError::UplinkNotFound(uplink.to_string())),
        }
    }

    /// Our proxy entries of both families on the uplink.
    async fn ours(&self, index: u32, uplink: &str) -> Result<Vec<Entry>, ProxyNeighError> {
        let mut dump = self.handle.neighbours().get().proxies().execute();
        let mut out = Vec::new();
        while let Some(m) = dump.try_next().await.map_err(|source| ProxyNeighError::Netlink {
            op: "list proxy neighbours",
            uplink: uplink.to_string(),
            source,
        })? {
            if m.header.ifindex != index || !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6) {
                continue;
            }
            let ours = m.attributes.iter().any(|a| matches!(a, NeighbourAttribute::Protocol(RouteProtocol::Other(p)) if *p == PROTOCOL));
            let ip = m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                _ => None,
            });
            if let (true, Some(ip)) = (ours, ip) {
                out.push(Entry { ip, message: m });
            }
        }
        Ok(out)
    }

    async fn delete(&self, mut message: NeighbourMessage, uplink: &str) -> Result<(), ProxyNeighError> {
        // The kernel finds a proxy entry by family, ifindex, NTF_PROXY and destination.
        message.attributes.retain(|a| matches!(a, NeighbourAttribute::Destination(_)));
        message.header.flags = NeighbourFlags::Proxy;
        match self.handle.neighbours().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enoent() => Ok(()),
            Err(source) => Err(ProxyNeighError::Netlink { op: "delete proxy neighbour", uplink: uplink.to_string(), source }),
        }
    }

    /// Addresses with a host route (`/32`, `/128`) in the main table through a device other
    /// than the uplink.
    async fn host_routes_not_via(&self, uplink_index: u32, uplink: &str) -> Result<Vec<IpAddr>, ProxyNeighError> {
        let v4 = self.main_routes(IpVersion::V4, 32, uplink).await?;
        let v6 = self.main_routes(IpVersion::V6, 128, uplink).await?;
        Ok(v4.into_iter().chain(v6).filter(|(_, oif)| *oif != uplink_index).map(|(dst, _)| dst).collect())
    }

    /// Main-table routes of one family and prefix length with an output device:
    /// (destination, oif). A default route carries no destination: the family's
    /// unspecified address stands for it.
    async fn main_routes(&self, family: IpVersion, prefix_len: u8, uplink: &str) -> Result<Vec<(IpAddr, u32)>, ProxyNeighError> {
        let (filter, unspecified) = match family {
            IpVersion::V4 => (rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build(), IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            IpVersion::V6 => (rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new().build(), IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        };
        let mut routes = self.handle.route().get(filter).execute();
        let mut out = Vec::new();
        while let Some(r) =
            routes.try_next().await.map_err(|source| ProxyNeighError::Netlink { op: "list routes", uplink: uplink.to_string(), source })?
        {
            if r.header.destination_prefix_length != prefix_len || r.header.table != libc_main_table() {
                continue;
            }
            let Some(oif) = oif_of(&r) else { continue };
            let dst = r
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                    _ => None,
                })
                .unwrap_or(unspecified);
            out.push((dst, oif));
        }
        Ok(out)
    }
}

/// A route's output device.
fn oif_of(r: &netlink_packet_route::route::RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// RT_TABLE_MAIN.
const fn libc_main_table() -> u8 {
    254
}

/// ENOENT.
const fn libc_enoent() -> i32 {
    2
}

/// `NeighbourAddRequest` has no protocol setter; extend it through its message.
trait WithMessage: Sized {
    fn message_mut_with(self, f: impl FnOnce(&mut NeighbourMessage)) -> Self;
}

impl WithMessage for rtnetlink::NeighbourAddRequest {
    fn message_mut_with(mut self, f: impl FnOnce(&mut NeighbourMessage)) -> Self {
        f(self.message_mut());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_with_and_without_uplink() {
        let c: ProxyNeighborConfig = serde_json::from_str(r#"{"uplink":"eth0"}"#).unwrap();
        assert_eq!(c.uplink.as_deref(), Some("eth0"));
        let c: ProxyNeighborConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.uplink, None);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(serde_json::from_str::<ProxyNeighborConfig>(r#"{"uplnk":"eth0"}"#).is_err());
    }
}
