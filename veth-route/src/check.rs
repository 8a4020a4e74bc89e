//! CHECK: compare the pod side, the host side, masquerading and the datapath with the
//! `prevResult`, and list every difference precisely.

use cni::{delegate, CniError, ErrorCode, Request, Verb};
use ipnet::{IpNet, Ipv4Net};

use crate::config::{self, Conf};
use crate::datapath::{self, DatapathError, FastPath, PodEndpoint};
use crate::error::{Error, Result};
use crate::names::AttachmentNames;
use crate::netlink::{self, describe, mac_string, Link, Route};
use crate::netns::{NetNs, Netlink};
use crate::pod::{self, PodPlan, PodState};
use crate::proxy_neigh::{self, ProxyNeighError};
use crate::{antispoof, antispoof6, gateway, host, masq, sysctl};
use rtnetlink::packet_route::route::RouteProtocol;

/// Run CHECK.
pub fn check(req: &Request) -> Result<()> {
    let conf = config::parse(req)?;
    config::init_logging(&conf);
    let inv = &req.inv;
    let prev = conf.prev_result.clone().ok_or_else(|| CniError::new(ErrorCode::InvalidNetworkConfig, "CHECK requires prevResult"))?;
    if let Some(ipam) = conf.ipam_type() {
        delegate::run(ipam, inv, Verb::Check, &req.config)?;
    }

    // Our interface in the result, and its IPv4 address.
    let pod_idx = prev.interfaces.iter().position(|i| i.name == inv.ifname && i.sandbox.is_some());
    let Some(pod_idx) = pod_idx else {
        return Err(Error::Mismatch(vec![format!("prevResult has no interface {} with a sandbox", inv.ifname)]));
    };
    let addr = prev.ips.iter().find_map(|ip| match (ip.address, ip.interface) {
        (IpNet::V4(n), Some(i)) if i == pod_idx => Some(n),
        (IpNet::V4(n), None) => Some(n),
        _ => None,
    });
    let Some(addr) = addr else {
        return Err(Error::Mismatch(vec![format!("prevResult has no IPv4 address for {}", inv.ifname)]));
    };
    let addr6 = prev.ips.iter().find_map(|ip| match (ip.address, ip.interface) {
        (IpNet::V6(n), Some(i)) if i == pod_idx => Some(n.addr()),
        (IpNet::V6(n), None) => Some(n.addr()),
        _ => None,
    });
    let extra = prev.routes.iter().filter_map(|r| match r.dst {
        IpNet::V4(n) => Some(n),
        IpNet::V6(_) => None,
    });
    let extra6 = prev.routes.iter().filter_map(|r| match r.dst {
        IpNet::V6(n) => Some(n),
        IpNet::V4(_) => None,
    });
    let plan = PodPlan::new(&inv.ifname, addr, conf.plugin.gateway, extra).with_ipv6(addr6, extra6);

    let netns = inv.netns.as_deref().ok_or_else(|| CniError::new(ErrorCode::InvalidEnvironment, "CNI_NETNS is required for CHECK"))?;
    let pod_ns = NetNs::open(netns)?;
    let nl = Netlink::open(Some(&pod_ns))?;
    let names = AttachmentNames::new(&conf.name, &inv.container_id, &inv.ifname);
    let ifname = inv.ifname.as_str();
    let ipv6 = plan.v6.is_some();
    let state = nl.pod(|h| async move { pod::inspect(&h, ifname, ipv6).await })?;
    let mut diffs = Vec::new();
    let Some(state) = state else {
        return Err(Error::Mismatch(vec![format!("interface {} does not exist in netns {}", inv.ifname, netns.display())]));
    };
    diffs.extend(pod_diffs(&plan, &state, prev.interfaces[pod_idx].mac.as_deref()));

    let (host_diffs, host_link) = {
        let (conf, state, names) = (&conf, &state, &names);
        nl.host(|h| async move { host_diffs(&h, conf, names, addr, addr6, state).await })?
    };
    diffs.extend(host_diffs);
    if let Some(link) = &host_link {
        diffs.extend(pod::gateway_neigh_diffs(&plan.clone().with_gateway_mac(link.mac), &state));
    }

    if let Some(pn) = &conf.plugin.proxy_neighbor {
        for ip in std::iter::once(std::net::IpAddr::V4(addr.addr())).chain(addr6.map(std::net::IpAddr::V6)) {
            match nl.block_on(async move { Ok(proxy_neigh::check(pn, ip).await) })? {
                Ok(()) => {}
                Err(e @ ProxyNeighError::Missing { .. }) => diffs.push(e.to_string()),
                Err(e) => return Err(e.into()),
            }
        }
    }
    if conf.plugin.ip_masq {
        diffs.extend(masq::check(&names.masq_chain, addr.addr().into())?);
        if let Some(ip6) = addr6 {
            diffs.extend(masq::check(&names.masq_chain, ip6.into())?);
        }
    }
    if let (Some(host_link), Some(pod_mac)) = (host_link, state.link.mac) {
        let ep = PodEndpoint {
            pod_ip: addr.addr(),
            pod_ip6: addr6,
            pod_mac,
            host_ifindex: host_link.index,
            host_ifname: host_link.name.clone(),
            host_mac: host_link.mac.unwrap_or_default(),
        };
        match datapath::check(&conf.plugin.datapath, &ep) {
            Ok(()) => {}
            Err(DatapathError::Mismatch(m)) => diffs.push(m),
            Err(e) => return Err(e.into()),
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Error::Mismatch(diffs))
    }
}

fn same(a: &Route, b: &Route) -> bool {
    a.dst == b.dst && a.gw == b.gw && a.oif == b.oif && a.scope == b.scope && a.priority == b.priority
}

fn pod_diffs(plan: &PodPlan, state: &PodState, mac: Option<&str>) -> Vec<String> {
    let mut d = Vec::new();
    let ifname = &plan.ifname;
    if let (Some(want), Some(have)) = (mac, state.link.mac) {
        if !want.eq_ignore_ascii_case(&mac_string(&have)) {
            d.push(format!("pod {ifname} MAC is {} but the result says {want}", mac_string(&have)));
        }
    }
    if !state.link.up {
        d.push(format!("pod {ifname} is down"));
    }
    let want_addrs = std::iter::once(IpNet::V4(plan.addr)).chain(plan.v6.iter().map(|v6| IpNet::V6(v6.net())));
    for want in want_addrs {
        if !state.addrs.contains(&want) {
            let same_family: Vec<IpNet> = state.addrs.iter().copied().filter(|a| a.addr().is_ipv4() == want.addr().is_ipv4()).collect();
            d.push(format!("pod {ifname} lacks address {want} (has: {})", list(&same_family)));
        }
    }
    let want = plan.routes(state.link.index);
    // The kernel's own IPv6 routes (the link-local prefix) come with IPv6 on the link.
    let ours = |r: &&Route| r.oif == Some(state.link.index) && !(r.dst.addr().is_ipv6() && r.protocol == RouteProtocol::Kernel);
    let have: Vec<&Route> = state.routes.iter().filter(ours).collect();
    let show = |r: &Route| describe(r).replace(&format!("#{}", state.link.index), ifname);
    for w in &want {
        if !have.iter().any(|h| same(h, w)) {
            d.push(format!("pod route `{}` is missing", show(w)));
        }
    }
    for h in have {
        if !want.iter().any(|w| same(h, w)) {
            d.push(format!("pod has unexpected route `{}`", show(h)));
        }
    }
    d
}

async fn host_diffs(
    h: &rtnetlink::Handle,
    conf: &Conf,
    names: &AttachmentNames,
    addr: Ipv4Net,
    addr6: Option<std::net::Ipv6Addr>,
    pod: &PodState,
) -> Result<(Vec<String>, Option<Link>)> {
    let host_name = names.host_veth.as_str();
    let mut d = Vec::new();
    let Some(link) = netlink::link_by_name(h, host_name).await? else {
        d.push(format!("host veth {host_name} does not exist"));
        return Ok((d, None));
    };
    if link.peer_index != Some(pod.link.index) || pod.link.peer_index != Some(link.index) {
        d.push(format!("host veth {host_name} is not the peer of pod {}", pod.link.name));
    }
    if !link.up {
        d.push(format!("host veth {host_name} is down"));
    }
    let want = host::pod_route(addr.addr(), link.index);
    let routes = netlink::ipv4_routes(h).await?;
    if !routes.iter().any(|r| same(r, &want)) {
        let other: Vec<String> = routes.iter().filter(|r| r.dst == want.dst).map(describe).collect();
        d.push(format!(
            "host route `{} dev {host_name}` is missing{}",
            addr.addr(),
            if other.is_empty() { String::new() } else { format!(" (found: {})", other.join(", ")) }
        ));
    }
    if let Some(ip6) = addr6 {
        let want = host::pod_route6(ip6, link.index);
        if !netlink::ipv6_routes(h).await?.iter().any(|r| same(r, &want)) {
            d.push(format!("host route `{ip6} dev {host_name}` is missing"));
        }
        if !netlink::addrs(h, link.index).await?.contains(&IpNet::V6(host::gateway6_net())) {
            d.push(format!("host veth {host_name} lacks the IPv6 gateway address {}", host::gateway6_net()));
        }
        if sysctl::read("net/ipv6/conf/all/forwarding")?.as_deref() != Some("1") {
            d.push("IPv6 forwarding is off on the host".to_string());
        }
    }
    d.extend(gateway::check(h, &conf.plugin, &link).await?);
    if conf.plugin.datapath.anti_spoof {
        // With fastPath off from_pod is surely not there, so the kernel must block an
        // IPv4-only pod's IPv6. Otherwise it may be (datapath::check verifies that):
        // either state can be right. A dual-stack pod's IPv6 is the rpfilter rule's.
        let ipv6_block = conf.plugin.datapath.fast_path == FastPath::Off && addr6.is_none();
        d.extend(antispoof::check(host_name, ipv6_block)?);
        if addr6.is_some() {
            d.extend(antispoof6::check(host_name, &names.tag)?);
        }
    }
    if sysctl::read("net/ipv4/ip_forward")?.as_deref() != Some("1") {
        d.push("IPv4 forwarding is off on the host".to_string());
    }
    Ok((d, Some(link)))
}

fn list(addrs: &[IpNet]) -> String {
    if addrs.is_empty() {
        "none".into()
    } else {
        addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
    }
}
