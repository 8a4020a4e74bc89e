//! IP masquerading per attachment, as the reference plugins' `ipMasq`: a chain
//! `CNI-VR-<hash>` in the nat table, jumped to from POSTROUTING for the pod's source
//! address, every rule tagged with the attachment so DEL and GC need no state. A
//! dual-stack pod gets the same chain in ip6tables' nat table for its IPv6 address.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Result;
use crate::names::MASQ_CHAIN_PREFIX;
use crate::xtables::{self, deletion, rule, Family, Table};

fn family(ip: IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// The nat table of `family`, read once per operation (see `xtables`).
fn read_nat(family: Family) -> Result<Table> {
    Table::read(family, "nat")
}

/// The nat tables to clean up: IPv4's, and IPv6's when ip6tables is installed and `ipv6`
/// says the attachment may have rules there.
fn nat_tables(ipv6: bool) -> Result<Vec<Table>> {
    let mut tables = vec![read_nat(Family::V4)?];
    if ipv6 {
        tables.extend(Table::read_if_installed(Family::V6, "nat")?);
    }
    Ok(tables)
}

/// POSTROUTING rules of `nat` that jump to `chain`.
fn jumps_to<'a>(nat: &'a Table, chain: &'a str) -> impl Iterator<Item = &'a Vec<String>> {
    nat.rules_of("POSTROUTING").filter(move |r| r.windows(2).any(|w| w[0] == "-j" && w[1] == chain))
}

/// The pod's source as iptables lists it: a host prefix.
fn host_prefix(ip: IpAddr) -> String {
    IpNet::from(ip).to_string()
}

/// Masquerade traffic from `pod` (address with subnet) leaving its subnet, except multicast.
/// Declaring the chain creates it, or flushes what a crashed ADD left in it.
pub fn setup(chain: &str, tag: &str, pod: IpNet) -> Result<()> {
    let nat = read_nat(family(pod.addr()))?;
    let subnet = pod.trunc().to_string();
    let src = host_prefix(pod.addr());
    let multicast = if pod.addr().is_ipv4() { "224.0.0.0/4" } else { "ff00::/8" };
    let mut tx = vec![
        format!(":{chain} - [0:0]"),
        rule(&["-A", chain, "-d", &subnet, "-m", "comment", "--comment", tag, "-j", "ACCEPT"]),
        rule(&["-A", chain, "!", "-d", multicast, "-m", "comment", "--comment", tag, "-j", "MASQUERADE"]),
    ];
    if !jumps_to(&nat, chain).any(|r| r.contains(&src)) {
        tx.push(rule(&["-A", "POSTROUTING", "-s", &src, "-m", "comment", "--comment", tag, "-j", chain]));
    }
    nat.apply(&tx)
}

/// Remove the chain and the POSTROUTING jumps to it, from IPv6's nat table too when `ipv6`;
/// fine when already gone.
pub fn teardown(chain: &str, ipv6: bool) -> Result<()> {
    nat_tables(ipv6)?.iter().try_for_each(|nat| teardown_in(nat, chain))
}

fn teardown_in(nat: &Table, chain: &str) -> Result<()> {
    let mut tx: Vec<String> = jumps_to(nat, chain).map(|r| deletion(r)).collect();
    if nat.has_chain(chain) {
        // Declared (which flushes it), then deleted.
        tx.push(format!(":{chain} - [0:0]"));
        tx.push(format!("-X {chain}"));
    }
    nat.apply(&tx)
}

/// Whether `chain` and its POSTROUTING jump from `pod_ip` exist in `pod_ip`'s family's nat
/// table (for CHECK).
pub fn check(chain: &str, pod_ip: IpAddr) -> Result<Vec<String>> {
    let nat = read_nat(family(pod_ip))?;
    let program = if pod_ip.is_ipv4() { "iptables" } else { "ip6tables" };
    let mut diffs = Vec::new();
    if !nat.has_chain(chain) {
        diffs.push(format!("masquerade chain {chain} is missing ({program})"));
    } else if !nat.rules_of(chain).any(|r| r.iter().any(|w| w == "MASQUERADE")) {
        diffs.push(format!("masquerade chain {chain} has no MASQUERADE rule ({program})"));
    }
    let src = host_prefix(pod_ip);
    if !jumps_to(&nat, chain).any(|r| r.contains(&src)) {
        diffs.push(format!("POSTROUTING has no jump from {src} to {chain} ({program})"));
    }
    Ok(diffs)
}

/// Attachments (container ID, ifname) of `network` that have masquerade rules, in either
/// family.
pub fn attachments(network: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for nat in nat_tables(true)? {
        for key in xtables::attachments(nat.rules.iter(), network) {
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    Ok(out)
}

/// Remove chains of ours that have no rules and nothing jumping to them: what a crash
/// between `-N` and `-A` of an older, non-transactional build left. Their attachment is
/// unknown (the name is a hash), so no network's GC would otherwise ever find them.
pub fn remove_orphan_chains() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for nat in nat_tables(true)? {
        let orphans: Vec<String> = nat
            .chains
            .iter()
            .filter(|c| c.starts_with(MASQ_CHAIN_PREFIX) && nat.rules_of(c).next().is_none() && jumps_to(&nat, c).next().is_none())
            .cloned()
            .collect();
        for c in &orphans {
            teardown_in(&nat, c)?;
        }
        removed.extend(orphans);
    }
    Ok(removed)
}
