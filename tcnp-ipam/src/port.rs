//! The VM's own Neutron port: finding it, marking it managed, and changing its fixed IPs
//! without ever sending a stale list.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use openstack::{FixedIp, FixedIpRequest, Neutron, Port};
use serde_json::json;

use crate::config::{PortLookup, Settings};
use crate::error::IpamError;
use crate::host;
use crate::store::{Lease, PortInfo, SubnetInfo};

/// Tag marking a port whose extra fixed IPs are pod addresses (read by vrouter-route-controller).
pub const MANAGED_TAG: &str = "veth-route:managed";
/// Prefix of the tag naming the VM's own address.
pub const PRIMARY_PREFIX: &str = "veth-route:primary=";
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
    let v4 = |ip: &IpAddr| ip.is_ipv4();
    let on_port = |ip: IpAddr| port.fixed_ips.iter().find(|f| f.ip_address == ip).cloned();
    let primary = uplink
        .as_ref()
        .and_then(|u| u.ipv4)
        .and_then(|ip| on_port(IpAddr::V4(ip)))
        .or_else(|| port.fixed_ips.iter().find(|f| v4(&f.ip_address)).cloned())
        .ok_or_else(|| IpamError::NoPort(format!("port {} has no IPv4 fixed IP to identify the VM by", port.id)))?;
    let subnet = neutron.get_subnet(&primary.subnet_id).await?;
    Ok(PortInfo {
        id: port.id.clone(),
        mac: port.mac_address.clone(),
        network_id: port.network_id.clone(),
        primary: primary.ip_address,
        subnet: SubnetInfo { id: subnet.id, cidr: subnet.cidr, gateway: subnet.gateway_ip },
        marked: false,
    })
}

/// Explains a missing port: unknown network (config error) or no port with our MAC.
async fn missing_port(neutron: &Neutron, settings: &Settings, what: &str) -> IpamError {
    let net = &settings.network_id;
    match neutron.get_network(net).await {
        Err(e) if e.is_not_found() => IpamError::Config(format!(
            "neutronConf.networks: network {net} does not exist or is not visible to project {}",
            settings.credentials.project
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

/// Puts the managed and primary tags on the port (idempotent; one write, keeping others' tags).
pub async fn mark(neutron: &Neutron, port: &PortInfo) -> Result<(), IpamError> {
    let current = neutron.get_port(&port.id).await?;
    let primary_tag = format!("{PRIMARY_PREFIX}{}", port.primary);
    let mut tags: Vec<String> = current.tags.iter().filter(|t| !t.starts_with(PRIMARY_PREFIX)).cloned().collect();
    tags.extend([MANAGED_TAG.to_string(), primary_tag]);
    tags.sort();
    tags.dedup();
    let mut have = current.tags.clone();
    have.sort();
    if have != tags {
        neutron.set_port_tags(&port.id, &tags).await?;
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

/// The description with a fresh nonce: the PUT then always changes the port, so Neutron
/// checks `If-Match` even when the fixed-IP list happens to come out unchanged.
fn with_nonce(description: &str) -> String {
    let user = description.split(NONCE_MARK).next().unwrap_or_default();
    format!("{user}{NONCE_MARK}{}]", nonce())
}

/// Addresses to add in one port update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Add {
    /// Nothing (a pure release).
    Nothing,
    /// This many addresses of Neutron's choosing.
    Any(usize),
    /// Exactly these addresses (a node-affine block).
    Exact(Vec<IpAddr>),
}

impl Add {
    fn count(&self) -> usize {
        match self {
            Add::Nothing => 0,
            Add::Any(n) => *n,
            Add::Exact(ips) => ips.len(),
        }
    }
}

/// Adds addresses from `subnet_id` and removes `remove` from the port in one PUT, listing
/// every kept address explicitly, guarded by `If-Match` and retried from a fresh GET on
/// 412. `before_put` sees the port's addresses just before each PUT (for the journal).
/// Returns the added leases.
pub async fn change_ips(
    neutron: &Neutron,
    port_id: &str,
    subnet_id: &str,
    add: &Add,
    remove: &HashSet<IpAddr>,
    mut before_put: impl FnMut(&[IpAddr]) -> Result<(), IpamError>,
) -> Result<Vec<Lease>, IpamError> {
    let wanted = add.count();
    for attempt in 0..MAX_ATTEMPTS {
        let port: Port = neutron.get_port(port_id).await?;
        let before: HashSet<IpAddr> = port.fixed_ips.iter().map(|f| f.ip_address).collect();
        if wanted == 0 && remove.is_disjoint(&before) {
            return Ok(Vec::new());
        }
        let mut request: Vec<FixedIpRequest> =
            port.fixed_ips.iter().filter(|f| !remove.contains(&f.ip_address)).cloned().map(FixedIpRequest::Address).collect();
        match add {
            Add::Nothing => {}
            Add::Any(n) => request.extend((0..*n).map(|_| FixedIpRequest::AnyIn { subnet_id: subnet_id.to_string() })),
            Add::Exact(ips) => request.extend(
                ips.iter()
                    .filter(|ip| !before.contains(ip))
                    .map(|ip| FixedIpRequest::Address(FixedIp { subnet_id: subnet_id.to_string(), ip_address: *ip })),
            ),
        }
        before_put(&before.iter().copied().collect::<Vec<_>>())?;
        let extra = json!({ "description": with_nonce(&port.description) });
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
            Err(e) => return Err(e.into()),
        }
    }
    Err(IpamError::Contention(format!("port {port_id} kept changing; gave up after {MAX_ATTEMPTS} attempts")))
}
