//! The network configuration fields every plugin shares, split from the plugin's own keys.
//!
//! The common keys are taken out of the object first and whatever remains is the plugin's
//! `T`, so a `T` with `deny_unknown_fields` rejects misspelt keys (`#[serde(flatten)]`
//! cannot: serde ignores unknown keys of flattened structs).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::{from_json_error, CniError, ErrorCode};
use crate::fields;
use crate::result::{CniResult, Dns};
use crate::version::Version;

/// Keys of the spec and of libcni that every plugin config may carry, whatever the plugin.
/// `capabilities` and `args` come from the conflist as written; keys under `cni.dev/` are
/// the spec's reserved namespace, so new ones (as `cni.dev/valid-attachments` was) pass.
const COMMON_KEYS: &[&str] =
    &["cniVersion", "name", "type", "ipam", "dns", "prevResult", "runtimeConfig", "capabilities", "args", VALID_ATTACHMENTS];
/// The GC key.
const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";
/// The spec's reserved key namespace.
const RESERVED_PREFIX: &str = "cni.dev/";

/// A plugin's network configuration: the common CNI fields plus the plugin's own `T`.
#[derive(Debug, Clone)]
pub struct NetConf<T> {
    /// `cniVersion`.
    pub cni_version: Version,
    /// Network name.
    pub name: String,
    /// Plugin type (binary name).
    pub plugin_type: String,
    /// The IPAM section, kept raw: it belongs to the IPAM plugin.
    pub ipam: Option<Value>,
    /// DNS settings from the config.
    pub dns: Option<Dns>,
    /// Result of the previous plugin in a chain, parsed and checked with the rest.
    pub prev_result: Option<CniResult>,
    /// Runtime-provided capability arguments.
    pub runtime_config: Option<Value>,
    /// GC: the attachments that must be kept.
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Plugin-specific keys.
    pub plugin: T,
}

/// The common keys as they appear on the wire.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Common {
    cni_version: Version,
    name: String,
    #[serde(rename = "type")]
    plugin_type: String,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default)]
    runtime_config: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

/// One attachment named in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name inside the container.
    pub ifname: String,
}

impl<T: DeserializeOwned> NetConf<T> {
    /// Parse config bytes (bad JSON: code 6; wrong content, unknown plugin keys, a
    /// malformed `prevResult`: code 7).
    pub fn parse(bytes: &[u8]) -> Result<NetConf<T>, CniError> {
        Self::parse_with(bytes, PrevResult::Strict)
    }

    /// Parse for DEL, which must be able to finish: the runtime repeats a failed DEL with
    /// the same cached `prevResult` for as long as the pod exists, so a malformed one is
    /// dropped (DEL only takes hints from it) instead of failing every retry.
    pub fn parse_for_del(bytes: &[u8]) -> Result<NetConf<T>, CniError> {
        Self::parse_with(bytes, PrevResult::DropMalformed)
    }

    fn parse_with(bytes: &[u8], prev: PrevResult) -> Result<NetConf<T>, CniError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| from_json_error("network configuration", &e))?;
        let Value::Object(mut all) = value else {
            return Err(CniError::new(ErrorCode::InvalidNetworkConfig, "the network configuration is not a JSON object"));
        };
        let mut common = Map::new();
        for key in COMMON_KEYS {
            if let Some(v) = all.remove(*key) {
                common.insert((*key).to_string(), v);
            }
        }
        all.retain(|k, _| !k.starts_with(RESERVED_PREFIX));
        let c: Common = serde_json::from_value(Value::Object(common)).map_err(|e| from_json_error("network configuration", &e))?;
        validate_name(&c.name)?;
        reject_unknown_keys::<T>(&all)?;
        let plugin = T::deserialize(Value::Object(all)).map_err(|e| from_json_error("network configuration", &e))?;
        let prev_result = match (parse_prev_result(c.prev_result), prev) {
            (Ok(r), _) => r,
            (Err(_), PrevResult::DropMalformed) => None,
            (Err(e), PrevResult::Strict) => return Err(e),
        };
        Ok(NetConf {
            cni_version: c.cni_version,
            name: c.name,
            plugin_type: c.plugin_type,
            ipam: c.ipam,
            dns: c.dns,
            prev_result,
            runtime_config: c.runtime_config,
            valid_attachments: c.valid_attachments,
            plugin,
        })
    }
}

/// How a malformed `prevResult` is treated.
#[derive(Clone, Copy)]
enum PrevResult {
    Strict,
    DropMalformed,
}

fn parse_prev_result(raw: Option<Value>) -> Result<Option<CniResult>, CniError> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => CniResult::parse(&v).map(Some).map_err(|e| e.context("prevResult")),
        Some(other) => {
            Err(CniError::new(ErrorCode::InvalidNetworkConfig, "prevResult is not a JSON object").with_details(format!("got {other}")))
        }
    }
}

/// Refuse keys that are neither common nor `T`'s, naming a known key that differs only in
/// case (`fastpath` for `fastPath`), the commonest slip. A `T` that is not a struct (e.g.
/// an IPAM plugin's `Value`, which ignores the main plugin's keys) takes every key.
fn reject_unknown_keys<T: DeserializeOwned>(keys: &Map<String, Value>) -> Result<(), CniError> {
    let Some(known) = fields::of::<T>() else { return Ok(()) };
    let Some(unknown) = keys.keys().find(|k| !known.contains(&k.as_str())) else { return Ok(()) };
    let hint = known.iter().find(|k| k.eq_ignore_ascii_case(unknown)).map(|k| format!("; did you mean `{k}`?")).unwrap_or_default();
    let mut all: Vec<&str> = COMMON_KEYS.iter().chain(known).copied().collect();
    all.sort_unstable();
    Err(CniError::new(ErrorCode::InvalidNetworkConfig, format!("unknown configuration key `{unknown}`{hint}"))
        .with_details(format!("known keys: {}", all.join(", "))))
}

/// Network names: an alphanumeric, then alphanumerics, '_', '.' or '-' (spec).
pub fn validate_name(name: &str) -> Result<(), CniError> {
    if crate::env::is_cni_identifier(name) {
        Ok(())
    } else {
        Err(CniError::new(ErrorCode::InvalidNetworkConfig, format!("invalid network name {name:?}"))
            .with_details(crate::env::IDENTIFIER_RULE))
    }
}

impl<T> NetConf<T> {
    /// The IPAM plugin's type, when an `ipam` section names one.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref()?.get("type")?.as_str().filter(|t| !t.is_empty())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Mine {
        #[serde(default)]
        ip_masq: bool,
    }

    #[test]
    fn parses_common_and_plugin_fields() {
        let c: NetConf<Mine> = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"veth-route","ipMasq":true,
                 "ipam":{"type":"host-local"},
                 "prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.2/24"}]},
                 "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.cni_version, Version::V1_1_0);
        assert!(c.plugin.ip_masq);
        assert_eq!(c.ipam_type(), Some("host-local"));
        assert_eq!(c.prev_result.unwrap().ips.len(), 1);
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "c1");
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Strict {
        #[serde(default)]
        fast_path: Option<String>,
    }

    #[test]
    fn unknown_plugin_keys_are_refused_with_a_hint() {
        let e = NetConf::<Strict>::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t","fastpath":"off"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig);
        assert_eq!(e.msg, "unknown configuration key `fastpath`; did you mean `fastPath`?");
        assert!(e.details.contains("fastPath") && e.details.contains("runtimeConfig"), "{}", e.details);
        let e = NetConf::<Strict>::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t","frob":1}"#).unwrap_err();
        assert_eq!(e.msg, "unknown configuration key `frob`");
        // Keys of the spec, libcni and the reserved namespace are everyone's.
        let ok = br#"{"cniVersion":"1.1.0","name":"n","type":"t","fastPath":"off","capabilities":{"bandwidth":true},
                      "args":{"cni":{}},"runtimeConfig":{},"cni.dev/future-key":1}"#;
        assert_eq!(NetConf::<Strict>::parse(ok).unwrap().plugin.fast_path.as_deref(), Some("off"));
        // An untyped plugin (an IPAM plugin reading the main plugin's config) takes any key.
        assert!(NetConf::<Value>::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t","frob":1}"#).is_ok());
    }

    #[test]
    fn a_malformed_prev_result_is_refused_at_parse_time() {
        for prev in ["0", "true", "\"x\"", "[]", r#"{"ips":[{"address":"nonsense"}]}"#, r#"{"interfaces":7}"#] {
            let conf = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{prev}}}"#);
            let e = NetConf::<Mine>::parse(conf.as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidNetworkConfig, "{prev}: {e}");
            assert!(e.msg.starts_with("prevResult"), "{prev}: {e}");
        }
        let conf = br#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"ips":[{"address":"nonsense"}]}}"#;
        assert!(NetConf::<Mine>::parse_for_del(conf).unwrap().prev_result.is_none());
        let conf = br#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":null}"#;
        assert!(NetConf::<Mine>::parse(conf).unwrap().prev_result.is_none());
    }

    #[test]
    fn errors_have_codes() {
        assert_eq!(NetConf::<Mine>::parse(b"{nope").unwrap_err().code, ErrorCode::DecodingFailure);
        assert_eq!(
            NetConf::<Mine>::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t","ipMasq":"yes"}"#).unwrap_err().code,
            ErrorCode::InvalidNetworkConfig
        );
    }
}
