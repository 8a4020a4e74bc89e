//! IPv6 anti-spoofing in the kernel for a dual-stack pod: one rule per pod in ip6tables'
//! raw PREROUTING, `-i <host veth> -m rpfilter --invert -j DROP`, tagged with the
//! attachment. IPv6 has no `rp_filter` sysctl; the `rpfilter` match is its strict
//! reverse-path check: the only route back to the pod's address is its /128 through this
//! veth, so every other source (another pod's, the uplink subnet's, anything routed by
//! default) fails and is dropped before routing. Link-local sources are looked up on the
//! arriving veth (its fe80::/64) and pass; they never leave the link (`ip6_forward` refuses
//! them). IPv4-only pods need none of this: their host veth takes no IPv6 at all
//! (`antispoof`).
//!
//! Per pod rather than one rule for a name prefix: host veths are named `veth…`, as other
//! CNIs' and container engines' are, and a prefix rule would police theirs too. The rule
//! names the veth, so it outlives it: DEL removes it by tag, and GC sweeps stale tags.

use crate::error::Result;
use crate::xtables::{self, deletion, rule, Family, Table};

fn read_raw() -> Result<Table> {
    Table::read(Family::V6, "raw")
}

/// The raw table, or `None` on a host without ip6tables: it can hold no rule of ours.
fn read_raw_if_installed() -> Result<Option<Table>> {
    Table::read_if_installed(Family::V6, "raw")
}

/// The words of the guard rule of `host_veth`, after `-A PREROUTING` / `-I PREROUTING`.
fn guard_rule<'a>(host_veth: &'a str, tag: &'a str) -> [&'a str; 11] {
    ["-i", host_veth, "-m", "rpfilter", "--invert", "-m", "comment", "--comment", tag, "-j", "DROP"]
}

/// Whether `words` (a `-S` line) is the guard rule of `host_veth` with `tag`.
fn is_guard(words: &[String], host_veth: &str, tag: &str) -> bool {
    words.len() == 13
        && words[0] == "-A"
        && words[1] == "PREROUTING"
        && words[2..].iter().zip(guard_rule(host_veth, tag)).all(|(a, b)| a == b)
}

/// Drop IPv6 from the pod behind `host_veth` whose source does not route back through it.
/// Inserted first in PREROUTING, so no accept rule of another chain runs before it; a no-op
/// when the rule is there already.
pub fn guard(host_veth: &str, tag: &str) -> Result<()> {
    let raw = read_raw()?;
    if raw.rules_of("PREROUTING").any(|r| is_guard(r, host_veth, tag)) {
        return Ok(());
    }
    let mut words = vec!["-I", "PREROUTING", "1"];
    words.extend(guard_rule(host_veth, tag));
    raw.apply(&[rule(&words)])
}

/// Remove the guard rules tagged `tag`; fine when there are none.
pub fn unguard(tag: &str) -> Result<()> {
    let Some(raw) = read_raw_if_installed()? else { return Ok(()) };
    let tx: Vec<String> = raw.rules_of("PREROUTING").filter(|r| xtables::comment(r) == Some(tag)).map(|r| deletion(r)).collect();
    raw.apply(&tx)
}

/// What CHECK finds wrong: the guard rule of `host_veth` missing.
pub fn check(host_veth: &str, tag: &str) -> Result<Vec<String>> {
    let raw = read_raw()?;
    Ok(if raw.rules_of("PREROUTING").any(|r| is_guard(r, host_veth, tag)) {
        Vec::new()
    } else {
        vec![format!("anti-spoofing: ip6tables -t raw PREROUTING has no rpfilter rule for host veth {host_veth}")]
    })
}

/// The host veths that have a guard rule of ours (any network), for `veth-route stats`.
pub fn guarded_veths() -> Result<Vec<String>> {
    let Some(raw) = read_raw_if_installed()? else { return Ok(Vec::new()) };
    Ok(raw
        .rules_of("PREROUTING")
        .filter(|r| xtables::comment(r).is_some_and(crate::names::is_tag) && r.iter().any(|w| w == "rpfilter"))
        .filter_map(|r| r.windows(2).find(|w| w[0] == "-i").map(|w| w[1].clone()))
        .collect())
}

/// Attachments (container ID, ifname) of `network` with a guard rule, for GC.
pub fn attachments(network: &str) -> Result<Vec<(String, String)>> {
    Ok(match read_raw_if_installed()? {
        Some(raw) => xtables::attachments(raw.rules_of("PREROUTING"), network),
        None => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_its_rule_as_ip6tables_lists_it() {
        let line = "-A PREROUTING -i veth2423e986 -m rpfilter --invert -m comment --comment veth-route/n/c1/eth0 -j DROP";
        let words = xtables::split_rule(line);
        assert!(is_guard(&words, "veth2423e986", "veth-route/n/c1/eth0"));
        assert!(!is_guard(&words, "veth00000000", "veth-route/n/c1/eth0"));
        assert!(!is_guard(&words, "veth2423e986", "veth-route/n/c2/eth0"));
    }
}
