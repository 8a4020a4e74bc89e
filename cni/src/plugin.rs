//! The plugin runner: read env and stdin, dispatch to a [`Plugin`], print the result or
//! error in the requested version, and pick the exit code.

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::config::NetConf;
use crate::env::Invocation;
use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::version::{Verb, Version};

/// One invocation: the parsed environment, the raw config and its version.
#[derive(Debug, Clone)]
pub struct Request {
    /// The CNI_* environment.
    pub inv: Invocation,
    /// Config bytes exactly as received (delegates get the same bytes).
    pub config: Vec<u8>,
    /// The config's `cniVersion`, already checked to be supported and to allow the verb.
    pub version: Version,
}

impl Request {
    /// Parse the config into the plugin's type (DEL tolerates a malformed `prevResult`,
    /// see [`NetConf::parse_for_del`]).
    pub fn parse_config<T: DeserializeOwned>(&self) -> Result<NetConf<T>, CniError> {
        match self.inv.verb {
            Verb::Del => NetConf::parse_for_del(&self.config),
            _ => NetConf::parse(&self.config),
        }
    }
}

/// What a plugin implements; each verb returns a CNI error on failure.
pub trait Plugin {
    /// ADD: set up the attachment and return its result.
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    /// DEL: remove the attachment; must succeed when it is already gone.
    fn del(&self, req: &Request) -> Result<(), CniError>;
    /// CHECK: verify the attachment matches `prevResult`.
    fn check(&self, req: &Request) -> Result<(), CniError>;
    /// STATUS: whether ADDs can be served now.
    fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
    /// GC: remove attachments not in `cni.dev/valid-attachments`.
    fn gc(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

/// Run `plugin` against the process environment, stdin and stdout; returns the exit code.
pub fn run(plugin: &impl Plugin) -> i32 {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Err(e) = read {
        let err = CniError::new(ErrorCode::IoFailure, "failed to read the network configuration from stdin").with_details(e.to_string());
        return emit_error(&mut out, Version::LATEST.as_str(), &err);
    }
    run_with(plugin, |k| std::env::var(k).ok(), &stdin, &mut out)
}

/// Run with an explicit environment, stdin and output (testable core of [`run`]).
pub fn run_with(plugin: &impl Plugin, env: impl Fn(&str) -> Option<String>, stdin: &[u8], out: &mut impl Write) -> i32 {
    // The version errors are rendered in: the config's own, when it can be read at all.
    let raw: Option<Value> = serde_json::from_slice(stdin).ok();
    let requested = raw.as_ref().and_then(|v| v.get("cniVersion")).and_then(Value::as_str).map(str::to_string);
    let render_version = requested.clone().filter(|v| v.parse::<Version>().is_ok()).unwrap_or_else(|| Version::LATEST.to_string());

    let inv = match Invocation::from_lookup(env) {
        Ok(inv) => inv,
        Err(e) => return emit_error(out, &render_version, &e),
    };
    if inv.verb == Verb::Version {
        let supported: Vec<&str> = Version::ALL.iter().map(|v| v.as_str()).collect();
        let body = json!({ "cniVersion": render_version, "supportedVersions": supported });
        return emit(out, &body, 0);
    }
    match prepare(inv, stdin, raw.as_ref(), requested.as_deref()).and_then(|req| dispatch(plugin, &req).map(|r| (req, r))) {
        Ok((req, Some(result))) => emit(out, &result.render(req.version), 0),
        Ok((_, None)) => 0,
        Err(e) => {
            log::error!("{e}");
            emit_error(out, &render_version, &e)
        }
    }
}

fn prepare(inv: Invocation, stdin: &[u8], raw: Option<&Value>, requested: Option<&str>) -> Result<Request, CniError> {
    if raw.is_none() {
        let e = serde_json::from_slice::<Value>(stdin).err().map(|e| e.to_string()).unwrap_or_default();
        return Err(CniError::new(ErrorCode::DecodingFailure, "failed to decode the network configuration on stdin").with_details(e));
    }
    let version = match requested {
        Some(v) => Version::parse_supported(v)?,
        None => return Err(CniError::new(ErrorCode::InvalidNetworkConfig, "network configuration has no \"cniVersion\"")),
    };
    if !version.allows(inv.verb) {
        return Err(CniError::new(ErrorCode::IncompatibleVersion, format!("config version {version} does not allow {}", inv.verb)));
    }
    Ok(Request { inv, config: stdin.to_vec(), version })
}

fn dispatch(plugin: &impl Plugin, req: &Request) -> Result<Option<CniResult>, CniError> {
    match req.inv.verb {
        Verb::Add => plugin.add(req).map(Some),
        Verb::Del => plugin.del(req).map(|_| None),
        Verb::Check => plugin.check(req).map(|_| None),
        Verb::Status => plugin.status(req).map(|_| None),
        Verb::Gc => plugin.gc(req).map(|_| None),
        Verb::Version => unreachable!("VERSION is answered before dispatch"),
    }
}

fn emit(out: &mut impl Write, body: &Value, code: i32) -> i32 {
    let text = serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string());
    if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
        return 1;
    }
    code
}

fn emit_error(out: &mut impl Write, version: &str, err: &CniError) -> i32 {
    emit(out, &err.render(version), 1);
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::IpConfig;

    struct Fake;
    impl Plugin for Fake {
        fn add(&self, req: &Request) -> Result<CniResult, CniError> {
            let _conf: NetConf<Value> = req.parse_config()?;
            Ok(CniResult {
                ips: vec![IpConfig { address: "10.0.0.2/24".parse().unwrap(), gateway: None, interface: None }],
                ..Default::default()
            })
        }
        fn del(&self, _req: &Request) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _req: &Request) -> Result<(), CniError> {
            Err(CniError::new(ErrorCode::Other(100), "differs"))
        }
    }

    fn call(cmd: &str, stdin: &str) -> (i32, Value) {
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some(cmd.to_string()),
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_NETNS" => Some("/var/run/netns/x".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            _ => None,
        };
        let mut out = Vec::new();
        let code = run_with(&Fake, env, stdin.as_bytes(), &mut out);
        let v = if out.is_empty() { Value::Null } else { serde_json::from_slice(&out).unwrap() };
        (code, v)
    }

    #[test]
    fn version_and_add() {
        let (code, v) = call("VERSION", r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(code, 0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        let (code, v) = call("ADD", r#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#);
        assert_eq!(code, 0);
        assert_eq!(v["ips"][0]["version"], "4");
        let (code, v) = call("DEL", r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#);
        assert_eq!((code, v), (0, Value::Null));
    }

    #[test]
    fn errors_by_version_and_verb() {
        let (code, v) = call("CHECK", r#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#);
        assert_eq!(code, 1);
        assert_eq!(v["code"], 1);
        assert_eq!(v["cniVersion"], "0.3.1");
        let (_, v) = call("GC", r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#);
        assert_eq!(v["code"], 1);
        let (_, v) = call("ADD", r#"{"cniVersion":"0.9.0","name":"n","type":"t"}"#);
        assert_eq!(v["code"], 1);
        let (_, v) = call("ADD", "{not json");
        assert_eq!(v["code"], 6);
        let (_, v) = call("CHECK", r#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#);
        assert_eq!((v["code"].as_u64(), v["msg"].as_str()), (Some(100), Some("differs")));
        let (_, v) = call("BOGUS", r#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#);
        assert_eq!(v["code"], 4);
    }
}
