//! The veth-route network configuration, parsed and validated once.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use cni::{CniError, ErrorCode, NetConf};
use serde::Deserialize;

use crate::datapath::{DatapathConfig, FastPath};
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
    let mut conf = Conf::parse(bytes)?;
    conf.plugin.validate()?;
    if shaped(conf.runtime_config.as_ref())? && conf.plugin.datapath.fast_path != FastPath::Off {
        // A redirect skips the host veth's qdiscs and classic tc filters, where the
        // `bandwidth` plugin shapes: a shaped pod keeps the kernel path, in both directions.
        conf.plugin.datapath.fast_path = FastPath::Off;
        conf.plugin.datapath.kernel_path_reason = Some("runtimeConfig.bandwidth shapes this pod (the bandwidth plugin's qdiscs see only the kernel path)");
    }
    Ok(conf)
}

/// `runtimeConfig.bandwidth`, the `bandwidth` capability as the bandwidth plugin reads it
/// (rates in bit/s). Only the rates matter here; the bandwidth plugin checks the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bandwidth {
    #[serde(default)]
    ingress_rate: u64,
    #[serde(default)]
    egress_rate: u64,
}

/// Whether the runtime asks for traffic shaping of this pod. Other capability keys
/// (portMappings, ...) belong to other plugins and are left alone.
fn shaped(runtime_config: Option<&serde_json::Value>) -> Result<bool, CniError> {
    let Some(bw) = runtime_config.and_then(|r| r.get("bandwidth")).filter(|v| !v.is_null()) else {
        return Ok(false);
    };
    let bw: Bandwidth = serde_json::from_value(bw.clone())
        .map_err(|e| CniError::new(ErrorCode::InvalidNetworkConfig, format!("runtimeConfig.bandwidth: {e}")))?;
    Ok(bw.ingress_rate > 0 || bw.egress_rate > 0)
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
    fn a_shaped_pod_keeps_the_kernel_path() {
        let conf = |rc: &str| parse(format!(r#"{{"name":"n","cniVersion":"1.0.0","type":"veth-route","runtimeConfig":{rc}}}"#).as_bytes());
        let shaped = conf(r#"{"bandwidth":{"ingressRate":1000000,"ingressBurst":8000}}"#).unwrap();
        assert_eq!(shaped.plugin.datapath.fast_path, FastPath::Off);
        assert!(shaped.plugin.datapath.kernel_path_reason.is_some());
        let unshaped = conf(r#"{"portMappings":[],"bandwidth":{"ingressRate":0}}"#).unwrap();
        assert_eq!(unshaped.plugin.datapath.fast_path, FastPath::Auto);
        assert_eq!(conf(r#"{"bandwidth":{"ingressRate":"fast"}}"#).unwrap_err().code, ErrorCode::InvalidNetworkConfig);
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
