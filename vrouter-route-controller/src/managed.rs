//! Reading tcnp-ipam's marks on a VM port: is it managed, and which address is the VM's own.
//!
//! The contract (written by tcnp-ipam, read here): the port carries the tag [`MANAGED_TAG`]
//! and one tag `PRIMARY_PREFIX<ipv4>` naming the VM's own address. Every other IPv4 fixed IP
//! of the port is a pod address (or a warm spare, which routes the same way), except those
//! named in a tag `RELEASED_PREFIX<ipv4>`.
//!
//! Released addresses: an address tcnp-ipam takes off the port may be handed by Neutron to
//! another VM at once, while the router still routes it to this one. So tcnp-ipam first
//! keeps it on the port, tagged released (a quarantine), and the controller stops routing
//! it: the tag changes the port's revision, which the change check sees within one poll
//! interval, and the next pass removes the route (a block containing it is split so that
//! it no longer covers it). tcnp-ipam may take the address off the port once no static
//! route of the network's routers covers it with this VM as next hop.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use crate::model::VmPort;

/// Tag marking a VM port whose extra fixed IPs are pod addresses.
pub const MANAGED_TAG: &str = "veth-route:managed";
/// Prefix of the tag naming the VM's own address.
pub const PRIMARY_PREFIX: &str = "veth-route:primary=";
/// Prefix of a tag naming a released address still on the port (quarantined): not routed.
pub const RELEASED_PREFIX: &str = "veth-route:released=";

/// Why a tagged port cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagedPortError {
    /// Managed, but no readable primary-address tag.
    #[error("port {0} is managed but has no '{PRIMARY_PREFIX}<ipv4>' tag")]
    NoPrimary(String),
    /// The primary named in the tag is not one of the port's fixed IPs.
    #[error("port {port}: primary {primary} is not one of its fixed IPs")]
    PrimaryNotOnPort { port: String, primary: Ipv4Addr },
}

/// The VM port view of a Neutron port, `Ok(None)` when tcnp-ipam does not manage it.
pub fn vm_port(port: &openstack::Port) -> Result<Option<VmPort>, ManagedPortError> {
    if !port.tags.iter().any(|t| t == MANAGED_TAG) {
        return Ok(None);
    }
    let primary = port
        .tags
        .iter()
        .find_map(|t| t.strip_prefix(PRIMARY_PREFIX).and_then(|ip| ip.parse::<Ipv4Addr>().ok()))
        .ok_or_else(|| ManagedPortError::NoPrimary(port.id.clone()))?;
    let addrs: BTreeSet<Ipv4Addr> = port
        .fixed_ips
        .iter()
        .filter_map(|f| match f.ip_address {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
        .collect();
    if !addrs.contains(&primary) {
        return Err(ManagedPortError::PrimaryNotOnPort { port: port.id.clone(), primary });
    }
    let released: BTreeSet<Ipv4Addr> =
        port.tags.iter().filter_map(|t| t.strip_prefix(RELEASED_PREFIX).and_then(|ip| ip.parse().ok())).collect();
    let pod_ips = addrs.into_iter().filter(|ip| *ip != primary && !released.contains(ip)).collect();
    Ok(Some(VmPort { port_id: port.id.clone(), primary, pod_ips }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(tags: &[&str], ips: &[&str]) -> openstack::Port {
        serde_json::from_value(serde_json::json!({
            "id": "p1", "network_id": "n1", "mac_address": "fa:16:3e:00:00:01",
            "tags": tags,
            "fixed_ips": ips.iter().map(|ip| serde_json::json!({"subnet_id": "s1", "ip_address": ip})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn managed_port_splits_primary_from_pods() {
        let p = port(&[MANAGED_TAG, "veth-route:primary=10.0.0.8"], &["10.0.0.8", "10.0.0.19", "10.0.0.20", "fd00::5"]);
        let vm = vm_port(&p).unwrap().unwrap();
        assert_eq!(vm.primary, Ipv4Addr::new(10, 0, 0, 8));
        assert_eq!(vm.pod_ips.len(), 2);
    }

    #[test]
    fn released_addresses_are_not_routed() {
        let tags = [MANAGED_TAG, "veth-route:primary=10.0.0.8", "veth-route:released=10.0.0.20", "veth-route:released=junk"];
        let vm = vm_port(&port(&tags, &["10.0.0.8", "10.0.0.19", "10.0.0.20"])).unwrap().unwrap();
        assert_eq!(vm.pod_ips, [Ipv4Addr::new(10, 0, 0, 19)].into_iter().collect());
    }

    #[test]
    fn untagged_port_is_not_ours() {
        assert_eq!(vm_port(&port(&["veth-route:primary=10.0.0.8"], &["10.0.0.8"])).unwrap(), None);
    }

    #[test]
    fn inconsistent_marks_are_errors_not_guesses() {
        assert_eq!(vm_port(&port(&[MANAGED_TAG], &["10.0.0.8"])), Err(ManagedPortError::NoPrimary("p1".into())));
        assert!(matches!(
            vm_port(&port(&[MANAGED_TAG, "veth-route:primary=10.0.0.9"], &["10.0.0.8"])),
            Err(ManagedPortError::PrimaryNotOnPort { .. })
        ));
    }
}
