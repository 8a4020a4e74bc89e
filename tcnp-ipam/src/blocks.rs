//! Node-affine blocks: a node claims a whole aligned block (e.g. a /28) of the subnet on its
//! VM port at once and serves pods from it, so vrouter-route-controller can route the block
//! with one route instead of one /32 per pod (the router holds 30 routes by default).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use openstack::Neutron;

use crate::error::IpamError;

/// Aligned blocks of `/prefix` in the subnet that lie wholly inside its allocation pools
/// and hold no address of any port yet, lowest first.
pub async fn free_blocks(neutron: &Neutron, subnet_id: &str, prefix: u8) -> Result<Vec<IpNet>, IpamError> {
    let subnet = neutron.get_subnet(subnet_id).await?;
    if prefix < subnet.cidr.prefix_len() || prefix > subnet.cidr.max_prefix_len() {
        return Err(IpamError::Config(format!("nodeBlocks.prefixLength /{prefix} does not fit subnet {}", subnet.cidr)));
    }
    let ports = neutron
        .list_ports(&[
            ("network_id", &subnet.network_id),
            ("fields", "id"),
            ("fields", "network_id"),
            ("fields", "mac_address"),
            ("fields", "fixed_ips"),
        ])
        .await?;
    let used: HashSet<IpAddr> = ports.iter().flat_map(|p| p.fixed_ips.iter().map(|f| f.ip_address)).collect();
    let in_pool = |ip: IpAddr| subnet.allocation_pools.iter().any(|p| p.start <= ip && ip <= p.end);
    let blocks = subnet.cidr.subnets(prefix).map_err(|e| IpamError::Config(e.to_string()))?;
    Ok(blocks.filter(|b| addresses(b).all(|ip| in_pool(ip) && !used.contains(&ip))).collect())
}

/// The free block a node tries first: the one at a hash of its port id, so that nodes
/// brought up together do not all race for the lowest free block.
pub fn spread(free: &[IpNet], port_id: &str) -> Option<IpNet> {
    // FNV-1a: stable across builds and machines, unlike std's randomly keyed hasher.
    let hash = port_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (!free.is_empty()).then(|| free[(hash % free.len() as u64) as usize])
}

/// Every address of a block, network and broadcast included (they are ordinary host
/// addresses of the enclosing subnet).
pub fn addresses(block: &IpNet) -> impl Iterator<Item = IpAddr> {
    let (first, last) = (block.network(), block.broadcast());
    let (a, b) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b))),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b)),
        _ => (1, 0),
    };
    let v4 = first.is_ipv4();
    (a..=b).map(move |n| if v4 { IpAddr::V4((n as u32).into()) } else { IpAddr::V6(n.into()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_claims_of_different_nodes_spread_over_the_free_blocks() {
        let free: Vec<IpNet> = "10.0.0.0/24".parse::<IpNet>().unwrap().subnets(28).unwrap().collect();
        let picks: std::collections::HashSet<IpNet> =
            (0..8).map(|i| spread(&free, &format!("5c2f7a1e-0000-4000-8000-00000000000{i}")).unwrap()).collect();
        assert!(picks.len() >= 5, "8 nodes should mostly pick different blocks: {picks:?}");
        assert_eq!(spread(&free, "p"), spread(&free, "p"), "stable per node");
        assert_eq!(spread(&[], "p"), None);
    }

    #[test]
    fn block_addresses_include_both_ends() {
        let b: IpNet = "10.0.0.16/28".parse().unwrap();
        let all: Vec<IpAddr> = addresses(&b).collect();
        assert_eq!(all.len(), 16);
        assert_eq!(all[0], "10.0.0.16".parse::<IpAddr>().unwrap());
        assert_eq!(all[15], "10.0.0.31".parse::<IpAddr>().unwrap());
    }
}
