//! Node-affine blocks: a node claims a whole aligned block (e.g. a /28, or a /124 of an IPv6
//! subnet) of the subnet on its VM port at once and serves pods from it, so
//! vrouter-route-controller can route the block with one route instead of one host route
//! per pod (the router holds 30 routes by default).

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use openstack::{Neutron, Subnet};

use crate::error::IpamError;

/// Above this many candidate blocks (an IPv6 /64 has 2^60 /124s) they are probed from the
/// node's hash instead of listed.
const LIST_LIMIT: u128 = 1 << 20;

/// A free aligned block of `/prefix` in the subnet for the node of `port_id`: wholly inside
/// one allocation pool and holding no address of any port yet. `None`: there is none.
pub async fn pick_free(neutron: &Neutron, subnet_id: &str, prefix: u8, port_id: &str) -> Result<Option<IpNet>, IpamError> {
    let subnet = neutron.get_subnet(subnet_id).await?;
    if prefix < subnet.cidr.prefix_len() || prefix > subnet.cidr.max_prefix_len() {
        return Err(IpamError::Config(format!("nodeBlocks: a /{prefix} block does not fit subnet {}", subnet.cidr)));
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
    Ok(Candidates::of(&subnet, prefix).pick(&used, port_id))
}

/// The aligned blocks of one size inside a subnet's allocation pools, numbered across the
/// pools, as integer ranges (both families fit in u128).
struct Candidates {
    v4: bool,
    prefix: u8,
    size: u128,
    /// Per pool: the first aligned block's first address and how many blocks follow it.
    runs: Vec<(u128, u128)>,
}

impl Candidates {
    fn of(subnet: &Subnet, prefix: u8) -> Candidates {
        let size = 1u128 << (subnet.cidr.max_prefix_len() - prefix);
        let runs = subnet
            .allocation_pools
            .iter()
            .filter_map(|p| {
                let (start, end) = (number(p.start), number(p.end));
                let first = start.div_ceil(size).checked_mul(size)?;
                let last = end.checked_add(1)?.checked_sub(size)? / size * size;
                (first <= last).then(|| (first, (last - first) / size + 1))
            })
            .collect();
        Candidates { v4: subnet.cidr.addr().is_ipv4(), prefix, size, runs }
    }

    fn total(&self) -> u128 {
        self.runs.iter().map(|r| r.1).sum()
    }

    /// Block number `i` (below `total`).
    fn nth(&self, mut i: u128) -> u128 {
        for (first, count) in &self.runs {
            if i < *count {
                return first + i * self.size;
            }
            i -= count;
        }
        unreachable!("block number beyond the pools")
    }

    /// The node's pick among the free blocks, at a hash of its port id, so that nodes
    /// brought up together do not all race for the lowest free block.
    fn pick(&self, used: &HashSet<IpAddr>, port_id: &str) -> Option<IpNet> {
        let used: BTreeSet<u128> = used.iter().filter(|ip| ip.is_ipv4() == self.v4).map(|ip| number(*ip)).collect();
        let free = |first: &u128| used.range(*first..=*first + (self.size - 1)).next().is_none();
        // FNV-1a: stable across builds and machines, unlike std's randomly keyed hasher.
        let hash = port_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let total = self.total();
        let first = if total <= LIST_LIMIT {
            let free: Vec<u128> = (0..total).map(|i| self.nth(i)).filter(free).collect();
            (!free.is_empty()).then(|| free[(u128::from(hash) % free.len() as u128) as usize])
        } else {
            // Each used address spoils at most one block, so of `used + 1` blocks in a row
            // at least one is free.
            let start = u128::from(hash) % total;
            (0..(used.len() as u128 + 1)).map(|k| self.nth((start + k) % total)).find(free)
        }?;
        Some(IpNet::new(address(first, self.v4), self.prefix).expect("checked against the subnet"))
    }
}

fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    }
}

fn address(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4((n as u32).into())
    } else {
        IpAddr::V6(n.into())
    }
}

/// Every address of a block, network and broadcast included (they are ordinary host
/// addresses of the enclosing subnet).
pub fn addresses(block: &IpNet) -> impl Iterator<Item = IpAddr> {
    let v4 = block.addr().is_ipv4();
    (number(block.network())..=number(block.broadcast())).map(move |n| address(n, v4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(cidr: &str, pools: &[(&str, &str)]) -> Subnet {
        let pools: Vec<serde_json::Value> = pools.iter().map(|(s, e)| serde_json::json!({"start": s, "end": e})).collect();
        serde_json::from_value(serde_json::json!({
            "id": "s", "network_id": "n", "cidr": cidr, "ip_version": if cidr.contains(':') { 6 } else { 4 },
            "gateway_ip": null, "allocation_pools": pools,
        }))
        .unwrap()
    }

    fn ips(list: &[&str]) -> HashSet<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn first_claims_of_different_nodes_spread_over_the_free_blocks() {
        let c = Candidates::of(&subnet("10.0.0.0/24", &[("10.0.0.0", "10.0.0.255")]), 28);
        let picks: HashSet<IpNet> =
            (0..8).map(|i| c.pick(&HashSet::new(), &format!("5c2f7a1e-0000-4000-8000-00000000000{i}")).unwrap()).collect();
        assert!(picks.len() >= 5, "8 nodes should mostly pick different blocks: {picks:?}");
        assert_eq!(c.pick(&HashSet::new(), "p"), c.pick(&HashSet::new(), "p"), "stable per node");
    }

    #[test]
    fn blocks_lie_wholly_inside_a_pool_and_hold_no_used_address() {
        // Neutron's default pool leaves out .0, the gateway .1 and .255.
        let s = subnet("10.0.0.0/27", &[("10.0.0.2", "10.0.0.30")]);
        let c = Candidates::of(&s, 28);
        assert_eq!(c.total(), 0, "neither /28 of the /27 is wholly in the pool");
        let c = Candidates::of(&subnet("10.0.0.0/26", &[("10.0.0.2", "10.0.0.62")]), 28);
        assert_eq!(c.total(), 2, ".16/28 and .32/28");
        for port in ["a", "b", "c", "d"] {
            assert_eq!(c.pick(&ips(&["10.0.0.20"]), port), Some(net("10.0.0.32/28")));
        }
        assert_eq!(c.pick(&ips(&["10.0.0.20", "10.0.0.47"]), "a"), None);
        // An IPv6 address in the same numeric range does not spoil an IPv4 block.
        assert!(c.pick(&ips(&["::a00:14"]), "a").is_some());
    }

    #[test]
    fn ipv6_blocks_are_probed_from_the_nodes_hash_in_a_slash_64() {
        let s = subnet("fd00:1::/64", &[("fd00:1::2", "fd00:1::ffff:ffff:ffff:ffff")]);
        let c = Candidates::of(&s, 124);
        assert_eq!(c.total(), (1u128 << 60) - 1, "all /124s but the gateway's");
        let block = c.pick(&HashSet::new(), "port-a").unwrap();
        assert_eq!(block.prefix_len(), 124);
        assert!(net("fd00:1::/64").contains(&block) && block != net("fd00:1::/124"));
        // Taken: the next block after it in the hash order.
        let taken: HashSet<IpAddr> = [block.network()].into();
        let next = c.pick(&taken, "port-a").unwrap();
        assert_ne!(next, block);
        assert!(!next.contains(&block.network()));
        assert_ne!(c.pick(&HashSet::new(), "port-b"), Some(block), "another node starts elsewhere");
    }

    #[test]
    fn a_narrow_ipv6_pool_is_searched_whole() {
        let s = subnet("fd00:1::/64", &[("fd00:1::100", "fd00:1::11f")]);
        let c = Candidates::of(&s, 124);
        assert_eq!(c.total(), 2);
        assert_eq!(c.pick(&ips(&["fd00:1::105"]), "x"), Some(net("fd00:1::110/124")));
    }

    #[test]
    fn block_addresses_include_both_ends() {
        let all: Vec<IpAddr> = addresses(&net("10.0.0.16/28")).collect();
        assert_eq!(all.len(), 16);
        assert_eq!(all[0], "10.0.0.16".parse::<IpAddr>().unwrap());
        assert_eq!(all[15], "10.0.0.31".parse::<IpAddr>().unwrap());
        let all: Vec<IpAddr> = addresses(&net("fd00::10/124")).collect();
        assert_eq!((all.len(), all[15]), (16, "fd00::1f".parse::<IpAddr>().unwrap()));
    }
}
