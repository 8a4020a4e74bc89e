//! IP masquerading per attachment, as the reference plugins' `ipMasq`: a chain
//! `CNI-VR-<hash>` in the nat table, jumped to from POSTROUTING for the pod's source
//! address, every rule tagged with the attachment so DEL and GC need no state.

use std::net::Ipv4Addr;
use std::process::Command;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};
use crate::names::{self, MASQ_CHAIN_PREFIX};

fn iptables(args: &[&str]) -> Result<String> {
    // -w: wait for the xtables lock instead of failing under concurrent ADDs.
    let out = Command::new("iptables").args(["-w", "-t", "nat"]).args(args).output().map_err(Error::io("run iptables"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command(format!("iptables -t nat {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

fn is_missing(e: &Error) -> bool {
    matches!(e, Error::Command(m) if m.contains("No chain/target/match") || m.contains("does not exist") || m.contains("Bad rule"))
}

/// Masquerade traffic from `pod` (address with subnet) leaving its subnet, except multicast.
pub fn setup(chain: &str, tag: &str, pod: Ipv4Net) -> Result<()> {
    match iptables(&["-N", chain]) {
        Ok(_) => {}
        Err(Error::Command(m)) if m.contains("exists") => {
            iptables(&["-F", chain])?;
        }
        Err(e) => return Err(e),
    }
    let subnet = pod.trunc().to_string();
    let src = Ipv4Net::new(pod.addr(), 32).expect("/32").to_string();
    iptables(&["-A", chain, "-d", &subnet, "-m", "comment", "--comment", tag, "-j", "ACCEPT"])?;
    iptables(&["-A", chain, "!", "-d", "224.0.0.0/4", "-m", "comment", "--comment", tag, "-j", "MASQUERADE"])?;
    iptables(&["-A", "POSTROUTING", "-s", &src, "-m", "comment", "--comment", tag, "-j", chain])?;
    Ok(())
}

/// Remove the chain and the POSTROUTING jumps to it; fine when already gone.
pub fn teardown(chain: &str) -> Result<()> {
    let rules = iptables(&["-S", "POSTROUTING"])?;
    for line in rules.lines() {
        let words = split_rule(line);
        if words.first().map(String::as_str) == Some("-A") && words.windows(2).any(|w| w[0] == "-j" && w[1] == chain) {
            let mut del: Vec<&str> = words.iter().map(String::as_str).collect();
            del[0] = "-D";
            match iptables(&del) {
                Ok(_) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for op in ["-F", "-X"] {
        match iptables(&[op, chain]) {
            Ok(_) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `chain` and its POSTROUTING jump from `pod_ip` exist (for CHECK).
pub fn check(chain: &str, pod_ip: Ipv4Addr) -> Result<Vec<String>> {
    let mut diffs = Vec::new();
    if iptables(&["-S", chain]).is_err() {
        diffs.push(format!("masquerade chain {chain} is missing"));
    }
    let post = iptables(&["-S", "POSTROUTING"])?;
    let src = format!("{pod_ip}/32");
    let jump = post.lines().map(split_rule).any(|w| w.windows(2).any(|p| p[0] == "-j" && p[1] == chain) && w.contains(&src));
    if !jump {
        diffs.push(format!("POSTROUTING has no jump from {src} to {chain}"));
    }
    Ok(diffs)
}

/// Attachments (container ID, ifname) of `network` that have masquerade rules or chains.
pub fn attachments(network: &str) -> Result<Vec<(String, String)>> {
    let all = iptables(&["-S"])?;
    let mut out: Vec<(String, String)> = Vec::new();
    for line in all.lines() {
        let words = split_rule(line);
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

/// Chains of ours whose every rule is gone (e.g. a crash between -N and -A).
pub fn empty_chains() -> Result<Vec<String>> {
    let all = iptables(&["-S"])?;
    let defined = all.lines().filter_map(|l| l.strip_prefix("-N ")).filter(|c| c.starts_with(MASQ_CHAIN_PREFIX));
    Ok(defined.filter(|c| !all.lines().any(|l| l.starts_with(&format!("-A {c} ")))).map(str::to_string).collect())
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
    use super::split_rule;

    #[test]
    fn splits_iptables_save_lines() {
        let w = split_rule(r#"-A POSTROUTING -s 10.0.0.2/32 -m comment --comment "name: \"x\" id" -j CNI-VR-1"#);
        assert_eq!(w, ["-A", "POSTROUTING", "-s", "10.0.0.2/32", "-m", "comment", "--comment", "name: \"x\" id", "-j", "CNI-VR-1"]);
    }
}
