//! DEL: idempotent, needs no state and no netns. The host veth name, masquerade chain
//! and IPAM identity all derive from the container ID, ifname and network name.

use cni::{delegate, Request, Verb};

use crate::config::{self, Conf};
use crate::datapath;
use crate::error::{Error, Result};
use crate::names::AttachmentNames;
use crate::netlink::{self, Route};
use crate::netns::Netlink;
use crate::timings::Stages;
use crate::{antispoof6, masq, proxy_neigh};

/// Run DEL: every step runs even if an earlier one failed; the first error is returned.
pub fn del(req: &Request) -> Result<()> {
    let conf = config::parse(req)?;
    config::init_logging(&conf);
    let inv = &req.inv;
    let mut stages = Stages::start(format!("DEL {}", inv.container_id));
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
    let had_ipv6 = may_have_had_ipv6(&conf);
    let (route, route6) = nl.host(|h| async move { pod_routes(&h, host_name, had_ipv6).await }).unwrap_or((None, None));
    let pod_ip = route
        .as_ref()
        .and_then(|r| match r.dst {
            ipnet::IpNet::V4(n) => Some(n.addr()),
            ipnet::IpNet::V6(_) => None,
        })
        .or(prev_ip);
    stages.end("lookup");
    note(datapath::detach(&conf.plugin.datapath, pod_ip, host_name).map_err(Error::from));
    stages.end("datapath");

    // The address is free for another pod once IPAM releases it below, which may be before
    // the veth is gone: so first remove what would catch that pod's traffic or undo its
    // setup (the endpoint is out of the map already), as the veth's deletion would.
    for r in route.iter().chain(route6.iter()) {
        note(nl.host(|h| async move { netlink::del_route(&h, r).await.map(drop) }));
    }
    if let Some(pn) = &conf.plugin.proxy_neighbor {
        // Without a known address, drop every entry of ours whose pod route is gone.
        note(nl.block_on(async move {
            let Some(ip) = pod_ip else { return proxy_neigh::gc(pn).await.map(drop).map_err(Into::into) };
            let ip6 = route6.as_ref().map(|r| r.dst.addr());
            for ip in std::iter::once(std::net::IpAddr::V4(ip)).chain(ip6) {
                proxy_neigh::remove(pn, ip).await?;
            }
            Ok(())
        }));
    }
    stages.end("route");

    // Deleting the host end also removes the pod end (netns or not). It waits for RCU grace
    // periods holding the RTNL lock (two more with TCX links, which the kernel detaches), so
    // the masquerade chain and IPAM, which do not depend on it, go meanwhile; the
    // reference plugins release the address before deleting the interface too.
    let (deleted, rest) = std::thread::scope(|s| {
        let rest = s.spawn(|| release(&conf, req, &names, had_ipv6));
        let deleted = nl.host(|h| async move { netlink::delete_link(&h, host_name).await.map(drop) });
        let rest = rest.join().unwrap_or_else(|_| vec![Err(Error::Command("DEL worker thread panicked".into()))]);
        (deleted, rest)
    });
    note(deleted);
    rest.into_iter().for_each(&mut note);
    stages.end("veth+ipam");
    first.map_or(Ok(()), Err)
}

/// Whether the pod may have had an IPv6 address: a prevResult without one says it had
/// none (ADD lists every address it configures); without prevResult it may have.
fn may_have_had_ipv6(conf: &Conf) -> bool {
    conf.prev_result.as_ref().is_none_or(|r| r.ips.iter().any(|ip| ip.address.addr().is_ipv6()))
}

/// Remove the masquerade chains and IPv6 rules, and release the address: the results in
/// that order.
fn release(conf: &Conf, req: &Request, names: &AttachmentNames, had_ipv6: bool) -> Vec<Result<()>> {
    let mut results = Vec::new();
    if conf.plugin.ip_masq {
        results.push(masq::teardown(&names.masq_chain, had_ipv6));
    }
    // The rule names the veth, so it outlives it.
    if conf.plugin.datapath.anti_spoof && had_ipv6 {
        results.push(antispoof6::unguard(&names.tag));
    }
    if let Some(ipam) = conf.ipam_type() {
        results.push(delegate::run(ipam, &req.inv, Verb::Del, &req.config).map_err(Error::from));
    }
    results
}

/// The /32 and, when the pod may have had IPv6, the /128 routed through `host_veth`, if the
/// veth and its routes still exist.
async fn pod_routes(h: &rtnetlink::Handle, host_veth: &str, ipv6: bool) -> Result<(Option<Route>, Option<Route>)> {
    let Some(link) = netlink::link_by_name(h, host_veth).await? else { return Ok((None, None)) };
    let through_veth = |routes: Vec<Route>, len: u8| routes.into_iter().find(|r| r.oif == Some(link.index) && r.dst.prefix_len() == len);
    let route = through_veth(netlink::ipv4_routes(h).await?, 32);
    // Best effort, as the IPv4 lookup: the veth's deletion removes the route anyway.
    let route6 = if ipv6 { netlink::ipv6_routes(h).await.ok().and_then(|r| through_veth(r, 128)) } else { None };
    Ok((route, route6))
}
