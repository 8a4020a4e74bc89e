//! Collapses host routes into aligned blocks when every address of the block sits behind one VM.
//!
//! "Behind one VM" means: each address of the block is a non-primary fixed IP of that VM's
//! port (a pod or a warm spare). Nothing else can be in such a block, so a block route never
//! steals traffic from another VM or from an on-link address of the subnet. The same holds
//! for both families (tcnp-ipam's node blocks are /28s and /124s by default).

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::model::HostAddr;

/// The fewest aligned prefixes that cover exactly `ips`, none shorter than `/min_prefix`
/// (a prefix length of the addresses' family).
pub fn collapse<A: HostAddr>(ips: &BTreeSet<A>, min_prefix: u8) -> Vec<IpNet> {
    let hosts: Vec<IpNet> = ips.iter().map(|ip| ip.host_net()).collect();
    let mut out = Vec::new();
    for net in IpNet::aggregate(&hosts) {
        split_to_min_prefix(net, min_prefix, &mut out);
    }
    out
}

/// `aggregate` may merge into very large blocks; cap how wide one route may be.
fn split_to_min_prefix(net: IpNet, min_prefix: u8, out: &mut Vec<IpNet>) {
    if net.prefix_len() >= min_prefix {
        out.push(net);
    } else {
        out.extend(net.subnets(min_prefix).expect("min_prefix within the family"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ips(list: &[&str]) -> BTreeSet<Ipv4Addr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn full_aligned_block_becomes_one_prefix() {
        let block: BTreeSet<Ipv4Addr> = (16..32).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        assert_eq!(collapse(&block, 16), nets(&["10.0.0.16/28"]));
    }

    #[test]
    fn unaligned_run_splits_into_aligned_blocks() {
        // .17-.20 is four addresses but not one aligned /30.
        let got = collapse(&ips(&["10.0.0.17", "10.0.0.18", "10.0.0.19", "10.0.0.20"]), 16);
        assert_eq!(got, nets(&["10.0.0.17/32", "10.0.0.18/31", "10.0.0.20/32"]));
    }

    #[test]
    fn a_missing_address_prevents_the_block() {
        let mut block: BTreeSet<Ipv4Addr> = (16..32).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        block.remove(&Ipv4Addr::new(10, 0, 0, 20));
        let got = collapse(&block, 16);
        assert!(!got.iter().any(|n| n.prefix_len() == 28), "{got:?}");
        let covered: u32 = got.iter().map(|n| 1u32 << (32 - n.prefix_len())).sum();
        assert_eq!(covered, 15);
    }

    #[test]
    fn min_prefix_caps_block_width() {
        let block: BTreeSet<Ipv4Addr> = (0..=255).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect();
        assert_eq!(collapse(&block, 26).len(), 4);
        assert_eq!(collapse(&block, 24), nets(&["10.0.1.0/24"]));
    }

    #[test]
    fn empty_set_gives_no_routes() {
        assert!(collapse(&BTreeSet::<Ipv4Addr>::new(), 24).is_empty());
    }

    #[test]
    fn ipv6_blocks_collapse_alike() {
        let block: BTreeSet<Ipv6Addr> = (0x30..0x40).map(|i| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)).collect();
        assert_eq!(collapse(&block, 120), nets(&["fd00::30/124"]));
        let mut gap = block.clone();
        gap.remove(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x35));
        assert_eq!(collapse(&gap, 120).len(), 4, "{:?}", collapse(&gap, 120));
        assert_eq!(collapse(&block, 126).len(), 4, "capped at /126");
    }
}
