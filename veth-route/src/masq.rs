//! IP masquerading per attachment, as the reference plugins' `ipMasq`: a chain
//! `CNI-VR-<hash>` in the nat table, jumped to from POSTROUTING for the pod's source
//! address, every rule tagged with the attachment so DEL and GC need no state.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::Result;
use crate::names::MASQ_CHAIN_PREFIX;
use crate::xtables::{self, deletion, rule, Family, Table};

/// The nat table, read once per operation (see `xtables`).
fn read_nat() -> Result<Table> {
    Table::read(Family::V4, "nat")
}

/// POSTROUTING rules of `nat` that jump to `chain`.
fn jumps_to<'a>(nat: &'a Table, chain: &'a str) -> impl Iterator<Item = &'a Vec<String>> {
    nat.rules_of("POSTROUTING").filter(move |r| r.windows(2).any(|w| w[0] == "-j" && w[1] == chain))
}

/// Masquerade traffic from `pod` (address with subnet) leaving its subnet, except multicast.
/// Declaring the chain creates it, or flushes what a crashed ADD left in it.
pub fn setup(chain: &str, tag: &str, pod: Ipv4Net) -> Result<()> {
    let nat = read_nat()?;
    let subnet = pod.trunc().to_string();
    let src = Ipv4Net::new(pod.addr(), 32).expect("/32").to_string();
    let mut tx = vec![
        format!(":{chain} - [0:0]"),
        rule(&["-A", chain, "-d", &subnet, "-m", "comment", "--comment", tag, "-j", "ACCEPT"]),
        rule(&["-A", chain, "!", "-d", "224.0.0.0/4", "-m", "comment", "--comment", tag, "-j", "MASQUERADE"]),
    ];
    if !jumps_to(&nat, chain).any(|r| r.contains(&src)) {
        tx.push(rule(&["-A", "POSTROUTING", "-s", &src, "-m", "comment", "--comment", tag, "-j", chain]));
    }
    nat.apply(&tx)
}

/// Remove the chain and the POSTROUTING jumps to it; fine when already gone.
pub fn teardown(chain: &str) -> Result<()> {
    teardown_in(&read_nat()?, chain)
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

/// Whether `chain` and its POSTROUTING jump from `pod_ip` exist (for CHECK).
pub fn check(chain: &str, pod_ip: Ipv4Addr) -> Result<Vec<String>> {
    let nat = read_nat()?;
    let mut diffs = Vec::new();
    if !nat.has_chain(chain) {
        diffs.push(format!("masquerade chain {chain} is missing"));
    } else if !nat.rules_of(chain).any(|r| r.iter().any(|w| w == "MASQUERADE")) {
        diffs.push(format!("masquerade chain {chain} has no MASQUERADE rule"));
    }
    let src = format!("{pod_ip}/32");
    if !jumps_to(&nat, chain).any(|r| r.contains(&src)) {
        diffs.push(format!("POSTROUTING has no jump from {src} to {chain}"));
    }
    Ok(diffs)
}

/// Attachments (container ID, ifname) of `network` that have masquerade rules.
pub fn attachments(network: &str) -> Result<Vec<(String, String)>> {
    Ok(xtables::attachments(read_nat()?.rules.iter(), network))
}

/// Remove chains of ours that have no rules and nothing jumping to them: what a crash
/// between `-N` and `-A` of an older, non-transactional build left. Their attachment is
/// unknown (the name is a hash), so no network's GC would otherwise ever find them.
pub fn remove_orphan_chains() -> Result<Vec<String>> {
    let nat = read_nat()?;
    let orphans: Vec<String> = nat
        .chains
        .iter()
        .filter(|c| c.starts_with(MASQ_CHAIN_PREFIX) && nat.rules_of(c).next().is_none() && jumps_to(&nat, c).next().is_none())
        .cloned()
        .collect();
    for c in &orphans {
        teardown_in(&nat, c)?;
    }
    Ok(orphans)
}
