//! Quarantine of released addresses: with `quarantineSeconds`, an address a pod no longer
//! uses is not removed from the VM port at once. It stays there, so Neutron hands it to no
//! other VM while the router may still route it here, and is tagged
//! `veth-route:released=<ip>`, which tells vrouter-route-controller to withdraw its route.
//! A later ADD, DEL or GC removes it (and the tag) once the time is up.

use std::net::IpAddr;

use openstack::Neutron;

use crate::error::IpamError;
use crate::resend;
use crate::store::{Lease, Quarantined, State};

/// Prefix of the tag of a quarantined address (tags hold at most 60 characters).
pub const RELEASED_PREFIX: &str = "veth-route:released=";
/// Neutron allows 50 tags per port; leave room for the marks and the operator's own.
const MAX_QUARANTINED: usize = 40;

/// The tag of a quarantined address.
pub fn tag(ip: IpAddr) -> String {
    format!("{RELEASED_PREFIX}{ip}")
}

/// Puts `leases` in quarantine (one tag write each); returns those that did not fit and
/// must be released at once.
pub async fn enter(neutron: &Neutron, port_id: &str, state: &mut State, leases: Vec<Lease>, now: u64) -> Result<Vec<IpAddr>, IpamError> {
    let mut overflow = Vec::new();
    for lease in leases {
        if state.quarantine.len() >= MAX_QUARANTINED {
            log::warn!("quarantine is full ({MAX_QUARANTINED} addresses); releasing {} at once", lease.ip);
            overflow.push(lease.ip);
            continue;
        }
        let tag = tag(lease.ip);
        resend::idempotent(&format!("tagging port {port_id} {tag}"), || neutron.add_port_tag(port_id, &tag)).await?;
        state.quarantine.push(Quarantined { lease, since: now });
    }
    Ok(overflow)
}

/// Addresses whose quarantine of `seconds` is over at `now` (all of them when it is 0).
pub fn expired(state: &State, seconds: u64, now: u64) -> Vec<IpAddr> {
    state.quarantine.iter().filter(|q| seconds == 0 || q.since.saturating_add(seconds) <= now).map(|q| q.lease.ip).collect()
}

/// Forgets `released` (already removed from the port) and removes their tags.
pub async fn leave(neutron: &Neutron, port_id: &str, state: &mut State, released: &[IpAddr]) -> Result<(), IpamError> {
    for ip in released {
        let tag = tag(*ip);
        resend::idempotent(&format!("untagging port {port_id} {tag}"), || neutron.remove_port_tag(port_id, &tag)).await?;
    }
    state.quarantine.retain(|q| !released.contains(&q.lease.ip));
    Ok(())
}
