//! Delegation to another plugin (normally IPAM): find it in CNI_PATH, run it with the
//! same environment and config, and read its result or error.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::env::Invocation;
use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::version::{Verb, Version};

/// Locate plugin `name` in the CNI_PATH directories.
pub fn find_plugin(name: &str, inv: &Invocation) -> Result<PathBuf, CniError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(CniError::new(ErrorCode::InvalidNetworkConfig, format!("invalid plugin type {name:?}")));
    }
    if inv.path.is_empty() {
        return Err(CniError::new(ErrorCode::InvalidEnvironment, format!("cannot find plugin {name:?}: CNI_PATH is not set")));
    }
    inv.path.iter().map(|dir| dir.join(name)).find(|p| p.is_file()).ok_or_else(|| {
        CniError::new(ErrorCode::InvalidNetworkConfig, format!("plugin {name:?} not found in CNI_PATH"))
            .with_details(format!("searched {}", inv.path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")))
    })
}

/// Run plugin `name` for `verb` with `config` on stdin; on success return its stdout.
///
/// A delegate that predates the config's version (Debian's host-local stops at 1.0.0)
/// answers code 1; the call is then retried once with the newest version both sides
/// support that still allows `verb`, `prevResult` re-rendered to match.
pub fn exec(name: &str, inv: &Invocation, verb: Verb, config: &[u8]) -> Result<Vec<u8>, CniError> {
    match exec_once(name, inv, verb, config) {
        Err(e) if e.code == ErrorCode::IncompatibleVersion && verb != Verb::Version => match downgrade(name, inv, verb, config) {
            Some(older) => exec_once(name, inv, verb, &older),
            None => Err(e),
        },
        other => other,
    }
}

/// `config` rewritten to the newest version `name` supports that allows `verb`.
fn downgrade(name: &str, inv: &Invocation, verb: Verb, config: &[u8]) -> Option<Vec<u8>> {
    let mut conf: serde_json::Value = serde_json::from_slice(config).ok()?;
    let requested: Version = conf.get("cniVersion")?.as_str()?.parse().ok()?;
    let theirs = supported_versions(name, inv).ok()?;
    let target = Version::ALL.into_iter().rev().find(|v| *v < requested && v.allows(verb) && theirs.iter().any(|t| t == v.as_str()))?;
    log::debug!("{name} does not speak {requested}; delegating {verb} as {target}");
    conf["cniVersion"] = serde_json::Value::String(target.to_string());
    if let Some(prev) = conf.get("prevResult").filter(|p| !p.is_null()) {
        let rendered = CniResult::parse(prev).ok()?.render(target);
        conf["prevResult"] = rendered;
    }
    serde_json::to_vec(&conf).ok()
}

fn exec_once(name: &str, inv: &Invocation, verb: Verb, config: &[u8]) -> Result<Vec<u8>, CniError> {
    let path = find_plugin(name, inv)?;
    log::debug!("delegating {verb} to {}", path.display());
    let mut cmd = Command::new(&path);
    for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"] {
        cmd.env_remove(var);
    }
    cmd.envs(inv.to_env(verb)).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| CniError::new(ErrorCode::IoFailure, format!("failed to run plugin {name:?}")).with_details(e.to_string()))?;
    // A plugin may exit without reading stdin; a broken pipe then is not our error.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(config);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(ErrorCode::IoFailure, format!("failed to wait for plugin {name:?}")).with_details(e.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        log::debug!("{name} {verb} stderr: {}", stderr.trim());
    }
    if out.status.success() {
        return Ok(out.stdout);
    }
    match CniError::parse(&out.stdout) {
        Some(e) => Err(e.context(format!("{name} {verb}"))),
        None => Err(CniError::new(ErrorCode::IoFailure, format!("plugin {name:?} failed on {verb} ({})", out.status))
            .with_details(format!("stdout: {} stderr: {}", String::from_utf8_lossy(&out.stdout).trim(), stderr.trim()))),
    }
}

/// ADD through the delegate; its result must be valid.
pub fn add(name: &str, inv: &Invocation, config: &[u8]) -> Result<CniResult, CniError> {
    let out = exec(name, inv, Verb::Add, config)?;
    CniResult::parse_bytes(&out).map_err(|e| e.context(format!("result of {name}")))
}

/// DEL, CHECK, STATUS or GC through the delegate (no result expected).
pub fn run(name: &str, inv: &Invocation, verb: Verb, config: &[u8]) -> Result<(), CniError> {
    exec(name, inv, verb, config).map(drop)
}

/// The versions a plugin supports (asks it with VERSION).
pub fn supported_versions(name: &str, inv: &Invocation) -> Result<Vec<String>, CniError> {
    let out = exec_once(name, inv, Verb::Version, br#"{"cniVersion":"1.1.0"}"#)?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| crate::error::from_json_error("VERSION output", &e))?;
    Ok(v.get("supportedVersions")
        .and_then(|s| s.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default())
}

/// Whether plugin `name` supports `version` (false when it cannot be asked).
pub fn supports(name: &str, inv: &Invocation, version: Version) -> bool {
    supported_versions(name, inv).map(|vs| vs.iter().any(|v| v == version.as_str())).unwrap_or(false)
}
