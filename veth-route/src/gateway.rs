//! The pods' gateway address on the host: on a `dummy` device (as in the design note),
//! or, where the kernel has no dummy device type, on each host veth (as ptp does). Either
//! way the host owns the address, so it answers the pod's ARP and pings.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;
use rtnetlink::{Handle, LinkDummy};

use crate::config::{GatewayMode, VethRouteConf};
use crate::error::{errno, Error, Result};
use crate::netlink::{self, Link};

/// The IPv6 gateway of dual-stack pods: the same link-local on every host veth. IPv6
/// answers neighbour solicitations only for addresses of the interface they arrive on, so
/// unlike 169.254.1.1 it cannot live on `dummy0`; a link-local is per link, so every veth
/// may hold the same one. Fixed rather than the kernel's EUI-64 address, which depends on
/// the MAC and on `addr_gen_mode` (docs/dual-stack-design.md §1).
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Where the gateway address ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On the shared gateway device.
    Device(String),
    /// On the pod's host veth.
    HostVeth,
}

fn gw_net(gw: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(gw, 32).expect("/32 is valid")
}

/// Make sure the gateway device exists, is up and holds the gateway address.
/// `Ok(None)` when this kernel cannot create dummy devices.
pub async fn ensure_device(h: &Handle, conf: &VethRouteConf) -> Result<Option<Link>> {
    let name = &conf.gateway_device;
    let link = match netlink::link_by_name(h, name).await? {
        Some(l) => l,
        None => {
            match h.link().add(LinkDummy::new(name).build()).execute().await {
                Ok(()) => log::info!("created gateway device {name}"),
                // Another ADD created it concurrently.
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) if matches!(errno(&e), Some(libc::EOPNOTSUPP) | Some(524 /* ENOTSUPP */)) => return Ok(None),
                Err(e) => return Err(Error::netlink(format!("create gateway device {name}"))(e)),
            }
            netlink::link_by_name(h, name)
                .await?
                .ok_or_else(|| Error::Command(format!("gateway device {name} vanished right after creation")))?
        }
    };
    netlink::add_ipv4_addr(h, link.index, gw_net(conf.gateway)).await?;
    if !link.up {
        netlink::set_up(h, link.index, name).await?;
    }
    Ok(Some(link))
}

/// Put the gateway where `gatewayMode` says, for the pod behind `host_veth`.
pub async fn ensure(h: &Handle, conf: &VethRouteConf, host_veth: &Link) -> Result<Placement> {
    if conf.gateway_mode != GatewayMode::HostVeth {
        if ensure_device(h, conf).await?.is_some() {
            return Ok(Placement::Device(conf.gateway_device.clone()));
        }
        if conf.gateway_mode == GatewayMode::Device {
            return Err(Error::Cni(
                cni::CniError::new(
                    cni::ErrorCode::InvalidNetworkConfig,
                    format!("gatewayMode is \"device\" but this kernel cannot create dummy device {}", conf.gateway_device),
                )
                .with_details("use gatewayMode \"auto\" or \"hostVeth\", or a kernel with CONFIG_DUMMY"),
            ));
        }
        log::info!(
            "kernel has no dummy device type: gateway {} goes on host veth {} instead of {}",
            conf.gateway,
            host_veth.name,
            conf.gateway_device
        );
    }
    netlink::add_ipv4_addr(h, host_veth.index, gw_net(conf.gateway)).await?;
    Ok(Placement::HostVeth)
}

/// What CHECK finds wrong with the gateway of the pod behind `host_veth`.
pub async fn check(h: &Handle, conf: &VethRouteConf, host_veth: &Link) -> Result<Vec<String>> {
    let gw = gw_net(conf.gateway);
    let on_device = match netlink::link_by_name(h, &conf.gateway_device).await? {
        Some(dev) => netlink::ipv4_addrs(h, dev.index).await?.contains(&gw) && dev.up,
        None => false,
    };
    let on_veth = netlink::ipv4_addrs(h, host_veth.index).await?.contains(&gw);
    let ok = match conf.gateway_mode {
        GatewayMode::Auto => on_device || on_veth,
        GatewayMode::Device => on_device,
        GatewayMode::HostVeth => on_veth,
    };
    Ok(if ok {
        vec![]
    } else {
        vec![format!(
            "gateway {gw} is on neither an up device {} nor host veth {} (gatewayMode {:?})",
            conf.gateway_device, host_veth.name, conf.gateway_mode
        )]
    })
}
