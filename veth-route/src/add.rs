//! ADD: veth pair, datapath attach (in the background), IPAM, host side, pod side,
//! masquerade, datapath endpoint; on any failure everything done so far is undone in
//! reverse order.

use std::net::{IpAddr, Ipv6Addr};

use cni::{delegate, CniError, CniResult, ErrorCode, Interface, IpConfig, Request, Route, Verb};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::{self, Conf};
use crate::datapath::{self, Attached, PodEndpoint};
use crate::error::{Result, CODE_IPAM_RESULT};
use crate::gateway::GATEWAY6;
use crate::names::AttachmentNames;
use crate::netlink::{self, mac_string};
use crate::netns::{NetNs, Netlink};
use crate::pod::{self, PodPlan};
use crate::timings::Stages;
use crate::{antispoof, antispoof6, host, masq, proxy_neigh, veth};

/// Run ADD.
pub fn add(req: &Request) -> Result<CniResult> {
    let conf = config::parse(req)?;
    config::init_logging(&conf);
    let inv = &req.inv;
    let mut stages = Stages::start(format!("ADD {}", inv.container_id));
    let netns_path = inv.netns.as_deref().ok_or_else(|| CniError::new(ErrorCode::InvalidEnvironment, "CNI_NETNS is required for ADD"))?;
    let pod_ns = NetNs::open(netns_path)?;
    let names = AttachmentNames::new(&conf.name, &inv.container_id, &inv.ifname);
    log::info!("ADD {} {} netns {} host veth {}", inv.container_id, inv.ifname, netns_path.display(), names.host_veth);
    let nl = Netlink::open(Some(&pod_ns))?;

    // Refuse early, before IPAM allocates anything.
    let ifname = inv.ifname.as_str();
    if nl.pod(|h| async move { pod::exists(&h, ifname).await })? {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_IFNAME {}: interface already exists in netns {}", inv.ifname, netns_path.display()),
        )
        .into());
    }
    let host_veth = names.host_veth.as_str();
    if nl.host(|h| async move { netlink::link_by_name(&h, host_veth).await })?.is_some() {
        return Err(CniError::new(
            ErrorCode::Other(crate::error::CODE_KERNEL),
            format!("host veth {host_veth} already exists: attachment {}/{} is already set up", inv.container_id, inv.ifname),
        )
        .with_details("DEL it first")
        .into());
    }

    // Without IPAM the addresses come from prevResult: refuse an unusable one now.
    if conf.ipam_type().is_none() {
        let prev = conf.prev_result.as_ref().ok_or_else(no_addresses)?;
        pick_addresses(&conf, prev)?;
    }

    // `required` must not create the gateway, the veth or an address only to find that the
    // programs cannot load here.
    datapath::status(&conf.plugin.datapath)?;
    stages.end("checks");

    let mut undo = Undo {
        conf: &conf,
        req,
        nl: &nl,
        names: &names,
        ipam: false,
        host_veth: false,
        proxy_neigh: Vec::new(),
        masq_chain: false,
        antispoof6: false,
        datapath: false,
    };
    let outcome = setup(&conf, req, &pod_ns, &nl, &names, &mut undo, &mut stages);
    if let Err(e) = &outcome {
        log::warn!("ADD {} failed, rolling back: {e}", inv.container_id);
        undo.run();
    }
    outcome
}

fn setup(
    conf: &Conf,
    req: &Request,
    pod_ns: &NetNs,
    nl: &Netlink,
    names: &AttachmentNames,
    undo: &mut Undo,
    stages: &mut Stages,
) -> Result<CniResult> {
    let inv = &req.inv;
    let (name, tag) = (names.host_veth.as_str(), names.tag.as_str());

    // The veth needs no address, so it comes first: the TCX attach waits for an RCU grace
    // period and runs on a thread while IPAM allocates and the pod is wired.
    let mtu = match conf.plugin.mtu {
        Some(m) => Some(m),
        None => nl.host(|h| async move { host::uplink_mtu(&h).await })?.map(|(uplink, m)| {
            log::info!("pod MTU {m}: the uplink {uplink}'s (no mtu configured)");
            m
        }),
    };
    nl.host(|h| async move { veth::create_pair(&h, name, &inv.ifname, mtu, pod_ns).await })?;
    undo.host_veth = true;
    undo.datapath = true;
    let datapath = datapath::attach_early(&conf.plugin.datapath, name);
    stages.end("veth");

    let ipam = addresses(conf, req, undo)?;
    let picked = pick_addresses(conf, &ipam)?;
    let (pod_addr, pod_ip6) = (picked.v4, picked.v6);
    let gw = conf.plugin.gateway;
    stages.end("ipam");

    // Its first request may wait for the RTNL lock, held by the attach thread through the
    // TCX grace periods.
    undo.antispoof6 = pod_ip6.is_some() && conf.plugin.datapath.anti_spoof;
    let (host_link, placement) = nl.host(|h| async move { host::wire(&h, &conf.plugin, name, tag, pod_addr.addr(), pod_ip6).await })?;
    log::info!("gateway {gw} placement: {placement:?}");
    stages.end("host");

    if let Some(pn) = &conf.plugin.proxy_neighbor {
        for ip in std::iter::once(IpAddr::V4(pod_addr.addr())).chain(pod_ip6.map(IpAddr::V6)) {
            undo.proxy_neigh.push(ip);
            nl.block_on(async move { proxy_neigh::add(pn, ip).await.map_err(Into::into) })?;
        }
    }

    let plan = PodPlan::new(&inv.ifname, pod_addr, gw, picked.routes4).with_gateway_mac(host_link.mac).with_ipv6(pod_ip6, picked.routes6);
    let plan_ref = &plan;
    let pod_if = nl.pod(|h| async move { pod::configure(&h, pod_ns, plan_ref).await })?;
    stages.end("pod");

    if conf.plugin.ip_masq {
        undo.masq_chain = true;
        masq::setup(&names.masq_chain, tag, IpNet::V4(pod_addr))?;
        if let Some(net6) = picked.net6 {
            masq::setup(&names.masq_chain, tag, IpNet::V6(net6))?;
        }
        stages.end("masq");
    }
    let ep = PodEndpoint {
        pod_ip: pod_addr.addr(),
        pod_ip6,
        pod_mac: pod_if.mac,
        host_ifindex: host_link.index,
        host_ifname: host_link.name.clone(),
        host_mac: host_link.mac.unwrap_or_default(),
    };
    let attached = datapath.finish(&ep)?;
    stages.end("datapath");
    match &attached {
        Attached::Fast => log::info!("fast path attached for {}", pod_addr.addr()),
        Attached::KernelOnly { reason } => log::info!("kernel path only for {}: {reason}", pod_addr.addr()),
    }
    // Once attached, from_pod polices both IPv4 sources and IPv6 (docs/fastpath.md).
    let fast = attached == Attached::Fast;
    antispoof::settle(&conf.plugin.datapath, pod_addr.addr(), name, antispoof::EbpfGuard { ipv4: fast, ipv6: fast }, pod_ip6.is_some());
    stages.end("antispoof");

    let ours = CniResult {
        interfaces: vec![
            Interface { name: host_link.name.clone(), mac: host_link.mac.as_ref().map(mac_string), mtu: host_link.mtu, sandbox: None },
            Interface {
                name: inv.ifname.clone(),
                mac: Some(mac_string(&pod_if.mac)),
                mtu: pod_if.mtu,
                sandbox: inv.netns.as_ref().map(|p| p.display().to_string()),
            },
        ],
        // IPv4 first: runtimes take the first address as the pod's primary IP.
        ips: std::iter::once(IpConfig { address: IpNet::V4(pod_addr), gateway: Some(gw.into()), interface: Some(1) })
            .chain(plan.v6.iter().map(|v6| IpConfig { address: IpNet::V6(v6.net()), gateway: Some(GATEWAY6.into()), interface: Some(1) }))
            .collect(),
        routes: std::iter::once(Ipv4Net::default())
            .chain(plan.extra.iter().copied())
            .map(|dst| Route::new(IpNet::V4(dst), Some(gw.into())))
            .chain(
                plan.v6
                    .iter()
                    .flat_map(|v6| std::iter::once(Ipv6Net::default()).chain(v6.extra.iter().copied()))
                    .map(|dst| Route::new(IpNet::V6(dst), Some(GATEWAY6.into()))),
            )
            .collect(),
        dns: if ipam.dns == cni::Dns::default() { conf.dns.clone().unwrap_or_default() } else { ipam.dns.clone() },
    };
    let result = match &conf.prev_result {
        Some(prev) => merge(prev.clone(), ours),
        None => ours,
    };
    // Nothing after this point can fail: from here on the attachment is the runtime's.
    undo.disarm();
    Ok(result)
}

/// In a chain, pass the previous result through with our interfaces, address and routes
/// added (the address replaces the same one from `prevResult`, now pointing at our pod
/// interface).
fn merge(mut prev: CniResult, ours: CniResult) -> CniResult {
    let offset = prev.interfaces.len();
    prev.interfaces.extend(ours.interfaces);
    for mut ip in ours.ips {
        ip.interface = ip.interface.map(|i| i + offset);
        prev.ips.retain(|p| p.address != ip.address);
        prev.ips.push(ip);
    }
    for r in ours.routes {
        // What the pod really has for a destination is our route.
        prev.routes.retain(|p| p.dst != r.dst);
        prev.routes.push(r);
    }
    if prev.dns == cni::Dns::default() {
        prev.dns = ours.dns;
    }
    prev
}

/// The addresses: from the IPAM plugin, or from `prevResult` when the config has no IPAM.
fn addresses(conf: &Conf, req: &Request, undo: &mut Undo) -> Result<CniResult> {
    match conf.ipam_type() {
        Some(ipam) => {
            // Mark first: a failed ADD may still have allocated, and IPAM DEL is idempotent.
            undo.ipam = true;
            Ok(delegate::add(ipam, &req.inv, &req.config)?)
        }
        None => Ok(conf.prev_result.clone().ok_or_else(no_addresses)?),
    }
}

fn no_addresses() -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, "no \"ipam\" section and no prevResult to take addresses from")
}

/// The addresses the pod gets and the IPAM routes to install via the gateways.
struct Picked {
    v4: Ipv4Net,
    routes4: Vec<Ipv4Net>,
    /// A dual-stack pod's IPv6 address.
    v6: Option<Ipv6Addr>,
    /// The same with the IPAM's prefix (what `ipMasq` leaves unmasqueraded).
    net6: Option<Ipv6Net>,
    routes6: Vec<Ipv6Net>,
}

/// The pod's addresses: exactly one IPv4 address, and at most one IPv6 address.
fn pick_addresses(conf: &Conf, ipam: &CniResult) -> Result<Picked> {
    let (mut v4, mut v6): (Vec<Ipv4Net>, Vec<Ipv6Net>) = (Vec::new(), Vec::new());
    for ip in &ipam.ips {
        match ip.address {
            IpNet::V4(n) => v4.push(n),
            IpNet::V6(n) => v6.push(n),
        }
    }
    let Some(addr) = v4.first().copied() else {
        return Err(CniError::new(ErrorCode::Other(CODE_IPAM_RESULT), format!("IPAM plugin {} returned no IPv4 address", ipam_name(conf)))
            .with_details(format!("{} address(es) returned; veth-route needs one IPv4 address", ipam.ips.len()))
            .into());
    };
    if addr.addr() == conf.plugin.gateway {
        return Err(CniError::new(ErrorCode::Other(CODE_IPAM_RESULT), format!("IPAM returned the gateway address {}", addr.addr())).into());
    }
    if v6.len() > 1 {
        return Err(CniError::new(
            ErrorCode::Other(CODE_IPAM_RESULT),
            format!("IPAM plugin {} returned {} IPv6 addresses; a pod gets at most one", ipam_name(conf), v6.len()),
        )
        .with_details(v6.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "))
        .into());
    }
    let net6 = v6.first().copied();
    let v6 = net6.map(|n| n.addr());
    let (mut routes4, mut routes6) = (Vec::new(), Vec::new());
    for r in &ipam.routes {
        match r.dst {
            IpNet::V4(n) => routes4.push(n),
            // Only for a dual-stack pod: without an address they could not be used.
            IpNet::V6(n) if v6.is_some() => routes6.push(n),
            IpNet::V6(_) => {}
        }
    }
    Ok(Picked { v4: addr, routes4, v6, net6, routes6 })
}

/// The IPAM plugin's type, or "(prevResult)" when the addresses come from there.
fn ipam_name(conf: &Conf) -> &str {
    conf.ipam_type().unwrap_or("(prevResult)")
}

/// What ADD has done so far, undone in reverse on failure.
struct Undo<'a> {
    conf: &'a Conf,
    req: &'a Request,
    nl: &'a Netlink,
    names: &'a AttachmentNames,
    ipam: bool,
    host_veth: bool,
    proxy_neigh: Vec<IpAddr>,
    masq_chain: bool,
    antispoof6: bool,
    datapath: bool,
}

impl Undo<'_> {
    fn disarm(&mut self) {
        self.ipam = false;
        self.host_veth = false;
        self.proxy_neigh.clear();
        self.masq_chain = false;
        self.antispoof6 = false;
        self.datapath = false;
    }

    fn run(&mut self) {
        let host = self.names.host_veth.as_str();
        if std::mem::take(&mut self.datapath) {
            // The endpoint, if inserted, is keyed to the host veth, which still exists here.
            if let Err(e) = datapath::detach(&self.conf.plugin.datapath, None, host) {
                log::error!("rollback: datapath detach: {e}");
            }
        }
        if std::mem::take(&mut self.masq_chain) {
            if let Err(e) = masq::teardown(&self.names.masq_chain, true) {
                log::error!("rollback: remove masquerade chain {}: {e}", self.names.masq_chain);
            }
        }
        for ip in std::mem::take(&mut self.proxy_neigh) {
            let Some(pn) = &self.conf.plugin.proxy_neighbor else { break };
            if let Err(e) = self.nl.block_on(async move { proxy_neigh::remove(pn, ip).await.map_err(Into::into) }) {
                log::error!("rollback: remove proxy neighbour {ip}: {e}");
            }
        }
        if std::mem::take(&mut self.antispoof6) {
            if let Err(e) = antispoof6::unguard(&self.names.tag) {
                log::error!("rollback: remove the IPv6 rpfilter rule of {host}: {e}");
            }
        }
        if std::mem::take(&mut self.host_veth) {
            // Deleting one end removes the pod end, its addresses and routes, and the host route.
            if let Err(e) = self.nl.host(|h| async move { netlink::delete_link(&h, host).await }) {
                log::error!("rollback: delete host veth: {e}");
            }
        }
        if std::mem::take(&mut self.ipam) {
            if let Some(ipam) = self.conf.ipam_type() {
                if let Err(e) = delegate::run(ipam, &self.req.inv, Verb::Del, &self.req.config) {
                    log::error!("rollback: IPAM DEL: {e}");
                }
            }
        }
    }
}
