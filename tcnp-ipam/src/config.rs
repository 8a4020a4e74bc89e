//! The `ipam` section, parsed once into typed settings.
//!
//! The seed's config works verbatim: `openstackConf {username, password, project, domain,
//! authUrl}`, `neutronConf {networks, mode}`, `routes`. Production additions are optional.

use std::net::IpAddr;
use std::path::PathBuf;

use cni::{CniError, ErrorCode};
use ipnet::IpNet;
use openstack::{Auth, HttpOptions};
use serde::Deserialize;

/// Default state directory; one subdirectory per CNI network name.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/tcnp-ipam";

use crate::cloud_config::RawOpenStack;

/// The raw `ipam` section.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(rename = "type")]
    _type: Option<String>,
    /// Absent: `OS_CLOUD` or the `OS_*` variables of the runtime's environment.
    #[serde(default)]
    openstack_conf: Option<RawOpenStack>,
    neutron_conf: RawNeutron,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    pool: Option<Pool>,
    #[serde(default)]
    node_blocks: Option<NodeBlocks>,
    #[serde(default)]
    quarantine_seconds: Option<u64>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    /// Also accepted here (beside `neutronConf.hostInterface`).
    #[serde(default)]
    host_interface: Option<String>,
    #[serde(default)]
    log_file: Option<PathBuf>,
    #[serde(default)]
    log_level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawNeutron {
    networks: Vec<String>,
    mode: String,
    #[serde(default)]
    host_interface: Option<String>,
    #[serde(default)]
    port_id: Option<String>,
    #[serde(default)]
    use_metadata: bool,
    #[serde(default)]
    metadata_url: Option<String>,
    /// `["IPv4"]` or `["IPv4", "IPv6"]` (Kubernetes' spelling); absent: `["IPv4"]`.
    #[serde(default)]
    ip_families: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    dst: IpNet,
    #[serde(default)]
    gw: Option<IpAddr>,
}

/// The pool a user gets without a `pool` key (and without `nodeBlocks`). A plain ADD PUTs
/// the port's whole fixed-IP list, and Neutron validates every entry, so its cost grows
/// with the pods on the port (1.41x from 2 to 110); two spares make most ADDs and DELs
/// write nothing, at the price of up to two unused addresses (and router routes) per node.
/// `{"max": 0}` turns it off.
pub const DEFAULT_POOL: Pool = Pool { min: 0, max: 2 };

/// Warm pool bounds: keep between `min` and `max` spare addresses on the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Refill when fewer spares remain (default 0: when none is left).
    #[serde(default)]
    pub min: usize,
    /// Refill up to this many; release spares beyond it.
    pub max: usize,
}

/// Node-affine blocks: claim aligned blocks of this prefix length on the VM port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBlocks {
    /// IPv4 block size as a prefix length, e.g. 28 for 16 addresses.
    pub prefix_length: u8,
    /// IPv6 block size; absent: as many addresses as an IPv4 block (124 beside 28), so a
    /// dual-stack node claims its two families alike.
    #[serde(default)]
    pub ipv6_prefix_length: Option<u8>,
}

impl NodeBlocks {
    /// The block prefix length for addresses of `subnet`'s family.
    pub fn prefix_for(&self, subnet: &IpNet) -> u8 {
        match subnet {
            IpNet::V4(_) => self.prefix_length,
            IpNet::V6(_) => self.ipv6_prefix_length.unwrap_or(96 + self.prefix_length),
        }
    }
}

/// Whether pods get an IPv6 address beside their IPv4 one. Off unless asked for, as in
/// Calico's IPAM (`assign_ipv6` defaults to false): a network that gains an IPv6 subnet
/// does not change what existing nodes hand out, and veth-route configures IPv4 only so
/// far (it refuses an IPAM result with an IPv6 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6 {
    /// `ipFamilies: ["IPv4"]`, or no `ipFamilies`: never.
    Off,
    /// `ipFamilies: ["IPv4", "IPv6"]`: always; a network without a usable IPv6 subnet is a
    /// config error.
    Required,
}

/// How the VM's own port is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortLookup {
    /// By the MAC of this interface (None: the default route's interface) on the network.
    HostInterface(Option<String>),
    /// A port id given in the config.
    PortId(String),
    /// Nova metadata `network_data.json` (`vif_id` of the link with our MAC) at this URL.
    Metadata { url: String, interface: Option<String> },
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How to authenticate to Keystone.
    pub auth: Auth,
    /// HTTP transport.
    pub http: HttpOptions,
    /// Catalog region.
    pub region: Option<String>,
    /// Catalog interface (`public` default).
    pub interface: String,
    /// Explicit Neutron URL (skips the catalog).
    pub neutron_url: Option<String>,
    /// The Neutron network holding the VM port.
    pub network_id: String,
    /// How to find the VM port.
    pub port_lookup: PortLookup,
    /// IPv6 pod addresses.
    pub ipv6: Ipv6,
    /// Routes for the result.
    pub routes: Vec<cni::Route>,
    /// Warm pool.
    pub pool: Option<Pool>,
    /// Node-affine blocks (exclusive with `pool`).
    pub node_blocks: Option<NodeBlocks>,
    /// How long a released address stays on the port, tagged released (0: released at once).
    pub quarantine_seconds: u64,
    /// State directory of this network.
    pub data_dir: PathBuf,
    /// Log file (stderr when unset).
    pub log_file: Option<PathBuf>,
    /// Log level.
    pub log_level: log::LevelFilter,
}

pub(crate) fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, msg)
}

impl Settings {
    /// Parses the `ipam` section of network `network_name`.
    pub fn parse(network_name: &str, ipam: &serde_json::Value) -> Result<Settings, CniError> {
        let raw: RawIpam =
            serde_json::from_value(ipam.clone()).map_err(|e| invalid("invalid tcnp-ipam configuration").with_details(e.to_string()))?;
        let nc = &raw.neutron_conf;
        match nc.mode.as_str() {
            "mix" | "mix-route" => {}
            other => {
                return Err(invalid(format!("neutronConf.mode {other:?} is not supported"))
                    .with_details("tcnp-ipam supports \"mix\" (pod IPs are extra fixed IPs of the VM's port) and its alias \"mix-route\""))
            }
        }
        let network_id = match nc.networks.as_slice() {
            [one] if !one.is_empty() => one.clone(),
            [] => return Err(invalid("neutronConf.networks must name the VM's Neutron network")),
            _ => return Err(invalid("neutronConf.networks: mix mode uses exactly one network (the VM port's)")),
        };
        let cloud = crate::cloud_config::resolve(raw.openstack_conf.as_ref())?;
        let host_interface = match (&nc.host_interface, &raw.host_interface) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(format!("hostInterface given twice ({a:?} in neutronConf, {b:?} in ipam)")))
            }
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        let port_lookup = match (&nc.port_id, nc.use_metadata || nc.metadata_url.is_some()) {
            (Some(_), true) => return Err(invalid("neutronConf: give portId or useMetadata, not both")),
            (Some(id), false) => PortLookup::PortId(id.clone()),
            (None, true) => PortLookup::Metadata {
                url: nc.metadata_url.clone().unwrap_or_else(|| "http://169.254.169.254/openstack/latest/network_data.json".into()),
                interface: host_interface,
            },
            (None, false) => PortLookup::HostInterface(host_interface),
        };
        if let Some(p) = raw.pool {
            if p.min > p.max {
                return Err(invalid(format!("pool: need min <= max (got min {} max {}); max 0 turns the pool off", p.min, p.max)));
            }
        }
        if let Some(b) = raw.node_blocks {
            if raw.pool.is_some_and(|p| p.max > 0) {
                return Err(invalid("give pool or nodeBlocks, not both (a node's blocks are its pool)"));
            }
            if !(16..=32).contains(&b.prefix_length) {
                return Err(invalid(format!("nodeBlocks.prefixLength {} must be between 16 and 32", b.prefix_length)));
            }
            // The same bounds in addresses: up to 65536 fixed IPs per claim.
            if let Some(p) = b.ipv6_prefix_length.filter(|p| !(112..=128).contains(p)) {
                return Err(invalid(format!("nodeBlocks.ipv6PrefixLength {p} must be between 112 and 128")));
            }
        }
        let ipv6 = match nc.ip_families.as_deref() {
            None => Ipv6::Off,
            Some(f) => match f.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["IPv4"] => Ipv6::Off,
                ["IPv4", "IPv6"] | ["IPv6", "IPv4"] => Ipv6::Required,
                ["IPv6"] => {
                    return Err(invalid("neutronConf.ipFamilies: IPv6-only pods are not supported")
                        .with_details("use [\"IPv4\", \"IPv6\"]: the VM's port is found by its IPv4 address"))
                }
                other => {
                    return Err(invalid(format!("neutronConf.ipFamilies {other:?} is not a list of IP families"))
                        .with_details("give [\"IPv4\"] or [\"IPv4\", \"IPv6\"], or leave it out (IPv4 only)"))
                }
            },
        };
        for r in &raw.routes {
            if r.gw.is_some_and(|gw| gw.is_ipv4() != r.dst.addr().is_ipv4()) {
                return Err(invalid(format!("routes: gateway {} is not of the family of {}", r.gw.unwrap_or(r.dst.addr()), r.dst)));
            }
        }
        let pool = match (raw.pool, raw.node_blocks) {
            (Some(p), _) if p.max == 0 => None,
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_POOL),
        };
        let log_level = match raw.log_level.as_deref() {
            None => log::LevelFilter::Info,
            Some(l) => cni::logging::parse_level(l).ok_or_else(|| invalid(format!("logLevel {l:?} is not a log level")))?,
        };
        Ok(Settings {
            auth: cloud.auth,
            http: cloud.http,
            region: cloud.region,
            interface: cloud.interface,
            neutron_url: cloud.neutron_url,
            network_id,
            port_lookup,
            ipv6,
            routes: raw.routes.iter().map(|r| cni::Route::new(r.dst, r.gw)).collect(),
            pool,
            node_blocks: raw.node_blocks,
            quarantine_seconds: raw.quarantine_seconds.unwrap_or(0),
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)).join(network_name),
            log_file: raw.log_file,
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openstack::DomainRef;
    use serde_json::json;

    fn seed() -> serde_json::Value {
        json!({"type":"tcnp-ipam","openstackConf":{"username":"admin","password":"c111f3c44f352e91ce76","project":"admin",
               "domain":"default","authUrl":"http://10.125.22.21:35357/v3"},
               "neutronConf":{"networks":["b9535039-d935-4a33-a7cb-2cc1c58ab904"],"mode":"mix"},
               "routes":[{"dst":"0.0.0.0/0"}]})
    }

    #[test]
    fn seed_config_verbatim() {
        let s = Settings::parse("cni0", &seed()).unwrap();
        let Auth::Password(c) = &s.auth else { panic!("{s:?}") };
        assert_eq!(c.user_domain, DomainRef::Id("default".into()));
        assert_eq!(s.network_id, "b9535039-d935-4a33-a7cb-2cc1c58ab904");
        assert_eq!(s.routes.len(), 1);
        assert_eq!(s.port_lookup, PortLookup::HostInterface(None));
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/cni/tcnp-ipam/cni0"));
        assert!(!format!("{s:?}").contains("c111f3c44f352e91ce76"), "password must not show in Debug");
    }

    #[test]
    fn domain_name_modes_and_passwords() {
        let mut c = seed();
        c["openstackConf"]["domain"] = json!("Default");
        c["neutronConf"]["mode"] = json!("mix-route");
        let s = Settings::parse("cni0", &c).unwrap();
        let Auth::Password(creds) = &s.auth else { panic!("{s:?}") };
        assert_eq!(creds.project_domain, DomainRef::Name("Default".into()));
        c["neutronConf"]["mode"] = json!("separate");
        let e = Settings::parse("cni0", &c).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig);
        assert!(e.msg.contains("separate"), "{e}");
        c["neutronConf"]["mode"] = json!("mix");
        c["openstackConf"]["passwordEnv"] = json!("X");
        assert!(Settings::parse("cni0", &c).unwrap_err().msg.contains("only one"));
        c["openstackConf"].as_object_mut().unwrap().remove("passwordEnv");
        c["pool"] = json!({"min": 3, "max": 2});
        assert!(Settings::parse("cni0", &c).unwrap_err().msg.contains("min <= max"));
    }

    #[test]
    fn a_small_pool_is_the_default_and_max_0_turns_it_off() {
        let mut c = seed();
        assert_eq!(Settings::parse("cni0", &c).unwrap().pool, Some(DEFAULT_POOL));
        c["pool"] = json!({"max": 0});
        assert_eq!(Settings::parse("cni0", &c).unwrap().pool, None);
        c["pool"] = json!({"max": 5});
        assert_eq!(Settings::parse("cni0", &c).unwrap().pool, Some(Pool { min: 0, max: 5 }));
        // Blocks are the node's pool: no default pool beside them, an explicit one is refused.
        c["nodeBlocks"] = json!({"prefixLength": 28});
        assert!(Settings::parse("cni0", &c).unwrap_err().msg.contains("not both"));
        c["pool"] = json!({"max": 0});
        assert_eq!(Settings::parse("cni0", &c).unwrap().pool, None);
        c.as_object_mut().unwrap().remove("pool");
        assert_eq!(Settings::parse("cni0", &c).unwrap().pool, None);
    }

    #[test]
    fn ip_families_and_ipv6_routes() {
        let mut c = seed();
        assert_eq!(Settings::parse("cni0", &c).unwrap().ipv6, Ipv6::Off);
        c["neutronConf"]["ipFamilies"] = json!(["IPv4"]);
        assert_eq!(Settings::parse("cni0", &c).unwrap().ipv6, Ipv6::Off);
        c["neutronConf"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
        assert_eq!(Settings::parse("cni0", &c).unwrap().ipv6, Ipv6::Required);
        c["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}, {"dst": "fd00:99::/64", "gw": "fd00:10:10::1"}]);
        let s = Settings::parse("cni0", &c).unwrap();
        assert_eq!(s.routes[1].dst, "::/0".parse::<IpNet>().unwrap());
        assert_eq!(s.routes[2].gw, Some("fd00:10:10::1".parse().unwrap()));
        c["routes"] = json!([{"dst": "::/0", "gw": "10.0.0.1"}]);
        let e = Settings::parse("cni0", &c).unwrap_err();
        assert!(e.msg.contains("not of the family"), "{e}");
        c["routes"] = json!([]);
        // Node blocks serve both families: IPv6 ones as large as the IPv4 ones unless given.
        c["nodeBlocks"] = json!({"prefixLength": 28});
        let b = Settings::parse("cni0", &c).unwrap().node_blocks.unwrap();
        let (v4, v6): (IpNet, IpNet) = ("10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap());
        assert_eq!((b.prefix_for(&v4), b.prefix_for(&v6)), (28, 124));
        c["nodeBlocks"] = json!({"prefixLength": 28, "ipv6PrefixLength": 120});
        assert_eq!(Settings::parse("cni0", &c).unwrap().node_blocks.unwrap().prefix_for(&v6), 120);
        c["nodeBlocks"] = json!({"prefixLength": 28, "ipv6PrefixLength": 64});
        let e = Settings::parse("cni0", &c).unwrap_err();
        assert!(e.msg.contains("ipv6PrefixLength 64"), "{e}");
        c.as_object_mut().unwrap().remove("nodeBlocks");
        for bad in [json!(["IPv6"]), json!(["ipv4"]), json!([])] {
            c["neutronConf"]["ipFamilies"] = bad.clone();
            assert_eq!(Settings::parse("cni0", &c).unwrap_err().code, ErrorCode::InvalidNetworkConfig, "{bad}");
        }
    }
}
