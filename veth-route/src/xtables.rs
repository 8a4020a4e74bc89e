//! iptables and ip6tables as the plugin drives them: a table as `-S` lists it, read once per
//! operation; every change decided from it and applied as one `-restore --noflush`
//! transaction. So no decision depends on the text of an iptables error, and a crash never
//! leaves half a setup (a chain without its rules).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::names;

/// Which of the two programs: the address family's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// One table of one family, as `-S` listed it.
pub struct Table {
    family: Family,
    name: &'static str,
    /// User-defined chains.
    pub chains: Vec<String>,
    /// Rules as words: `-A`, the chain, then the rule.
    pub rules: Vec<Vec<String>>,
}

impl Table {
    pub fn read(family: Family, name: &'static str) -> Result<Table> {
        let program = family.program();
        // -w: wait for the xtables lock instead of failing under concurrent ADDs.
        let out = Command::new(program).args(["-w", "-t", name, "-S"]).output().map_err(Error::io(format!("run {program}")))?;
        if !out.status.success() {
            return Err(Error::Command(format!("{program} -t {name} -S: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let chains = text.lines().filter_map(|l| l.strip_prefix("-N ")).map(str::to_string).collect();
        let rules = text.lines().filter(|l| l.starts_with("-A ")).map(split_rule).collect();
        Ok(Table { family, name, chains, rules })
    }

    /// [`Table::read`], or `None` on a host without the program: it holds no rule of ours.
    pub fn read_if_installed(family: Family, name: &'static str) -> Result<Option<Table>> {
        match Table::read(family, name) {
            Ok(t) => Ok(Some(t)),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.iter().any(|c| c == chain)
    }

    /// Rules of `chain`.
    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Vec<String>> {
        self.rules.iter().filter(move |r| r.get(1).map(String::as_str) == Some(chain))
    }

    /// Apply `lines` to this table as one transaction (all or nothing).
    pub fn apply(&self, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let program = format!("{}-restore", self.family.program());
        let input = format!("*{}\n{}\nCOMMIT\n", self.name, lines.join("\n"));
        let mut child = Command::new(&program)
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io(format!("run {program}")))?;
        child.stdin.take().expect("piped stdin").write_all(input.as_bytes()).map_err(Error::io(format!("write to {program}")))?;
        let out = child.wait_with_output().map_err(Error::io(format!("wait for {program}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Command(format!(
                "{program} -t {} ({}): {}",
                self.name,
                lines.join("; "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// The `--comment` of a rule, if it has one.
pub fn comment(words: &[String]) -> Option<&str> {
    words.windows(2).find(|w| w[0] == "--comment").map(|w| w[1].as_str())
}

/// The attachments (container ID, ifname) of `network` that tagged some of `rules`.
pub fn attachments<'a>(rules: impl Iterator<Item = &'a Vec<String>>, network: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for words in rules {
        if let Some((id, ifname)) = comment(words).and_then(|t| names::parse_tag(t, network)) {
            let key = (id.to_string(), ifname.to_string());
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    out
}

/// `words` as a deletion (`-D`) of the rule `-S` listed.
pub fn deletion(words: &[String]) -> String {
    let mut w: Vec<&str> = words.iter().map(String::as_str).collect();
    w[0] = "-D";
    rule(&w)
}

/// One rule for `-restore`, words quoted where `-S` quoted them.
pub fn rule(words: &[&str]) -> String {
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

/// Split one `iptables -S` line into words, honouring double quotes and backslashes.
pub(crate) fn split_rule(line: &str) -> Vec<String> {
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
