//! The VM's own Neutron port: finding it, marking it managed, and changing its fixed IPs
//! without ever sending a stale list.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use openstack::{FixedIp, FixedIpRequest, Network, Neutron, Port, Subnet};
use serde_json::json;

use crate::config::{Ipv6, PortLookup, Settings};
use crate::error::IpamError;
use crate::host;
use crate::resend;
use crate::store::{Lease, Pending, PortInfo, SubnetInfo};

/// Tag marking a port whose extra fixed IPs are pod addresses (read by vrouter-route-controller).
pub const MANAGED_TAG: &str = "veth-route:managed";
/// Prefix of the tag naming the VM's own address.
pub const PRIMARY_PREFIX: &str = "veth-route:primary=";
/// Prefix of the tag naming the VM's own IPv6 address (dual-stack ports only).
pub const PRIMARY6_PREFIX: &str = "veth-route:primary6=";
/// Marker that precedes the nonce in the port description.
const NONCE_MARK: &str = " [veth-route ";

/// Attempts of a read-modify-write before giving up with "try again later".
const MAX_ATTEMPTS: u32 = 12;

fn uplink_for(name: Option<&str>) -> Result<host::Uplink, IpamError> {
    let name = match name {
        Some(n) => n.to_string(),
        None => host::default_route_interface()
            .map_err(|e| IpamError::NoPort(format!("cannot find the VM's uplink (set neutronConf.hostInterface): {e}")))?,
    };
    host::uplink(&name).map_err(|e| IpamError::NoPort(format!("cannot read interface {name}: {e}")))
}

/// Finds the VM port per the configured lookup, its primary address and pod subnet.
pub async fn find(neutron: &Neutron, settings: &Settings) -> Result<PortInfo, IpamError> {
    let net = &settings.network_id;
    let (port, uplink) = match &settings.port_lookup {
        PortLookup::HostInterface(name) => {
            let up = uplink_for(name.as_deref())?;
            let port = match neutron.find_port_by_mac(net, &up.mac).await? {
                Some(p) => p,
                None => return Err(missing_port(neutron, settings, &format!("with MAC {} (interface {})", up.mac, up.name)).await),
            };
            (port, Some(up))
        }
        PortLookup::PortId(id) => (neutron.get_port(id).await?, None),
        PortLookup::Metadata { url, interface } => {
            let up = uplink_for(interface.as_deref()).ok();
            let id = metadata_vif(settings, url, up.as_ref().map(|u| u.mac.as_str())).await?;
            (neutron.get_port(&id).await?, up)
        }
    };
    if &port.network_id != net {
        return Err(IpamError::Config(format!("port {} is on network {}, not on the configured {net}", port.id, port.network_id)));
    }
    let uplink = uplink.or_else(|| uplink_for(None).ok());
    let primary = primary_of(&port, uplink.as_ref())?;
    let subnet = neutron.get_subnet(&primary.subnet_id).await?;
    let network = neutron.get_network(&port.network_id).await?;
    let v6 = ipv6_subnet(neutron, settings, &network, &subnet.id, &port).await?;
    let (subnet6, primary6) = match v6 {
        Some(s6) => {
            let own = primary6_of(&port, &s6, uplink.as_ref())?;
            (Some(SubnetInfo { id: s6.id, cidr: s6.cidr, gateway: s6.gateway_ip }), own)
        }
        None => (None, None),
    };
    Ok(PortInfo {
        id: port.id.clone(),
        mac: port.mac_address.clone(),
        network_id: port.network_id.clone(),
        primary: primary.ip_address,
        subnet: SubnetInfo { id: subnet.id, cidr: subnet.cidr, gateway: subnet.gateway_ip },
        subnet6,
        primary6,
        marked: false,
        network_mtu: network.mtu,
    })
}

/// The IPv6 subnet of the network pods get an address of, per `settings.ipv6`: one that
/// takes explicit fixed IPs (`dhcpv6-stateful` or no address mode); of several, the one
/// holding the VM's own IPv6 address, else the lowest CIDR. SLAAC and `dhcpv6-stateless`
/// subnets beside it are left alone. A network whose only subnet is the primary's costs
/// no request more than before dual-stack support.
async fn ipv6_subnet(
    neutron: &Neutron,
    settings: &Settings,
    network: &Network,
    primary_subnet: &str,
    port: &Port,
) -> Result<Option<Subnet>, IpamError> {
    if settings.ipv6 == Ipv6::Off {
        return Ok(None);
    }
    let v6: Vec<Subnet> = if network.subnets.iter().all(|s| s == primary_subnet) {
        Vec::new()
    } else {
        neutron.list_subnets(&network.id).await?.into_iter().filter(|s| s.ip_version == 6).collect()
    };
    let (mut usable, refused): (Vec<Subnet>, Vec<Subnet>) = v6.into_iter().partition(Subnet::takes_explicit_fixed_ips);
    let refused_list = || {
        refused
            .iter()
            .map(|s| format!("{} ({}, ipv6_address_mode {})", s.id, s.cidr, s.ipv6_address_mode.as_deref().unwrap_or("none")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if usable.is_empty() {
        let net = &network.id;
        return Err(IpamError::Config(if refused.is_empty() {
            format!("neutronConf.ipFamilies asks for IPv6, but network {net} has no IPv6 subnet")
        } else {
            format!(
                "neutronConf.ipFamilies asks for IPv6, but no IPv6 subnet of network {net} takes fixed IPs: {}. \
                 Neutron derives SLAAC and dhcpv6-stateless addresses from the port's MAC and refuses any other, so a \
                 pod cannot get one; add a subnet with ipv6_address_mode dhcpv6-stateful (or none)",
                refused_list()
            )
        }));
    }
    if !refused.is_empty() {
        log::info!("network {}: leaving SLAAC subnet(s) {} alone", network.id, refused_list());
    }
    let on_port = |s: &Subnet| port.fixed_ips.iter().any(|f| f.subnet_id == s.id);
    usable.sort_by_key(|s| (!on_port(s), s.cidr.to_string()));
    Ok(Some(usable.swap_remove(0)))
}

/// The VM's own address in the pods' IPv6 subnet: the uplink's; else the one a primary6
/// tag names; else the port's only address of the subnet; none when it has none there.
fn primary6_of(port: &Port, subnet: &Subnet, uplink: Option<&host::Uplink>) -> Result<Option<IpAddr>, IpamError> {
    let mine: Vec<IpAddr> =
        port.fixed_ips.iter().filter(|f| f.subnet_id == subnet.id && f.ip_address.is_ipv6()).map(|f| f.ip_address).collect();
    let from_uplink = uplink.and_then(|u| u.ipv6.iter().map(|a| IpAddr::V6(*a)).find(|a| mine.contains(a)));
    let tagged =
        || port.tags.iter().filter_map(|t| t.strip_prefix(PRIMARY6_PREFIX)).filter_map(|a| a.parse().ok()).find(|a| mine.contains(a));
    match (from_uplink.or_else(tagged), mine.as_slice()) {
        (Some(a), _) => Ok(Some(a)),
        (None, [one]) => Ok(Some(*one)),
        (None, []) => Ok(None),
        (None, many) => Err(IpamError::NoPort(format!(
            "port {} has {} addresses of IPv6 subnet {} and none is the VM's own (not on the uplink, no {PRIMARY6_PREFIX} tag)",
            port.id,
            many.len(),
            subnet.id
        ))),
    }
}

/// Explains a missing port: unknown network (config error) or no port with our MAC.
async fn missing_port(neutron: &Neutron, settings: &Settings, what: &str) -> IpamError {
    let net = &settings.network_id;
    match neutron.get_network(net).await {
        Err(e) if e.is_not_found() => IpamError::Config(format!(
            "neutronConf.networks: network {net} does not exist or is not visible to {}",
            settings.auth.describe()
        )),
        Err(e) => IpamError::Cloud(e),
        Ok(_) => IpamError::NoPort(format!("no Neutron port {what} on network {net}")),
    }
}

/// The Neutron port id of the link with `mac` (or the only link) in Nova's `network_data.json`.
async fn metadata_vif(settings: &Settings, url: &str, mac: Option<&str>) -> Result<String, IpamError> {
    let http = settings.http.build()?;
    let err = |why: String| IpamError::NoPort(format!("Nova metadata {url}: {why}"));
    let resp = http.get(url).send().await.map_err(|e| err(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let doc: serde_json::Value = resp.json().await.map_err(|e| err(e.without_url().to_string()))?;
    let links = doc["links"].as_array().cloned().unwrap_or_default();
    let matching: Vec<&serde_json::Value> = links
        .iter()
        .filter(|l| mac.is_none_or(|m| l["ethernet_mac_address"].as_str().is_some_and(|a| a.eq_ignore_ascii_case(m))))
        .collect();
    match matching.as_slice() {
        [one] => one["vif_id"].as_str().map(str::to_string).ok_or_else(|| err("link has no vif_id".into())),
        [] => Err(err(format!("no link with MAC {}", mac.unwrap_or("?")))),
        _ => Err(err("several links match; set neutronConf.hostInterface".into())),
    }
}

/// The VM's own address on its port: the uplink's address; else the address a primary tag
/// names; else the port's only IPv4 address. Never "the first fixed IP": Neutron sorts
/// fixed IPs as strings (10.0.0.100 before 10.0.0.8), so that is a pod's as often as not.
fn primary_of(port: &Port, uplink: Option<&host::Uplink>) -> Result<FixedIp, IpamError> {
    let on_port = |ip: IpAddr| port.fixed_ips.iter().find(|f| f.ip_address == ip).cloned();
    let tagged = port.tags.iter().filter_map(|t| t.strip_prefix(PRIMARY_PREFIX)).filter_map(|ip| ip.parse().ok()).find_map(on_port);
    let v4: Vec<&FixedIp> = port.fixed_ips.iter().filter(|f| f.ip_address.is_ipv4()).collect();
    uplink
        .and_then(|u| u.ipv4)
        .and_then(|ip| on_port(IpAddr::V4(ip)))
        .or(tagged)
        .or_else(|| match v4.as_slice() {
            [only] => Some((*only).clone()),
            _ => None,
        })
        .ok_or_else(|| {
            let uplink = uplink.map_or_else(|| "no uplink found".to_string(), |u| format!("uplink {} has {:?}", u.name, u.ipv4));
            IpamError::NoPort(format!(
                "port {} has {} IPv4 addresses and none is the VM's own ({uplink}); set neutronConf.hostInterface to the VM's uplink",
                port.id,
                v4.len()
            ))
        })
}

/// The IPv4 address of the configured (or default-route) uplink, when it can be read here.
pub fn uplink_address(settings: &Settings) -> Option<IpAddr> {
    let name = match &settings.port_lookup {
        PortLookup::HostInterface(name) | PortLookup::Metadata { interface: name, .. } => name.as_deref(),
        PortLookup::PortId(_) => None,
    };
    uplink_for(name).ok()?.ipv4.map(IpAddr::V4)
}

/// The tags the port must carry: managed, and the VM's own address (and IPv6 address).
fn marks(info: &PortInfo) -> Vec<String> {
    let mut tags = vec![MANAGED_TAG.to_string(), format!("{PRIMARY_PREFIX}{}", info.primary)];
    tags.extend(info.primary6.map(|a| format!("{PRIMARY6_PREFIX}{a}")));
    tags
}

/// Whether `current` carries the managed and (only the right) primary tags.
pub fn is_marked(current: &Port, info: &PortInfo) -> bool {
    let want = marks(info);
    let count = |prefix: &str| current.tags.iter().filter(|t| t.starts_with(prefix)).count();
    want.iter().all(|t| current.tags.contains(t))
        && count(PRIMARY_PREFIX) == 1
        && count(PRIMARY6_PREFIX) == usize::from(info.primary6.is_some())
}

/// Puts the managed and primary tags on the port as read in `current` (idempotent; one
/// write, keeping others' tags).
pub async fn mark(neutron: &Neutron, info: &PortInfo, current: &Port) -> Result<(), IpamError> {
    let mut tags: Vec<String> =
        current.tags.iter().filter(|t| !t.starts_with(PRIMARY_PREFIX) && !t.starts_with(PRIMARY6_PREFIX)).cloned().collect();
    tags.extend(marks(info));
    tags.sort();
    tags.dedup();
    let mut have = current.tags.clone();
    have.sort();
    if have != tags {
        log::info!("port {}: marking it {:?}", info.id, marks(info));
        let what = format!("marking port {}", info.id);
        resend::idempotent(&what, || neutron.set_port_tags(&info.id, &tags)).await?;
    }
    Ok(())
}

fn nonce() -> String {
    let mut buf = [0u8; 6];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        buf.copy_from_slice(&(t.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes()[..6]);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// How many of the latest writers' nonces the description keeps.
const NONCE_HISTORY: usize = 4;
/// Room left for the user's own description (Neutron allows 255 characters).
const USER_DESCRIPTION_MAX: usize = 180;

/// The nonces in a description, newest first.
fn nonces(description: &str) -> Vec<&str> {
    description.split(NONCE_MARK).nth(1).map(|h| h.trim_end_matches(']').split(' ').filter(|n| !n.is_empty()).collect()).unwrap_or_default()
}

/// The description with `nonce` in front of the last writers' nonces: the PUT then always
/// changes the port, so Neutron checks `If-Match` even when the fixed-IP list happens to
/// come out unchanged; and a writer whose answer was lost can tell from the port whether
/// its update was applied (its nonce is there) even when another update followed it.
fn with_nonce(description: &str, nonce: &str) -> String {
    let user: String = description.split(NONCE_MARK).next().unwrap_or_default().chars().take(USER_DESCRIPTION_MAX).collect();
    let history: Vec<&str> = std::iter::once(nonce).chain(nonces(description)).take(NONCE_HISTORY).collect();
    format!("{user}{NONCE_MARK}{}]", history.join(" "))
}

/// What a port update whose answer was lost did, read from the port afterwards.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// It was applied; these addresses appeared with it (or after it: see [`settle`]).
    Applied(Vec<Lease>),
    /// It was not applied.
    NotApplied,
}

/// Settles `pending` against the port as it is now. `known` are the addresses this node
/// already holds (and the VM's own). Applied when the update's nonce is in the
/// description; its addresses are then those on the port that were not there before and
/// that nobody here holds. If another writer updated the port after it (the nonce is not
/// the newest), that writer's additions cannot be told apart: only another lock domain on
/// the same port (a second CNI network with its own data directory) adds addresses, so
/// this is logged. A journal of an older version (no nonce) takes every unknown address.
pub fn settle(pending: &Pending, current: &Port, known: &HashSet<IpAddr>) -> Settled {
    let history = nonces(&current.description);
    let applied = match &pending.nonce {
        Some(n) => history.contains(&n.as_str()),
        None => true,
    };
    if !applied {
        return Settled::NotApplied;
    }
    if pending.nonce.as_deref().is_some_and(|n| history.first() != Some(&n)) {
        log::warn!("port {}: updated again after our unanswered update; taking every new address of it as ours", current.id);
    }
    let before: HashSet<IpAddr> = pending.before.iter().copied().collect();
    Settled::Applied(
        current
            .fixed_ips
            .iter()
            .filter(|f| !before.contains(&f.ip_address) && !known.contains(&f.ip_address))
            .map(|f| Lease { ip: f.ip_address, subnet_id: f.subnet_id.clone() })
            .collect(),
    )
}

/// Addresses to add in one port update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Add {
    /// Nothing (a pure release).
    Nothing,
    /// Addresses of Neutron's choosing: this many of each subnet (id).
    Any(Vec<(String, usize)>),
    /// Exactly these addresses of this subnet (a node-affine block).
    Exact(String, Vec<IpAddr>),
}

impl Add {
    fn count(&self) -> usize {
        match self {
            Add::Nothing => 0,
            Add::Any(per_subnet) => per_subnet.iter().map(|(_, n)| n).sum(),
            Add::Exact(_, ips) => ips.len(),
        }
    }
}

/// Adds addresses (of the subnets `add` names) and removes `remove` from the port in one PUT, listing
/// every kept address explicitly, guarded by `If-Match` and retried from a fresh GET on
/// 412. `journal` records each PUT before it is sent (the port's addresses and the nonce).
/// A PUT whose answer is lost (timeout, closed or reset connection, 5xx) is settled by
/// reading the port ([`settle`]; `known`: addresses held here); when even that read
/// fails, [`IpamError::Unsettled`] says the journal must be kept. `first` is a port read
/// just now, used for the first attempt. Returns the added leases.
pub async fn change_ips(
    neutron: &Neutron,
    port_id: &str,
    add: &Add,
    remove: &HashSet<IpAddr>,
    known: &HashSet<IpAddr>,
    mut first: Option<Port>,
    mut journal: impl FnMut(&Pending) -> Result<(), IpamError>,
) -> Result<Vec<Lease>, IpamError> {
    let wanted = add.count();
    for attempt in 0..MAX_ATTEMPTS {
        let port: Port = match first.take() {
            Some(p) => p,
            None => neutron.get_port(port_id).await?,
        };
        let before: HashSet<IpAddr> = port.fixed_ips.iter().map(|f| f.ip_address).collect();
        if wanted == 0 && remove.is_disjoint(&before) {
            return Ok(Vec::new());
        }
        let mut request: Vec<FixedIpRequest> =
            port.fixed_ips.iter().filter(|f| !remove.contains(&f.ip_address)).cloned().map(FixedIpRequest::Address).collect();
        match add {
            Add::Nothing => {}
            Add::Any(per_subnet) => request.extend(
                per_subnet.iter().flat_map(|(subnet_id, n)| (0..*n).map(|_| FixedIpRequest::AnyIn { subnet_id: subnet_id.clone() })),
            ),
            Add::Exact(subnet_id, ips) => request.extend(
                ips.iter()
                    .filter(|ip| !before.contains(ip))
                    .map(|ip| FixedIpRequest::Address(FixedIp { subnet_id: subnet_id.to_string(), ip_address: *ip })),
            ),
        }
        let pending = Pending { before: before.iter().copied().collect(), nonce: Some(nonce()) };
        journal(&pending)?;
        let extra = json!({ "description": with_nonce(&port.description, pending.nonce.as_deref().unwrap_or_default()) });
        match neutron.update_port_fixed_ips(port_id, &request, extra, Some(port.revision_number)).await {
            Ok(updated) => {
                let added: Vec<Lease> = updated
                    .fixed_ips
                    .iter()
                    .filter(|f| !before.contains(&f.ip_address))
                    .map(|f| Lease { ip: f.ip_address, subnet_id: f.subnet_id.clone() })
                    .collect();
                if added.len() != wanted {
                    log::warn!("port {port_id}: asked for {wanted} new addresses, Neutron added {}", added.len());
                }
                return Ok(added);
            }
            Err(e) if e.is_revision_conflict() => {
                let wait = Duration::from_millis(10 * u64::from(1 + attempt) + u64::from(nonce().as_bytes()[0] % 40));
                log::debug!("port {port_id} changed under us (attempt {}); retrying in {wait:?}", attempt + 1);
                tokio::time::sleep(wait).await;
            }
            // A release is settled by the next attempt's read: the addresses are gone or not.
            Err(e) if e.outcome_unknown() && wanted == 0 => log::warn!("port {port_id}: {e}; reading the port again"),
            Err(e) if e.outcome_unknown() => {
                log::warn!("port {port_id}: {e}; reading the port to settle the outcome");
                let current = neutron.get_port(port_id).await.map_err(|read| {
                    log::warn!("port {port_id}: cannot read it to settle the update: {read}");
                    IpamError::Unsettled(e)
                })?;
                match settle(&pending, &current, known) {
                    Settled::Applied(added) => {
                        log::info!("port {port_id}: the unanswered update was applied, adding {added:?}");
                        return Ok(added);
                    }
                    Settled::NotApplied => {
                        log::info!("port {port_id}: the unanswered update was not applied; trying again");
                        first = Some(current);
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(IpamError::Contention(format!("port {port_id} kept changing; gave up after {MAX_ATTEMPTS} attempts")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ips: &[&str], tags: &[&str], description: &str) -> Port {
        serde_json::from_value(json!({
            "id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "description": description, "tags": tags,
            "fixed_ips": ips.iter().map(|ip| json!({"subnet_id": "s", "ip_address": ip})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn description_keeps_the_user_text_and_the_latest_nonces() {
        let d = with_nonce("k8s node", "aaaaaaaaaaaa");
        assert_eq!(d, "k8s node [veth-route aaaaaaaaaaaa]");
        let d = ["b", "c", "d", "e"].iter().fold(d, |d, n| with_nonce(&d, n));
        assert_eq!(nonces(&d), ["e", "d", "c", "b"]);
        assert!(d.starts_with("k8s node [veth-route "));
        assert!(with_nonce(&"x".repeat(300), "n").len() <= 255);
    }

    #[test]
    fn a_lost_answer_is_settled_by_the_nonce_on_the_port() {
        let pending = Pending { before: vec!["10.0.0.8".parse().unwrap()], nonce: Some("ours".into()) };
        let known: HashSet<IpAddr> = ["10.0.0.8".parse().unwrap()].into();
        let applied = port(&["10.0.0.100", "10.0.0.8"], &[], " [veth-route ours]");
        let got = settle(&pending, &applied, &known);
        assert_eq!(got, Settled::Applied(vec![Lease { ip: "10.0.0.100".parse().unwrap(), subnet_id: "s".into() }]));
        // Applied, then another update: still ours.
        let later = port(&["10.0.0.100", "10.0.0.8"], &[], " [veth-route theirs ours]");
        assert!(matches!(settle(&pending, &later, &known), Settled::Applied(v) if v.len() == 1));
        // Not there: not applied, whatever else changed.
        let other = port(&["10.0.0.100", "10.0.0.8"], &[], " [veth-route theirs]");
        assert_eq!(settle(&pending, &other, &known), Settled::NotApplied);
    }

    fn subnet6(id: &str) -> Subnet {
        serde_json::from_value(json!({"id": id, "network_id": "n", "cidr": "fd00::/64", "ip_version": 6})).unwrap()
    }

    #[test]
    fn the_vm_ipv6_address_is_the_uplink_one_then_the_tagged_then_the_only_one() {
        let mut p = port(&["10.0.0.8", "fd00::a", "fd00::b"], &[], "");
        let s = subnet6("s");
        let up = |a: &str| host::Uplink { name: "eth0".into(), mac: "m".into(), ipv4: None, ipv6: vec![a.parse().unwrap()] };
        assert_eq!(primary6_of(&p, &s, Some(&up("fd00::b"))).unwrap(), Some("fd00::b".parse().unwrap()));
        assert!(primary6_of(&p, &s, Some(&up("fd00::c"))).unwrap_err().to_string().contains(PRIMARY6_PREFIX));
        p.tags = vec![format!("{PRIMARY6_PREFIX}fd00::a")];
        assert_eq!(primary6_of(&p, &s, None).unwrap(), Some("fd00::a".parse().unwrap()));
        assert_eq!(primary6_of(&port(&["10.0.0.8", "fd00::a"], &[], ""), &s, None).unwrap(), Some("fd00::a".parse().unwrap()));
        assert_eq!(primary6_of(&port(&["10.0.0.8"], &[], ""), &s, None).unwrap(), None);
    }

    #[test]
    fn a_dual_stack_port_is_marked_only_with_both_primaries() {
        let info = |primary6: Option<&str>| PortInfo {
            id: "p".into(),
            mac: "m".into(),
            network_id: "n".into(),
            primary: "10.0.0.8".parse().unwrap(),
            subnet: SubnetInfo { id: "s4".into(), cidr: "10.0.0.0/24".parse().unwrap(), gateway: None },
            subnet6: None,
            primary6: primary6.map(|a| a.parse().unwrap()),
            marked: true,
            network_mtu: None,
        };
        let v4_tags = [MANAGED_TAG, "veth-route:primary=10.0.0.8"];
        assert_eq!(marks(&info(None)), v4_tags, "IPv4-only ports keep exactly the tags they had");
        assert!(is_marked(&port(&[], &v4_tags, ""), &info(None)));
        assert!(!is_marked(&port(&[], &v4_tags, ""), &info(Some("fd00::a"))));
        let both = [MANAGED_TAG, "veth-route:primary=10.0.0.8", "veth-route:primary6=fd00::a"];
        assert!(is_marked(&port(&[], &both, ""), &info(Some("fd00::a"))));
        assert!(!is_marked(&port(&[], &both, ""), &info(None)), "a stale primary6 tag must go");
    }

    #[test]
    fn primary_is_the_uplink_address_not_the_first_fixed_ip() {
        // Neutron's order: "10.0.0.100" sorts before "10.0.0.8".
        let p = port(&["10.0.0.100", "10.0.0.8"], &[], "");
        let up = host::Uplink { name: "eth0".into(), mac: "m".into(), ipv4: Some("10.0.0.8".parse().unwrap()), ipv6: Vec::new() };
        assert_eq!(primary_of(&p, Some(&up)).unwrap().ip_address, "10.0.0.8".parse::<IpAddr>().unwrap());
        let tagged = port(&["10.0.0.100", "10.0.0.8"], &["veth-route:primary=10.0.0.8"], "");
        assert_eq!(primary_of(&tagged, None).unwrap().ip_address, "10.0.0.8".parse::<IpAddr>().unwrap());
        let e = primary_of(&p, None).unwrap_err().to_string();
        assert!(e.contains("hostInterface"), "{e}");
        assert_eq!(primary_of(&port(&["10.0.0.100"], &[], ""), None).unwrap().ip_address, "10.0.0.100".parse::<IpAddr>().unwrap());
    }
}
