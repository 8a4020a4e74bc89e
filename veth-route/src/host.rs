//! The host (VM) side: the host veth up and tagged, no IPv6 RAs, the kernel's
//! anti-spoofing, forwarding on, the gateway, and the `<podIP>/32 dev <hostveth>` route.
//! Runs in the plugin's own namespace.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::Handle;

use crate::config::VethRouteConf;
use crate::error::{Error, Result};
use crate::gateway::{self, Placement};
use crate::netlink::{self, Link, Route};
use crate::{antispoof, sysctl, veth};

/// The host route to a pod.
pub fn pod_route(pod_ip: Ipv4Addr, host_index: u32) -> Route {
    Route::new(Ipv4Net::new(pod_ip, 32).expect("/32"), None, host_index, RouteScope::Universe)
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

/// Wire the host end `host_name` for the pod at `pod_ip`.
pub async fn wire(h: &Handle, conf: &VethRouteConf, host_name: &str, tag: &str, pod_ip: Ipv4Addr) -> Result<(Link, Placement)> {
    let link = netlink::link_by_name(h, host_name)
        .await?
        .ok_or_else(|| Error::Command(format!("host veth {host_name} vanished right after creation")))?;
    // Router-advertised IPv6 addresses would give the host veth a second identity.
    sysctl::ensure_if_present(&format!("net/ipv6/conf/{host_name}/accept_ra"), "0")?;
    // Before the veth is up, so the pod sends nothing unchecked. rp_filter stays under eBPF
    // too; the IPv6 block goes once from_pod is attached (`antispoof::settle`).
    if conf.datapath.anti_spoof {
        antispoof::kernel_fallback(host_name, true)?;
    }
    veth::tag_and_up(h, link.index, tag).await?;
    sysctl::ensure("net/ipv4/ip_forward", "1")?;
    let placement = gateway::ensure(h, conf, &link).await?;
    let route = pod_route(pod_ip, link.index);
    if !netlink::add_route(h, &route).await? {
        // EEXIST: fine only if it is our route; otherwise another veth owns this address.
        let routes = netlink::ipv4_routes(h).await?;
        if !routes.iter().any(|r| r.dst == route.dst && r.oif == Some(link.index)) {
            return Err(Error::Command(format!(
                "host already has a route to {pod_ip} through another interface (address allocated twice?)"
            )));
        }
    }
    Ok((link, placement))
}
