//! The veth-route network configuration, parsed and validated once.

use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

use cni::{CniError, ErrorCode, NetConf, Request};
use serde::Deserialize;

use crate::datapath::{DatapathConfig, FastPath};
use crate::proxy_neigh::ProxyNeighborConfig;

/// The whole config: common CNI fields plus [`VethRouteConf`].
pub type Conf = NetConf<VethRouteConf>;

/// veth-route's own keys (see README "Configuration"), read through [`RawConf`] so an
/// unknown key is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawConf")]
pub struct VethRouteConf {
    /// MTU of both veth ends; the uplink's (the default route's interface) when absent.
    pub mtu: Option<u32>,
    /// Masquerade pod traffic leaving for non-pod-subnet destinations.
    pub ip_masq: bool,
    /// The pods' gateway address.
    pub gateway: Ipv4Addr,
    /// Device holding the gateway address (`dummy` type).
    pub gateway_device: String,
    /// Where the gateway address lives.
    pub gateway_mode: GatewayMode,
    /// Append logs to this file (mode 0600); stderr when absent.
    pub log_file: Option<PathBuf>,
    /// off, error, warn, info, debug, trace.
    pub log_level: String,
    /// Answer ARP for pod addresses on the VM uplink (per-pod proxy neighbour entries), so
    /// the vrouter and other VMs reach pods without a static route.
    pub proxy_neighbor: Option<ProxyNeighborConfig>,
    /// eBPF fast-path keys (`fastPath`, `bpfPinDir`, `uplinks`, `antiSpoof`).
    pub datapath: DatapathConfig,
}

/// The keys exactly as written: one flat struct, because the field list serde announces
/// for it is what [`cni::NetConf`] checks unknown keys against.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawConf {
    mtu: Option<u32>,
    ip_masq: bool,
    gateway: Ipv4Addr,
    gateway_device: String,
    gateway_mode: GatewayMode,
    log_file: Option<PathBuf>,
    log_level: String,
    proxy_neighbor: Option<ProxyNeighborConfig>,
    fast_path: FastPath,
    bpf_pin_dir: PathBuf,
    uplinks: Vec<String>,
    anti_spoof: bool,
}

impl Default for RawConf {
    fn default() -> Self {
        let dp = DatapathConfig::default();
        RawConf {
            mtu: None,
            ip_masq: false,
            gateway: Ipv4Addr::new(169, 254, 1, 1),
            gateway_device: "dummy0".to_string(),
            gateway_mode: GatewayMode::Auto,
            log_file: None,
            log_level: "warn".to_string(),
            proxy_neighbor: None,
            fast_path: dp.fast_path,
            bpf_pin_dir: dp.bpf_pin_dir,
            uplinks: dp.uplinks,
            anti_spoof: dp.anti_spoof,
        }
    }
}

impl TryFrom<RawConf> for VethRouteConf {
    type Error = String;

    fn try_from(r: RawConf) -> Result<Self, String> {
        Ok(VethRouteConf {
            mtu: r.mtu,
            ip_masq: r.ip_masq,
            gateway: r.gateway,
            gateway_device: r.gateway_device,
            gateway_mode: r.gateway_mode,
            log_file: r.log_file,
            log_level: r.log_level,
            proxy_neighbor: r.proxy_neighbor,
            datapath: DatapathConfig {
                fast_path: r.fast_path,
                bpf_pin_dir: r.bpf_pin_dir,
                uplinks: r.uplinks,
                anti_spoof: r.anti_spoof,
                kernel_path_reason: None,
            },
        })
    }
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

impl VethRouteConf {
    /// Check values serde cannot (ranges, names).
    pub fn validate(&self) -> Result<(), CniError> {
        let invalid = |m: String| Err(CniError::new(ErrorCode::InvalidNetworkConfig, m));
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return invalid(format!("mtu {mtu} out of range 68..65535"));
            }
        }
        if let Some(why) = cni::env::ifname_problem(&self.gateway_device) {
            return invalid(format!("gatewayDevice {:?}: {why}", self.gateway_device));
        }
        if self.gateway.is_unspecified() || self.gateway.is_multicast() || self.gateway.is_broadcast() {
            return invalid(format!("gateway {} is not a unicast address", self.gateway));
        }
        if cni::logging::parse_level(&self.log_level).is_none() {
            return invalid(format!("logLevel {:?}: expected off, error, warn, info, debug or trace", self.log_level));
        }
        if let Some(f) = &self.log_file {
            absolute_path("logFile", f)?;
        }
        absolute_path("bpfPinDir", &self.datapath.bpf_pin_dir)?;
        for (i, up) in self.datapath.uplinks.iter().enumerate() {
            if let Some(why) = cni::env::ifname_problem(up) {
                return invalid(format!("uplinks[{i}] {up:?}: {why}"));
            }
            if self.datapath.uplinks[..i].contains(up) {
                return invalid(format!("uplinks: {up} is listed twice"));
            }
        }
        Ok(())
    }
}

/// A path the plugin opens or creates: absolute, and without `.`/`..` steps, so it cannot
/// depend on the runtime's working directory or climb out of where it seems to point.
fn absolute_path(key: &str, p: &Path) -> Result<(), CniError> {
    let plain = p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if p.is_absolute() && plain && p.parent().is_some() {
        Ok(())
    } else {
        Err(CniError::new(ErrorCode::InvalidNetworkConfig, format!("{key} {:?} is not an absolute path", p.display().to_string()))
            .with_details(
                "give a full path such as /var/log/veth-route.log, without . or .. steps (the runtime's working directory is unspecified)",
            ))
    }
}

/// Parse and validate the request's config (DEL tolerates a malformed `prevResult`).
pub fn parse(req: &Request) -> Result<Conf, CniError> {
    parse_conf(req.parse_config()?)
}

fn parse_conf(mut conf: Conf) -> Result<Conf, CniError> {
    conf.plugin.validate()?;
    if shaped(conf.runtime_config.as_ref())? && conf.plugin.datapath.fast_path != FastPath::Off {
        // A redirect skips the host veth's qdiscs and classic tc filters, where the
        // `bandwidth` plugin shapes: a shaped pod keeps the kernel path, in both directions.
        conf.plugin.datapath.fast_path = FastPath::Off;
        conf.plugin.datapath.kernel_path_reason =
            Some("runtimeConfig.bandwidth shapes this pod (the bandwidth plugin's qdiscs see only the kernel path)");
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

    fn parse(bytes: &[u8]) -> Result<Conf, CniError> {
        parse_conf(Conf::parse(bytes)?)
    }

    #[test]
    fn every_documented_key_is_accepted() {
        let c = parse(
            br#"{"name":"n","cniVersion":"1.1.0","type":"veth-route","mtu":1450,"ipMasq":true,"gateway":"169.254.1.1",
                 "gatewayDevice":"dummy0","gatewayMode":"hostVeth","logFile":"/var/log/veth-route.log","logLevel":"info",
                 "proxyNeighbor":{"uplink":"eth0"},"fastPath":"required","bpfPinDir":"/sys/fs/bpf/vr","uplinks":["eth0"],
                 "antiSpoof":false,"capabilities":{"bandwidth":true},"runtimeConfig":{}}"#,
        )
        .unwrap();
        assert_eq!(c.plugin.datapath.fast_path, FastPath::Required);
        assert_eq!(c.plugin.datapath.bpf_pin_dir, Path::new("/sys/fs/bpf/vr"));
        assert!(!c.plugin.datapath.anti_spoof && c.plugin.ip_masq);
    }

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
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","logFile":""}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","logFile":"veth-route.log"}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","logFile":"/var/log/../../etc/shadow"}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","logFile":"/"}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","bpfPinDir":"bpf/veth-route"}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","uplinks":["eth0","eth0"]}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","uplinks":["a/b"]}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","fastpath":"off"}"#,
            r#"{"name":"n","cniVersion":"1.0.0","type":"veth-route","proxyNeighbor":{"uplnk":"eth0"}}"#,
        ];
        for b in bad {
            assert_eq!(parse(b.as_bytes()).unwrap_err().code, ErrorCode::InvalidNetworkConfig, "{b}");
        }
    }
}
