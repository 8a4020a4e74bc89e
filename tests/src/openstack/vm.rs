//! A namespace playing an OpenStack VM on the local stack: its uplink `eth0` carries the
//! MAC and primary address of its own Neutron port, its default route points at the subnet
//! gateway, and the stack is relayed into it, so plugins run there as on a real VM.

use std::net::IpAddr;

use openstack::Port;

use super::{block_on, Forwarder, HarnessError, Stack};
use crate::netns::{unique, NetNs};

/// A VM namespace with its Neutron port; the port is deleted on drop.
pub struct StackVm<'a> {
    stack: &'a Stack,
    /// The namespace (plugins run here).
    pub ns: NetNs,
    /// The VM's Neutron port as created.
    pub port: Port,
    /// Its MAC (also eth0's).
    pub mac: String,
    /// The VM's own address.
    pub primary: IpAddr,
    _relay: Forwarder,
}

/// A random MAC in OpenStack's `fa:16:3e` range.
pub fn random_mac() -> String {
    let mut b = [0u8; 3];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_err() {
        b = (std::process::id() as u32).to_le_bytes()[..3].try_into().unwrap_or([0, 0, 1]);
    }
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

impl<'a> StackVm<'a> {
    /// Creates the port on `network_id` (Neutron picks the address) and the namespace.
    pub fn new(stack: &'a Stack, network_id: &str) -> Result<StackVm<'a>, HarnessError> {
        Self::in_project(stack, network_id, None)
    }

    /// As [`StackVm::new`], the port owned by `project_id` (as Nova creates it for a
    /// project's server), not by the admin project.
    pub fn in_project(stack: &'a Stack, network_id: &str, project_id: Option<&str>) -> Result<StackVm<'a>, HarnessError> {
        let mac = random_mac();
        let port = stack.create_vm_port_in(network_id, &unique("vm"), &mac, project_id)?;
        let first = port.fixed_ips.iter().find(|f| f.ip_address.is_ipv4()).ok_or("the VM port got no IPv4 address")?.clone();
        let subnet = block_on(stack.neutron().get_subnet(&first.subnet_id))?;
        let ns = NetNs::new("osvm");
        ns.ip("link add eth0 type veth peer name eth0p");
        ns.ip(&format!("link set eth0 address {mac}"));
        ns.ip(&format!("addr add {}/{} dev eth0", first.ip_address, subnet.cidr.prefix_len()));
        // On a dual-stack network the VM has its IPv6 address too (as DHCPv6 or SLAAC would
        // configure it); no DAD, which would only delay it.
        for f in port.fixed_ips.iter().filter(|f| f.ip_address.is_ipv6()) {
            let prefix = block_on(stack.neutron().get_subnet(&f.subnet_id))?.cidr.prefix_len();
            ns.ip(&format!("-6 addr add {}/{prefix} dev eth0 nodad", f.ip_address));
        }
        ns.ip("link set eth0 up");
        ns.ip("link set eth0p up");
        if let Some(gw) = subnet.gateway_ip {
            ns.ip(&format!("route add default via {gw} dev eth0"));
        }
        let relay = stack.expose_in(ns.path())?;
        Ok(StackVm { stack, ns, mac, primary: first.ip_address, port, _relay: relay })
    }
}

impl Drop for StackVm<'_> {
    fn drop(&mut self) {
        let _ = self.stack.delete_port(&self.port.id);
    }
}
