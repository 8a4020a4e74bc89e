//! DEL: idempotent, needs no state and no netns. The host veth name, masquerade chain
//! and IPAM identity all derive from the container ID, ifname and network name.

use std::net::Ipv4Addr;

use cni::{delegate, Request, Verb};

use crate::config;
use crate::datapath;
use crate::error::{Error, Result};
use crate::names::AttachmentNames;
use crate::netlink;
use crate::netns::Netlink;
use crate::{masq, proxy_neigh};

/// Run DEL: every step runs even if an earlier one failed; the first error is returned.
pub fn del(req: &Request) -> Result<()> {
    let conf = config::parse(req)?;
    config::init_logging(&conf);
    let inv = &req.inv;
    let names = AttachmentNames::new(&conf.name, &inv.container_id, &inv.ifname);
    let host_name = names.host_veth.as_str();
    log::info!("DEL {} {} host veth {host_name}", inv.container_id, inv.ifname);
    let nl = Netlink::open(None)?;
    let mut first: Option<Error> = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            log::error!("DEL {}: {e}", inv.container_id);
            first.get_or_insert(e);
        }
    };

    // The pod IP for the datapath: the host route through the veth (the kernel's truth),
    // else prevResult.
    let prev_ip = conf.prev_result.as_ref().and_then(|r| {
        r.first_ipv4().and_then(|ip| match ip.address.addr() {
            std::net::IpAddr::V4(a) => Some(a),
            _ => None,
        })
    });
    let routed_ip = nl.host(|h| async move { routed_pod_ip(&h, host_name).await }).unwrap_or(None);
    let pod_ip = routed_ip.or(prev_ip);
    note(datapath::detach(&conf.plugin.datapath, pod_ip, host_name).map_err(Error::from));

    // Deleting the host end also removes the pod end (netns or not) and the host route.
    note(nl.host(|h| async move { netlink::delete_link(&h, host_name).await.map(drop) }));

    if let Some(pn) = &conf.plugin.proxy_neighbor {
        // Without a known address, drop every entry of ours whose pod route is gone.
        note(nl.block_on(async move {
            match pod_ip {
                Some(ip) => proxy_neigh::remove(pn, ip).await.map_err(Into::into),
                None => proxy_neigh::gc(pn).await.map(drop).map_err(Into::into),
            }
        }));
    }
    if conf.plugin.ip_masq {
        note(masq::teardown(&names.masq_chain));
    }
    if let Some(ipam) = conf.ipam_type() {
        note(delegate::run(ipam, inv, Verb::Del, &req.config).map_err(Error::from));
    }
    first.map_or(Ok(()), Err)
}

/// The /32 routed through `host_veth`, if the veth and its route still exist.
async fn routed_pod_ip(h: &rtnetlink::Handle, host_veth: &str) -> Result<Option<Ipv4Addr>> {
    let Some(link) = netlink::link_by_name(h, host_veth).await? else { return Ok(None) };
    let routes = netlink::ipv4_routes(h).await?;
    Ok(routes.iter().find(|r| r.oif == Some(link.index) && r.dst.prefix_len() == 32).map(|r| r.dst.addr()))
}
