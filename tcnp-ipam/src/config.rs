//! The `ipam` section, parsed once into typed settings.
//!
//! The seed's config works verbatim: `openstackConf {username, password, project, domain,
//! authUrl}`, `neutronConf {networks, mode}`, `routes`. Production additions are optional.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use cni::{CniError, ErrorCode};
use ipnet::IpNet;
use openstack::{Credentials, DomainRef, HttpOptions, Secret};
use serde::Deserialize;

/// Default state directory; one subdirectory per CNI network name.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/tcnp-ipam";

/// The raw `ipam` section.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(rename = "type")]
    _type: Option<String>,
    openstack_conf: RawOpenStack,
    neutron_conf: RawNeutron,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    pool: Option<Pool>,
    #[serde(default)]
    node_blocks: Option<NodeBlocks>,
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
struct RawOpenStack {
    auth_url: String,
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    password_env: Option<String>,
    project: String,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    user_domain_id: Option<String>,
    #[serde(default)]
    user_domain_name: Option<String>,
    #[serde(default)]
    project_domain_id: Option<String>,
    #[serde(default)]
    project_domain_name: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    neutron_url: Option<String>,
    #[serde(default)]
    ca_bundle: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    timeout_seconds: Option<u64>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    dst: IpNet,
    #[serde(default)]
    gw: Option<IpAddr>,
}

/// Warm pool bounds: keep between `min` and `max` spare addresses on the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Refill when fewer spares remain.
    pub min: usize,
    /// Refill up to this many; release spares beyond it.
    pub max: usize,
}

/// Node-affine blocks: claim aligned blocks of this prefix length on the VM port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBlocks {
    /// Block size as a prefix length, e.g. 28 for 16 addresses.
    pub prefix_length: u8,
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
    /// Keystone credentials.
    pub credentials: Credentials,
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
    /// Routes for the result.
    pub routes: Vec<cni::Route>,
    /// Warm pool.
    pub pool: Option<Pool>,
    /// Node-affine blocks (exclusive with `pool`).
    pub node_blocks: Option<NodeBlocks>,
    /// State directory of this network.
    pub data_dir: PathBuf,
    /// Log file (stderr when unset).
    pub log_file: Option<PathBuf>,
    /// Log level.
    pub log_level: log::LevelFilter,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, msg)
}

/// `domain` as the seed uses it: Keystone ids are `default` or 32 hex digits; anything
/// else (e.g. `Default`) is a name.
fn domain_from_shorthand(d: &str) -> DomainRef {
    let is_id = d == "default" || (d.len() == 32 && d.chars().all(|c| c.is_ascii_hexdigit()));
    if is_id {
        DomainRef::Id(d.to_string())
    } else {
        DomainRef::Name(d.to_string())
    }
}

fn pick_domain(id: Option<String>, name: Option<String>, shorthand: Option<&str>, which: &str) -> Result<DomainRef, CniError> {
    match (id, name) {
        (Some(_), Some(_)) => Err(invalid(format!("openstackConf: give {which}DomainId or {which}DomainName, not both"))),
        (Some(id), None) => Ok(DomainRef::Id(id)),
        (None, Some(name)) => Ok(DomainRef::Name(name)),
        (None, None) => Ok(shorthand.map(domain_from_shorthand).unwrap_or_else(|| DomainRef::Id("default".into()))),
    }
}

fn read_password(os: &RawOpenStack) -> Result<Secret, CniError> {
    let given = [os.password.is_some(), os.password_file.is_some(), os.password_env.is_some()];
    match given.iter().filter(|g| **g).count() {
        0 => return Err(invalid("openstackConf needs one of password, passwordFile or passwordEnv")),
        1 => {}
        _ => return Err(invalid("openstackConf: give only one of password, passwordFile and passwordEnv")),
    }
    if let Some(p) = &os.password {
        return Ok(Secret::new(p.clone()));
    }
    if let Some(path) = &os.password_file {
        let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read passwordFile {}: {e}", path.display())))?;
        let pw = text.trim_end_matches(['\n', '\r']);
        if pw.is_empty() {
            return Err(invalid(format!("passwordFile {} is empty", path.display())));
        }
        return Ok(Secret::new(pw));
    }
    let var = os.password_env.as_deref().unwrap_or_default();
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(invalid(format!("passwordEnv: environment variable {var} is not set"))),
    }
}

impl Settings {
    /// Parses the `ipam` section of network `network_name`.
    pub fn parse(network_name: &str, ipam: &serde_json::Value) -> Result<Settings, CniError> {
        let raw: RawIpam =
            serde_json::from_value(ipam.clone()).map_err(|e| invalid("invalid tcnp-ipam configuration").with_details(e.to_string()))?;
        let os = &raw.openstack_conf;
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
        let auth_url = os.auth_url.trim_end_matches('/').to_string();
        if !(auth_url.starts_with("http://") || auth_url.starts_with("https://")) {
            return Err(invalid(format!("openstackConf.authUrl {auth_url:?} is not an http(s) URL")));
        }
        let credentials = Credentials {
            auth_url,
            username: os.username.clone(),
            password: read_password(os)?,
            user_domain: pick_domain(os.user_domain_id.clone(), os.user_domain_name.clone(), os.domain.as_deref(), "user")?,
            project: os.project.clone(),
            project_domain: pick_domain(os.project_domain_id.clone(), os.project_domain_name.clone(), os.domain.as_deref(), "project")?,
        };
        if os.ca_bundle.is_some() && os.insecure {
            return Err(invalid("openstackConf: caBundle and insecure contradict each other"));
        }
        let http = HttpOptions {
            timeout: Duration::from_secs(os.timeout_seconds.unwrap_or(30).max(1)),
            ca_bundle: os.ca_bundle.clone(),
            insecure: os.insecure,
        };
        let interface = os.interface.clone().unwrap_or_else(|| "public".into());
        if !matches!(interface.as_str(), "public" | "internal" | "admin") {
            return Err(invalid(format!("openstackConf.interface {interface:?} must be public, internal or admin")));
        }
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
            if p.max == 0 || p.min > p.max {
                return Err(invalid(format!("pool: need 0 <= min <= max and max > 0 (got min {} max {})", p.min, p.max)));
            }
        }
        if let Some(b) = raw.node_blocks {
            if raw.pool.is_some() {
                return Err(invalid("give pool or nodeBlocks, not both (a node's blocks are its pool)"));
            }
            if !(16..=32).contains(&b.prefix_length) {
                return Err(invalid(format!("nodeBlocks.prefixLength {} must be between 16 and 32", b.prefix_length)));
            }
        }
        let log_level = match raw.log_level.as_deref() {
            None => log::LevelFilter::Info,
            Some(l) => cni::logging::parse_level(l).ok_or_else(|| invalid(format!("logLevel {l:?} is not a log level")))?,
        };
        Ok(Settings {
            credentials,
            http,
            region: os.region.clone(),
            interface,
            neutron_url: os.neutron_url.clone(),
            network_id,
            port_lookup,
            routes: raw.routes.iter().map(|r| cni::Route::new(r.dst, r.gw)).collect(),
            pool: raw.pool,
            node_blocks: raw.node_blocks,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)).join(network_name),
            log_file: raw.log_file,
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(s.credentials.user_domain, DomainRef::Id("default".into()));
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
        assert_eq!(s.credentials.project_domain, DomainRef::Name("Default".into()));
        c["neutronConf"]["mode"] = json!("separate");
        let e = Settings::parse("cni0", &c).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig);
        assert!(e.msg.contains("separate"), "{e}");
        c["neutronConf"]["mode"] = json!("mix");
        c["openstackConf"]["passwordEnv"] = json!("X");
        assert!(Settings::parse("cni0", &c).unwrap_err().msg.contains("only one"));
        c["pool"] = json!({"min": 3, "max": 2});
    }
}
