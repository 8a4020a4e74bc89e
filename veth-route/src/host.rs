//! The host (VM) side: the host veth up and tagged, no IPv6 RAs, the kernel's
//! anti-spoofing, forwarding on, the gateway, and the `<podIP>/32 dev <hostveth>` route;
//! for a dual-stack pod also `fe80::1` on the veth, IPv6 forwarding and the
//! `<podIPv6>/128 dev <hostveth>` route. Runs in the plugin's own namespace.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::Handle;

use crate::config::VethRouteConf;
use crate::error::{Error, Result};
use crate::gateway::{self, Placement, GATEWAY6};
use crate::netlink::{self, Link, Route};
use crate::{antispoof, antispoof6, sysctl, veth};

/// The host route to a pod.
pub fn pod_route(pod_ip: Ipv4Addr, host_index: u32) -> Route {
    Route::new(Ipv4Net::new(pod_ip, 32).expect("/32"), None, host_index, RouteScope::Universe)
}

/// The host route to a dual-stack pod's IPv6 address (the kernel gives it metric 1024).
pub fn pod_route6(pod_ip: Ipv6Addr, host_index: u32) -> Route {
    Route { priority: 1024, ..Route::new(Ipv6Net::new(pod_ip, 128).expect("/128"), None, host_index, RouteScope::Universe) }
}

/// The gateway address on each dual-stack pod's host veth.
pub fn gateway6_net() -> Ipv6Net {
    Ipv6Net::new(GATEWAY6, 64).expect("/64 is valid")
}

/// The MTU pods get when the config sets none: the uplink's, i.e. the interface of the
/// VM's IPv4 default route. OpenStack hands the VM its Neutron network's MTU (DHCP option
/// 26, or config drive), so this is the network's MTU: on a VXLAN network 1450, where the
/// kernel's default of 1500 would black-hole full-size packets leaving the VM. `None`
/// without a default route: the kernel's default then.
pub async fn uplink_mtu(h: &Handle) -> Result<Option<(String, u32)>> {
    let routes = netlink::ipv4_routes(h).await?;
    let Some(oif) = routes.iter().filter(|r| r.dst.prefix_len() == 0).min_by_key(|r| r.priority).and_then(|r| r.oif) else {
        return Ok(None);
    };
    Ok(netlink::link_by_index(h, oif).await?.and_then(|l| l.mtu.map(|m| (l.name, m))))
}

/// Wire the host end `host_name` for the pod at `pod_ip` (and `pod_ip6`, dual-stack).
pub async fn wire(
    h: &Handle,
    conf: &VethRouteConf,
    host_name: &str,
    tag: &str,
    pod_ip: Ipv4Addr,
    pod_ip6: Option<Ipv6Addr>,
) -> Result<(Link, Placement)> {
    let link = netlink::link_by_name(h, host_name)
        .await?
        .ok_or_else(|| Error::Command(format!("host veth {host_name} vanished right after creation")))?;
    // Router-advertised IPv6 addresses would give the host veth a second identity.
    sysctl::ensure_if_present(&format!("net/ipv6/conf/{host_name}/accept_ra"), "0")?;
    // Before the veth is up, so the pod sends nothing unchecked. rp_filter stays under eBPF
    // too; the IPv6 block goes once from_pod is attached (`antispoof::settle`).
    // An IPv4-only pod's veth takes no IPv6 at all; a dual-stack pod's IPv6 sources are
    // checked by the rpfilter rule instead (`antispoof6`).
    if conf.datapath.anti_spoof {
        antispoof::kernel_fallback(host_name, pod_ip6.is_none())?;
        if pod_ip6.is_some() {
            antispoof6::guard(host_name, tag)?;
        }
    }
    if pod_ip6.is_some() {
        veth_ipv6_sysctls(host_name)?;
    }
    veth::tag_and_up(h, link.index, tag).await?;
    sysctl::ensure("net/ipv4/ip_forward", "1")?;
    let placement = gateway::ensure(h, conf, &link).await?;
    add_pod_route(h, &pod_route(pod_ip, link.index), &link).await?;
    if let Some(ip6) = pod_ip6 {
        netlink::add_ipv6_addr_nodad(h, link.index, gateway6_net()).await?;
        ensure_ipv6_forwarding(h).await?;
        add_pod_route(h, &pod_route6(ip6, link.index), &link).await?;
    }
    Ok((link, placement))
}

/// Add the host route to a pod. EEXIST is fine only if it is this veth's route: otherwise
/// another veth owns the address.
async fn add_pod_route(h: &Handle, route: &Route, link: &Link) -> Result<()> {
    if netlink::add_route(h, route).await? {
        return Ok(());
    }
    let routes = match route.dst {
        IpNet::V4(_) => netlink::ipv4_routes(h).await?,
        IpNet::V6(_) => netlink::ipv6_routes(h).await?,
    };
    if routes.iter().any(|r| r.dst == route.dst && r.oif == Some(link.index)) {
        return Ok(());
    }
    Err(Error::Command(format!("host already has a route to {} through another interface (address allocated twice?)", route.dst.addr())))
}

/// A dual-stack pod's host veth, before it is up: IPv6 on, no duplicate address detection
/// (fe80::1 is usable at once, and the host can solicit the pod from it), and no address
/// of the kernel's own making (`addr_gen_mode=1`): fe80::1 is its only link-local.
fn veth_ipv6_sysctls(host_name: &str) -> Result<()> {
    sysctl::ensure_ipv6_conf(host_name, &[("accept_dad", "0"), ("addr_gen_mode", "1"), ("disable_ipv6", "0")])
}

/// IPv6 forwarding on, without losing the VM's IPv6 default route. Every write of 1 to a
/// `forwarding` key purges the default routes learned from router advertisements on
/// interfaces with `accept_ra` below 2, and with forwarding on `accept_ra=1` ignores RAs
/// from then on; on a Neutron IPv6 subnet the RA route is the VM's only default route. So
/// the interfaces holding one get `accept_ra=2` first, and `all.forwarding` is written
/// only when it is not 1 already (docs/dual-stack-design.md §3).
async fn ensure_ipv6_forwarding(h: &Handle) -> Result<()> {
    if sysctl::read("net/ipv6/conf/all/forwarding")?.as_deref() == Some("1") {
        return Ok(());
    }
    for r in netlink::ipv6_routes(h).await?.iter().filter(|r| r.dst.prefix_len() == 0 && r.protocol == RouteProtocol::Ra) {
        let Some(link) = (match r.oif {
            Some(i) => netlink::link_by_index(h, i).await?,
            None => None,
        }) else {
            continue;
        };
        let key = format!("net/ipv6/conf/{}/accept_ra", link.name);
        if sysctl::read(&key)?.as_deref() == Some("1") {
            log::info!(
                "accept_ra=2 on {}: its IPv6 default route comes from router advertisements, which forwarding would ignore",
                link.name
            );
            sysctl::ensure(&key, "2")?;
        }
    }
    sysctl::ensure("net/ipv6/conf/all/forwarding", "1")
}
