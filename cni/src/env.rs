//! The CNI_* environment, parsed once into a typed invocation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{CniError, ErrorCode};
use crate::version::Verb;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// The runtime's request, from the CNI_* environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// CNI_COMMAND.
    pub verb: Verb,
    /// CNI_CONTAINERID (required for ADD/DEL/CHECK).
    pub container_id: String,
    /// CNI_NETNS: required for ADD/CHECK, optional for DEL.
    pub netns: Option<PathBuf>,
    /// CNI_IFNAME (required for ADD/DEL/CHECK).
    pub ifname: String,
    /// CNI_ARGS as key/value pairs.
    pub args: BTreeMap<String, String>,
    /// CNI_PATH directories, in search order.
    pub path: Vec<PathBuf>,
}

impl Invocation {
    /// Parse from the process environment.
    pub fn from_env() -> Result<Invocation, CniError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Parse from any variable lookup (used by tests and by delegation).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let verb: Verb = get("CNI_COMMAND")
            .ok_or_else(|| missing("CNI_COMMAND"))?
            .parse()
            .map_err(|e: String| CniError::new(ErrorCode::InvalidEnvironment, e))?;
        let per_container = matches!(verb, Verb::Add | Verb::Del | Verb::Check);
        let need = |k: &str, required: bool| -> Result<String, CniError> {
            match get(k) {
                Some(v) => Ok(v),
                None if required => Err(missing(k)),
                None => Ok(String::new()),
            }
        };
        let container_id = need("CNI_CONTAINERID", per_container)?;
        let ifname = need("CNI_IFNAME", per_container)?;
        let netns = match get("CNI_NETNS") {
            Some(p) => Some(PathBuf::from(p)),
            None if matches!(verb, Verb::Add | Verb::Check) => return Err(missing("CNI_NETNS")),
            None => None,
        };
        if per_container {
            validate_container_id(&container_id)?;
            validate_ifname(&ifname)?;
        }
        let args = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
        let path = get("CNI_PATH").map(|p| std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()).collect()).unwrap_or_default();
        Ok(Invocation { verb, container_id, netns, ifname, args, path })
    }

    /// The variables to pass to a delegated plugin, with the verb replaced.
    pub fn to_env(&self, verb: Verb) -> Vec<(String, String)> {
        let mut env = vec![("CNI_COMMAND".to_string(), verb.as_str().to_string())];
        if !self.container_id.is_empty() {
            env.push(("CNI_CONTAINERID".into(), self.container_id.clone()));
        }
        if let Some(ns) = &self.netns {
            env.push(("CNI_NETNS".into(), ns.display().to_string()));
        }
        if !self.ifname.is_empty() {
            env.push(("CNI_IFNAME".into(), self.ifname.clone()));
        }
        if !self.args.is_empty() {
            let args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            env.push(("CNI_ARGS".into(), args.join(";")));
        }
        if let Ok(p) = std::env::join_paths(&self.path) {
            env.push(("CNI_PATH".into(), p.to_string_lossy().into_owned()));
        }
        env
    }
}

fn missing(var: &str) -> CniError {
    CniError::new(ErrorCode::InvalidEnvironment, format!("required environment variable {var} is not set"))
}

/// The spec's rule for container IDs and network names: an ASCII letter or digit, then
/// letters, digits, '_', '.' or '-'.
pub fn is_cni_identifier(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What [`is_cni_identifier`] demands, for error details.
pub const IDENTIFIER_RULE: &str = "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'";

fn validate_container_id(id: &str) -> Result<(), CniError> {
    if is_cni_identifier(id) {
        Ok(())
    } else {
        Err(CniError::new(ErrorCode::InvalidEnvironment, format!("invalid CNI_CONTAINERID {id:?}")).with_details(IDENTIFIER_RULE))
    }
}

/// What is wrong with an interface name, if anything: 1 to 15 bytes, not "." or "..", no
/// '/', ':' or whitespace (kernel rules).
pub fn ifname_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("empty".to_string())
    } else if name.len() > MAX_IFNAME_LEN {
        Some(format!("longer than {MAX_IFNAME_LEN} characters"))
    } else if name == "." || name == ".." {
        Some("reserved name".to_string())
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        Some("contains '/', ':' or whitespace".to_string())
    } else {
        None
    }
}

/// Check `CNI_IFNAME` (see [`ifname_problem`]).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    match ifname_problem(name) {
        None => Ok(()),
        Some(why) => Err(CniError::new(ErrorCode::InvalidEnvironment, format!("invalid CNI_IFNAME {name:?}: {why}"))),
    }
}

/// CNI_ARGS: `K1=V1;K2=V2`.
fn parse_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| CniError::new(ErrorCode::InvalidEnvironment, format!("invalid CNI_ARGS pair {pair:?}: expected KEY=VALUE")))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn add_requires_netns() {
        let e = Invocation::from_lookup(lookup(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEnvironment);
        assert!(e.msg.contains("CNI_NETNS"));
    }

    #[test]
    fn del_without_netns_and_args() {
        let inv = Invocation::from_lookup(lookup(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p"),
            ("CNI_PATH", "/a:/b"),
        ]))
        .unwrap();
        assert_eq!(inv.verb, Verb::Del);
        assert_eq!(inv.netns, None);
        assert_eq!(inv.args["K8S_POD_NAME"], "p");
        assert_eq!(inv.path, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        let env = inv.to_env(Verb::Del);
        assert!(env.contains(&("CNI_ARGS".into(), "IgnoreUnknown=1;K8S_POD_NAME=p".into())));
    }

    #[test]
    fn ifname_and_id_rules() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("a-very-long-name0").is_err());
        assert!(validate_ifname("a/b").is_err());
        let e = Invocation::from_lookup(lookup(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "bad id"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/x"),
        ]))
        .unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID"));
        assert_eq!(Invocation::from_lookup(lookup(&[])).unwrap_err().code, ErrorCode::InvalidEnvironment);
        assert!(Invocation::from_lookup(lookup(&[("CNI_COMMAND", "STATUS")])).is_ok());
    }
}
