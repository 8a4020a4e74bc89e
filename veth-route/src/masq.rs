//! IP masquerading per attachment, as the reference plugins' `ipMasq`: a chain
//! `CNI-VR-<hash>` in the nat table, jumped to from POSTROUTING for the pod's source
//! address, every rule tagged with the attachment so DEL and GC need no state.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::error::{Error, Result};
use crate::names::{self, MASQ_CHAIN_PREFIX};

/// The nat table as `iptables -S` lists it, read once per operation. Every change is then
/// decided from it and applied as one `iptables-restore --noflush` transaction, so no
/// decision depends on the text of an iptables error, and a crash never leaves half a
/// setup (a chain without its rules).
struct NatTable {
    /// User-defined chains.
    chains: Vec<String>,
    /// Rules as words: `-A`, the chain, then the rule.
    rules: Vec<Vec<String>>,
}

impl NatTable {
    fn read() -> Result<NatTable> {
        // -w: wait for the xtables lock instead of failing under concurrent ADDs.
        let out = Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output().map_err(Error::io("run iptables"))?;
        if !out.status.success() {
            return Err(Error::Command(format!("iptables -t nat -S: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let chains = text.lines().filter_map(|l| l.strip_prefix("-N ")).map(str::to_string).collect();
        let rules = text.lines().filter(|l| l.starts_with("-A ")).map(split_rule).collect();
        Ok(NatTable { chains, rules })
    }

    fn has_chain(&self, chain: &str) -> bool {
        self.chains.iter().any(|c| c == chain)
    }

    /// Rules of `chain`.
    fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Vec<String>> {
        self.rules.iter().filter(move |r| r.get(1).map(String::as_str) == Some(chain))
    }

    /// POSTROUTING rules that jump to `chain`.
    fn jumps_to<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Vec<String>> {
        self.rules_of("POSTROUTING").filter(move |r| r.windows(2).any(|w| w[0] == "-j" && w[1] == chain))
    }
}

/// Apply `lines` to the nat table as one transaction (all or nothing).
fn apply(lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let input = format!("*nat\n{}\nCOMMIT\n", lines.join("\n"));
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io("run iptables-restore"))?;
    child.stdin.take().expect("piped stdin").write_all(input.as_bytes()).map_err(Error::io("write to iptables-restore"))?;
    let out = child.wait_with_output().map_err(Error::io("wait for iptables-restore"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command(format!("iptables-restore -t nat ({}): {}", lines.join("; "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// One rule for iptables-restore, words quoted where `iptables -S` quoted them.
fn rule(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '"') {
                format!("\"{}\"", w.replace('"', "\\\""))
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Masquerade traffic from `pod` (address with subnet) leaving its subnet, except multicast.
/// Declaring the chain creates it, or flushes what a crashed ADD left in it.
pub fn setup(chain: &str, tag: &str, pod: Ipv4Net) -> Result<()> {
    let nat = NatTable::read()?;
    let subnet = pod.trunc().to_string();
    let src = Ipv4Net::new(pod.addr(), 32).expect("/32").to_string();
    let mut tx = vec![
        format!(":{chain} - [0:0]"),
        rule(&["-A", chain, "-d", &subnet, "-m", "comment", "--comment", tag, "-j", "ACCEPT"]),
        rule(&["-A", chain, "!", "-d", "224.0.0.0/4", "-m", "comment", "--comment", tag, "-j", "MASQUERADE"]),
    ];
    if !nat.jumps_to(chain).any(|r| r.contains(&src)) {
        tx.push(rule(&["-A", "POSTROUTING", "-s", &src, "-m", "comment", "--comment", tag, "-j", chain]));
    }
    apply(&tx)
}

/// Remove the chain and the POSTROUTING jumps to it; fine when already gone.
pub fn teardown(chain: &str) -> Result<()> {
    teardown_in(&NatTable::read()?, chain)
}

fn teardown_in(nat: &NatTable, chain: &str) -> Result<()> {
    let mut tx: Vec<String> = nat
        .jumps_to(chain)
        .map(|r| {
            let mut words: Vec<&str> = r.iter().map(String::as_str).collect();
            words[0] = "-D";
            rule(&words)
        })
        .collect();
    if nat.has_chain(chain) {
        // Declared (which flushes it), then deleted.
        tx.push(format!(":{chain} - [0:0]"));
        tx.push(format!("-X {chain}"));
    }
    apply(&tx)
}

/// Whether `chain` and its POSTROUTING jump from `pod_ip` exist (for CHECK).
pub fn check(chain: &str, pod_ip: Ipv4Addr) -> Result<Vec<String>> {
    let nat = NatTable::read()?;
    let mut diffs = Vec::new();
    if !nat.has_chain(chain) {
        diffs.push(format!("masquerade chain {chain} is missing"));
    } else if !nat.rules_of(chain).any(|r| r.iter().any(|w| w == "MASQUERADE")) {
        diffs.push(format!("masquerade chain {chain} has no MASQUERADE rule"));
    }
    let src = format!("{pod_ip}/32");
    if !nat.jumps_to(chain).any(|r| r.contains(&src)) {
        diffs.push(format!("POSTROUTING has no jump from {src} to {chain}"));
    }
    Ok(diffs)
}

/// Attachments (container ID, ifname) of `network` that have masquerade rules.
pub fn attachments(network: &str) -> Result<Vec<(String, String)>> {
    let nat = NatTable::read()?;
    let mut out: Vec<(String, String)> = Vec::new();
    for words in &nat.rules {
        let tag = words.windows(2).find(|w| w[0] == "--comment").map(|w| w[1].clone());
        if let Some((id, ifname)) = tag.as_deref().and_then(|t| names::parse_tag(t, network)) {
            let key = (id.to_string(), ifname.to_string());
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
    let nat = NatTable::read()?;
    let orphans: Vec<String> = nat
        .chains
        .iter()
        .filter(|c| c.starts_with(MASQ_CHAIN_PREFIX) && nat.rules_of(c).next().is_none() && nat.jumps_to(c).next().is_none())
        .cloned()
        .collect();
    for c in &orphans {
        teardown_in(&nat, c)?;
    }
    Ok(orphans)
}

/// Split one `iptables -S` line into words, honouring double quotes and backslashes.
fn split_rule(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped, mut any) = (false, false, false);
    for c in line.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
            any = true;
        } else if c.is_whitespace() && !quoted {
            if any || !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
                any = false;
            }
        } else {
            cur.push(c);
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::{rule, split_rule};

    #[test]
    fn splits_iptables_save_lines() {
        let w = split_rule(r#"-A POSTROUTING -s 10.0.0.2/32 -m comment --comment "name: \"x\" id" -j CNI-VR-1"#);
        assert_eq!(w, ["-A", "POSTROUTING", "-s", "10.0.0.2/32", "-m", "comment", "--comment", "name: \"x\" id", "-j", "CNI-VR-1"]);
        let words: Vec<&str> = w.iter().map(String::as_str).collect();
        assert_eq!(rule(&words), r#"-A POSTROUTING -s 10.0.0.2/32 -m comment --comment "name: \"x\" id" -j CNI-VR-1"#);
        assert_eq!(split_rule(&rule(&words)), w, "quoting round-trips");
    }
}
