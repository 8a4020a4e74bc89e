//! The veth-route network configuration, parsed and validated once.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use cni::{CniError, ErrorCode, NetConf};
use serde::Deserialize;

use crate::datapath::DatapathConfig;
use crate::proxy_neigh::ProxyNeighborConfig;

/// The whole config: common CNI fields plus [`VethRouteConf`].
pub type Conf = NetConf<VethRouteConf>;

/// veth-route's own keys (see README "Configuration").
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VethRouteConf {
    /// MTU of both veth ends; kernel default (1500) when absent.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Masquerade pod traffic leaving for non-pod-subnet destinations.
    #[serde(default)]
    pub ip_masq: bool,
    /// The pods' gateway address.
    #[serde(default = "default_gateway")]
    pub gateway: Ipv4Addr,
    /// Device holding the gateway address (`dummy` type).
    #[serde(default = "default_gateway_device")]
    pub gateway_device: String,
    /// Where the gateway address lives.
    #[serde(default)]
    pub gateway_mode: GatewayMode,
    /// Append logs to this file (mode 0600); stderr when absent.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// off, error, warn, info, debug, trace.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Answer ARP for pod addresses on the VM uplink (per-pod proxy neighbour entries), so
    /// the vrouter and other VMs reach pods without a static route.
    #[serde(default)]
    pub proxy_neighbor: Option<ProxyNeighborConfig>,
    /// eBPF fast-path keys.
    #[serde(flatten)]
    pub datapath: DatapathConfig,
}

/// Where the host holds the gateway address the pods ARP for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum GatewayMode {
    /// The gateway device; per-veth addresses when the kernel has no dummy device type.
    #[default]
    Auto,
    /// Only the gateway device (fails when it cannot be created).
    Device,
    /// The gateway address on every host veth (as the reference ptp plugin does).
    HostVeth,
}

fn default_gateway() -> Ipv4Addr {
    Ipv4Addr::new(169, 254, 1, 1)
}

fn default_gateway_device() -> String {
    "dummy0".to_string()
}

fn default_log_level() -> String {
    "warn".to_string()
}

impl VethRouteConf {
    /// Check values serde cannot (ranges, names).
    pub fn validate(&self) -> Result<(), CniError> {
        let invalid = |m: String| Err(CniError::new(ErrorCode::InvalidNetworkConfig, m));
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return invalid(format!("mtu {mtu} out of range 68..65535"));
            }
        }
        if let Err(e) = cni::env::validate_ifname(&self.gateway_device) {
            return invalid(format!("gatewayDevice: {}", e.msg));
        }
        if self.gateway.is_unspecified() || self.gateway.is_multicast() || self.gateway.is_broadcast() {
            return invalid(format!("gateway {} is not a unicast address", self.gateway));
        }
        if cni::logging::parse_level(&self.log_level).is_none() {
            return invalid(format!("logLevel {:?}: expected off, error, warn, info, debug or trace", self.log_level));
        }
        Ok(())
    }
}

/// Parse and validate the config bytes.
pub fn parse(bytes: &[u8]) -> Result<Conf, CniError> {
    let conf = Conf::parse(bytes)?;
    conf.plugin.validate()?;
    Ok(conf)
}

/// Start logging as the config says (once per process).
pub fn init_logging(conf: &Conf) {
    let level = cni::logging::parse_level(&conf.plugin.log_level).unwrap_or(log::LevelFilter::Warn);
    cni::logging::init("veth-route", conf.plugin.log_file.as_deref(), level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_config_parses_with_defaults() {
        let c = parse(
            br#"{"name":"cni0","cniVersion":"0.3.1","type":"veth-route","ipam":{"type":"tcnp-ipam","routes":[{"dst":"0.0.0.0/0"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.plugin.gateway, Ipv4Addr::new(169, 254, 1, 1));
        assert_eq!(c.plugin.gateway_device, "dummy0");
        assert_eq!(c.plugin.gateway_mode, GatewayMode::Auto);
        assert_eq!(c.ipam_type(), Some("tcnp-ipam"));
        assert!(!c.plugin.ip_masq);
    }

    #[test]
    fn rejects_bad_values() {
        let bad = [
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","mtu":20}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","gatewayDevice":"way-too-long-name0"}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","gateway":"224.0.0.1"}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","gatewayMode":"magic"}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","logLevel":"loud"}"#,
        ];
        for b in bad {
            assert_eq!(parse(b.as_bytes()).unwrap_err().code, ErrorCode::InvalidNetworkConfig, "{b}");
        }
    }
}
