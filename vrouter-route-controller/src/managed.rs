//! Reading tcnp-ipam's marks on a VM port: is it managed, and which addresses are the VM's own.
//!
//! The contract (written by tcnp-ipam, read here): the port carries the tag [`MANAGED_TAG`]
//! and one tag `PRIMARY_PREFIX<ipv4>` naming the VM's own address. Every other IPv4 fixed IP
//! of the port is a pod address (or a warm spare, which routes the same way), except those
//! named in a tag `RELEASED_PREFIX<ip>`.
//!
//! Dual-stack: a port whose pods also get IPv6 addresses carries `PRIMARY6_PREFIX<ipv6>`,
//! the VM's own IPv6 address, the next hop of their `/128`s. Its IPv6 pods are the other
//! IPv6 fixed IPs of that address's subnet: Neutron gives every port an address of each
//! SLAAC or stateless subnet of the network, which is the VM's too, not a pod's. Without a
//! usable `primary6` the port gets no IPv6 routes and keeps its IPv4 ones: IPv6 is an
//! addition, a port of an IPv4-only tcnp-ipam config on a dual-stack network is normal.
//!
//! Released addresses: an address tcnp-ipam takes off the port may be handed by Neutron to
//! another VM at once, while the router still routes it to this one. So tcnp-ipam first
//! keeps it on the port, tagged released (a quarantine), and the controller stops routing
//! it: the tag changes the port's revision, which the change check sees within one poll
//! interval, and the next pass removes the route (a block containing it is split so that
//! it no longer covers it). tcnp-ipam may take the address off the port once no static
//! route of the network's routers covers it with this VM as next hop.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::model::{Hosted, VmPort};

/// Tag marking a VM port whose extra fixed IPs are pod addresses.
pub const MANAGED_TAG: &str = "veth-route:managed";
/// Prefix of the tag naming the VM's own address.
pub const PRIMARY_PREFIX: &str = "veth-route:primary=";
/// Prefix of the tag naming the VM's own IPv6 address (dual-stack pods).
pub const PRIMARY6_PREFIX: &str = "veth-route:primary6=";
/// Prefix of a tag naming a released address still on the port (quarantined): not routed.
pub const RELEASED_PREFIX: &str = "veth-route:released=";

/// Why a tagged port, or its IPv6 part, cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagedPortError {
    /// Managed, but no readable primary-address tag.
    #[error("port {0} is managed but has no '{PRIMARY_PREFIX}<ipv4>' tag")]
    NoPrimary(String),
    /// A `primary6` tag that is not an IPv6 address.
    #[error("port {port}: tag '{PRIMARY6_PREFIX}{value}' does not name an IPv6 address")]
    BadPrimary6 { port: String, value: String },
    /// The primary named in the tag is not one of the port's fixed IPs.
    #[error("port {port}: primary {primary} is not one of its fixed IPs")]
    PrimaryNotOnPort { port: String, primary: IpAddr },
}

/// A managed port as read: what can be routed, and why its IPv6 pods cannot when they can't.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    /// The port (IPv6 part `None` when it is unusable or absent).
    pub vm: VmPort,
    /// Why a `primary6` tag is there but unusable; `None` when it is usable or absent.
    pub ipv6_error: Option<ManagedPortError>,
}

/// The readable addresses of the tags starting with `prefix`.
fn tagged<'a, A: FromStr>(port: &'a openstack::Port, prefix: &'static str) -> impl Iterator<Item = A> + 'a {
    port.tags.iter().filter_map(move |t| t.strip_prefix(prefix).and_then(|ip| ip.parse().ok()))
}

/// The VM port view of a Neutron port, `Ok(None)` when tcnp-ipam does not manage it.
pub fn vm_port(port: &openstack::Port) -> Result<Option<Managed>, ManagedPortError> {
    if !port.tags.iter().any(|t| t == MANAGED_TAG) {
        return Ok(None);
    }
    let primary: Ipv4Addr = tagged(port, PRIMARY_PREFIX).next().ok_or_else(|| ManagedPortError::NoPrimary(port.id.clone()))?;
    let released: BTreeSet<IpAddr> = tagged(port, RELEASED_PREFIX).collect();
    let unreleased = |ip: &IpAddr| !released.contains(ip);
    let addrs: BTreeSet<Ipv4Addr> = port
        .fixed_ips
        .iter()
        .filter_map(|f| match f.ip_address {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
        .collect();
    if !addrs.contains(&primary) {
        return Err(ManagedPortError::PrimaryNotOnPort { port: port.id.clone(), primary: primary.into() });
    }
    let pod_ips = addrs.into_iter().filter(|ip| *ip != primary && unreleased(&IpAddr::V4(*ip))).collect();
    let (v6, ipv6_error) = match ipv6(port, &unreleased) {
        Ok(v6) => (v6, None),
        Err(e) => (None, Some(e)),
    };
    Ok(Some(Managed { vm: VmPort { port_id: port.id.clone(), v4: Hosted { primary, pod_ips }, v6 }, ipv6_error }))
}

/// The IPv6 part of a managed port: `Ok(None)` without a `primary6` tag.
fn ipv6(port: &openstack::Port, unreleased: &impl Fn(&IpAddr) -> bool) -> Result<Option<Hosted<Ipv6Addr>>, ManagedPortError> {
    let Some(value) = port.tags.iter().find_map(|t| t.strip_prefix(PRIMARY6_PREFIX)) else { return Ok(None) };
    let primary: Ipv6Addr = value.parse().map_err(|_| ManagedPortError::BadPrimary6 { port: port.id.clone(), value: value.to_string() })?;
    let subnet = port
        .fixed_ips
        .iter()
        .find(|f| f.ip_address == IpAddr::V6(primary))
        .map(|f| f.subnet_id.as_str())
        .ok_or_else(|| ManagedPortError::PrimaryNotOnPort { port: port.id.clone(), primary: primary.into() })?;
    let pod_ips = port
        .fixed_ips
        .iter()
        .filter(|f| f.subnet_id == subnet && unreleased(&f.ip_address))
        .filter_map(|f| match f.ip_address {
            IpAddr::V6(ip) if ip != primary => Some(ip),
            _ => None,
        })
        .collect();
    Ok(Some(Hosted { primary, pod_ips }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port with `ips` as (subnet, address).
    fn port_on(tags: &[&str], ips: &[(&str, &str)]) -> openstack::Port {
        serde_json::from_value(serde_json::json!({
            "id": "p1", "network_id": "n1", "mac_address": "fa:16:3e:00:00:01",
            "tags": tags,
            "fixed_ips": ips.iter().map(|(s, ip)| serde_json::json!({"subnet_id": s, "ip_address": ip})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn port(tags: &[&str], ips: &[&str]) -> openstack::Port {
        port_on(tags, &ips.iter().map(|ip| ("s1", *ip)).collect::<Vec<_>>())
    }

    fn read(p: &openstack::Port) -> Managed {
        vm_port(p).unwrap().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn managed_port_splits_primary_from_pods() {
        let p = port(&[MANAGED_TAG, "veth-route:primary=10.0.0.8"], &["10.0.0.8", "10.0.0.19", "10.0.0.20", "fd00::5"]);
        let m = read(&p);
        assert_eq!(m.vm.v4.primary, Ipv4Addr::new(10, 0, 0, 8));
        assert_eq!(m.vm.v4.pod_ips.len(), 2);
        assert_eq!((m.vm.v6, m.ipv6_error), (None, None), "no primary6 tag: no IPv6 routes, and nothing wrong");
    }

    #[test]
    fn dual_stack_port_gives_ipv6_pods_of_the_primary6_subnet_only() {
        let tags = [MANAGED_TAG, "veth-route:primary=10.0.0.8", "veth-route:primary6=fd00::8", "veth-route:released=fd00::21"];
        let ips = [
            ("v4", "10.0.0.8"),
            ("v4", "10.0.0.19"),
            ("v6", "fd00::8"),
            ("v6", "fd00::19"),
            ("v6", "fd00::20"),
            ("v6", "fd00::21"),
            // The VM's own address on a SLAAC subnet (Neutron gives every port one): not a pod.
            ("slaac", "fd01::f816:3eff:fe00:1"),
        ];
        let m = read(&port_on(&tags, &ips));
        assert_eq!(m.ipv6_error, None);
        let got = m.vm.v6.unwrap();
        assert_eq!(got.primary, v6("fd00::8"));
        assert_eq!(got.pod_ips, [v6("fd00::19"), v6("fd00::20")].into_iter().collect());
        assert_eq!(m.vm.v4.pod_ips, [Ipv4Addr::new(10, 0, 0, 19)].into_iter().collect());
    }

    #[test]
    fn an_unusable_primary6_costs_the_ipv6_routes_only() {
        for (tag, want) in [
            ("veth-route:primary6=10.0.0.8", ManagedPortError::BadPrimary6 { port: "p1".into(), value: "10.0.0.8".into() }),
            ("veth-route:primary6=junk", ManagedPortError::BadPrimary6 { port: "p1".into(), value: "junk".into() }),
            ("veth-route:primary6=fd00::9", ManagedPortError::PrimaryNotOnPort { port: "p1".into(), primary: "fd00::9".parse().unwrap() }),
        ] {
            let m = read(&port(&[MANAGED_TAG, "veth-route:primary=10.0.0.8", tag], &["10.0.0.8", "10.0.0.19", "fd00::8", "fd00::19"]));
            assert_eq!(m.vm.v6, None, "{tag}");
            assert_eq!(m.ipv6_error, Some(want), "{tag}");
            assert_eq!(m.vm.v4.pod_ips, [Ipv4Addr::new(10, 0, 0, 19)].into_iter().collect(), "{tag}: IPv4 unaffected");
        }
    }

    #[test]
    fn released_addresses_are_not_routed() {
        let tags = [MANAGED_TAG, "veth-route:primary=10.0.0.8", "veth-route:released=10.0.0.20", "veth-route:released=junk"];
        let m = read(&port(&tags, &["10.0.0.8", "10.0.0.19", "10.0.0.20"]));
        assert_eq!(m.vm.v4.pod_ips, [Ipv4Addr::new(10, 0, 0, 19)].into_iter().collect());
    }

    #[test]
    fn untagged_port_is_not_ours() {
        assert_eq!(vm_port(&port(&["veth-route:primary=10.0.0.8"], &["10.0.0.8"])).unwrap(), None);
    }

    #[test]
    fn inconsistent_marks_are_errors_not_guesses() {
        assert_eq!(vm_port(&port(&[MANAGED_TAG], &["10.0.0.8"])), Err(ManagedPortError::NoPrimary("p1".into())));
        // An IPv6 address in the IPv4 tag is no primary: families never mix.
        assert_eq!(
            vm_port(&port(&[MANAGED_TAG, "veth-route:primary=fd00::8"], &["fd00::8"])),
            Err(ManagedPortError::NoPrimary("p1".into()))
        );
        assert!(matches!(
            vm_port(&port(&[MANAGED_TAG, "veth-route:primary=10.0.0.9"], &["10.0.0.8"])),
            Err(ManagedPortError::PrimaryNotOnPort { .. })
        ));
    }
}
