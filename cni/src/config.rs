//! The network configuration fields every plugin shares; plugin keys are flattened in.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::{from_json_error, CniError, ErrorCode};
use crate::result::{CniResult, Dns};
use crate::version::Version;

/// A plugin's network configuration: the common CNI fields plus the plugin's own `T`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf<T> {
    /// `cniVersion`.
    pub cni_version: Version,
    /// Network name.
    pub name: String,
    /// Plugin type (binary name).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The IPAM section, kept raw: it belongs to the IPAM plugin.
    #[serde(default)]
    pub ipam: Option<Value>,
    /// DNS settings from the config.
    #[serde(default)]
    pub dns: Option<Dns>,
    /// Result of the previous plugin in a chain.
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// Runtime-provided capability arguments.
    #[serde(default)]
    pub runtime_config: Option<Value>,
    /// GC: the attachments that must be kept.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Plugin-specific keys.
    #[serde(flatten)]
    pub plugin: T,
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
    /// Parse config bytes (bad JSON: code 6; wrong content: code 7).
    pub fn parse(bytes: &[u8]) -> Result<NetConf<T>, CniError> {
        let conf: NetConf<T> = serde_json::from_slice(bytes).map_err(|e| from_json_error("network configuration", &e))?;
        validate_name(&conf.name)?;
        Ok(conf)
    }
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

    /// The parsed `prevResult`, if any.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match &self.prev_result {
            None | Some(Value::Null) => Ok(None),
            Some(v) => CniResult::parse(v).map(Some).map_err(|e| e.context("prevResult")),
        }
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
        assert_eq!(c.prev_result().unwrap().unwrap().ips.len(), 1);
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "c1");
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
