//! A real, local Keystone 30 + Neutron 29 for tests, benchmarks and the demo.
//!
//! Services run under uwsgi on free loopback ports with SQLite in a private run directory,
//! from the venv that `cargo xtask setup` installs (`$VETH_ROUTE_CACHE/openstack-venv`,
//! default `/var/cache/veth-route`). Provisioned with: admin user/project (domain id
//! `default`), a `neutron` service user, the `network` catalog entry, a flat external
//! network `public`, a tenant network with a `10.10.10.0/24` subnet (gateway `.1`) and a
//! router `vrouter` with its gateway on `public` and an interface on the subnet.
//!
//! Use [`shared()`] from tests: one stack per test binary, started lazily, torn down when
//! the process exits (a reaper process kills it even after a crash). Setting
//! `VETH_ROUTE_OS_ENV=<stack.json>` reuses a stack started elsewhere (`cargo xtask openstack up`).
//! Use [`Stack::start`] for a private stack (short token lifetime, stopping Neutron).
//! Passwords are generated per run, written only to 0600 files, and never printed.

mod config;
mod fault_proxy;
mod forward;
mod member;
mod process;
mod start;
mod vm;

pub use config::PAGINATION_MAX_LIMIT;
pub use fault_proxy::{read_message, Fault, FaultProxy, ProxyCounts};
pub use forward::Forwarder;
pub use member::{member, Member};
pub use vm::{random_mac, StackVm};

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ipnet::IpNet;
use openstack::{Credentials, DomainRef, HttpOptions, Neutron, Port, Secret, Session};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Harness failures: a sentence with the failing step and log excerpts.
pub type HarnessError = Box<dyn std::error::Error + Send + Sync>;

/// Environment variable naming a `stack.json` of a running stack to reuse.
pub const ENV_VAR: &str = "VETH_ROUTE_OS_ENV";

/// Everything a client needs to use a running stack (serialised to `stack.json`, mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackEnv {
    /// Run directory (configs, databases, logs).
    pub dir: PathBuf,
    /// Keystone v3 URL (`http://127.0.0.1:PORT/v3`).
    pub auth_url: String,
    /// Neutron base URL (without `/v2.0`), also in the catalog.
    pub neutron_url: String,
    /// Catalog region.
    pub region: String,
    /// Admin user name (domain id `default`).
    pub username: String,
    /// Admin password.
    pub password: Secret,
    /// File holding the admin password (0600), for configs that take `passwordFile`.
    pub password_file: PathBuf,
    /// Admin project name.
    pub project: String,
    /// Admin project id.
    pub project_id: String,
    /// Keystone token lifetime in seconds.
    pub token_expiration: u64,
    /// Tenant network.
    pub network_id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// The subnet's CIDR.
    pub cidr: IpNet,
    /// The subnet's gateway (the router interface).
    pub gateway: IpAddr,
    /// External network `public`.
    pub public_network_id: String,
    /// The router.
    pub router_id: String,
    /// Process group of Keystone's uwsgi.
    pub keystone_pgid: i32,
    /// Process group of Neutron's uwsgi.
    pub neutron_pgid: i32,
}

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Keystone token lifetime (seconds); small values make expiry tests cheap.
    pub token_expiration: u64,
    /// Neutron asks Keystone about every request's token (keystonemiddleware's
    /// `token_cache_time = -1`), so a revoked token is refused at once. Off by default: like
    /// a cloud's Neutron, it then trusts a validated token for 300 s (or until it expires).
    pub validate_every_request: bool,
    /// Tenant subnet CIDR; the gateway is its first address.
    pub cidr: IpNet,
    /// Keep running after this process exits (`cargo xtask openstack up`): no reaper, no Drop cleanup.
    pub detached: bool,
    /// Run directory; default: a fresh unique directory under the system temp dir.
    pub dir: Option<PathBuf>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            token_expiration: 3600,
            validate_every_request: false,
            cidr: "10.10.10.0/24".parse().expect("valid CIDR"),
            detached: false,
            dir: None,
        }
    }
}

/// A running stack (owned or attached). Owned stacks stop and delete their run directory on drop.
pub struct Stack {
    env: StackEnv,
    owned: bool,
    reaper: Mutex<Option<process::Reaper>>,
    /// uwsgi masters we started (keystone, neutron), to wait for when stopping them.
    children: Mutex<Vec<(i32, Child)>>,
    session: OnceLock<Arc<Session>>,
}

/// Machine-local cache of the project: `$VETH_ROUTE_CACHE`, default `/var/cache/veth-route`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("VETH_ROUTE_CACHE").map(PathBuf::from).unwrap_or_else(|| "/var/cache/veth-route".into())
}

/// The venv with keystone, neutron and uwsgi.
pub fn venv_dir() -> PathBuf {
    cache_dir().join("openstack-venv")
}

/// The directory with `provision.py` and `constraints.txt`.
pub fn assets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openstack")
}

/// The tcnp-ipam binary: `TCNP_IPAM_BIN`, or built on first use (`cargo build -p tcnp-ipam`,
/// a no-op when up to date) in the workspace's target directory.
pub fn ipam_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TCNP_IPAM_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "tcnp-ipam"])
            .current_dir(crate::cni_runner::workspace_root())
            .status()
            .expect("run cargo build -p tcnp-ipam");
        assert!(status.success(), "cargo build -p tcnp-ipam failed");
        crate::cni_runner::target_dir().join("debug/tcnp-ipam")
    })
}

/// The stack shared by all tests of this process: reused from `VETH_ROUTE_OS_ENV` or started
/// on first use. Panics with the reason when it cannot be had (tests cannot run without it).
pub fn shared() -> &'static Stack {
    static SHARED: OnceLock<Stack> = OnceLock::new();
    SHARED.get_or_init(|| {
        let stack = match std::env::var_os(ENV_VAR) {
            Some(path) => Stack::attach(Path::new(&path)),
            None => Stack::start(StackOptions::default()),
        };
        stack.unwrap_or_else(|e| panic!("local OpenStack unavailable: {e}"))
    })
}

fn random_hex(bytes: usize) -> Result<String, HarnessError> {
    let mut buf = vec![0u8; bytes];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom")?, &mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), HarnessError> {
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(contents)?;
    Ok(())
}

impl Stack {
    /// Attaches to a running stack described by `stack.json` (not stopped on drop).
    pub fn attach(path: &Path) -> Result<Stack, HarnessError> {
        let text = fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let env: StackEnv = serde_json::from_str(&text).map_err(|e| format!("bad {}: {e}", path.display()))?;
        Ok(Stack { env, owned: false, reaper: Mutex::new(None), children: Mutex::new(Vec::new()), session: OnceLock::new() })
    }

    /// Connection details.
    pub fn env(&self) -> &StackEnv {
        &self.env
    }

    /// Path of this stack's `stack.json` (what `VETH_ROUTE_OS_ENV` points to).
    pub fn env_file(&self) -> PathBuf {
        self.env.dir.join("stack.json")
    }

    /// Admin credentials (domain given by id `default`).
    pub fn credentials(&self) -> Credentials {
        Credentials {
            auth_url: self.env.auth_url.clone(),
            username: self.env.username.clone(),
            password: self.env.password.clone(),
            user_domain: DomainRef::Id("default".into()),
            project: self.env.project.clone(),
            project_domain: DomainRef::Id("default".into()),
        }
    }

    /// An admin Neutron client (one session per stack, so tokens are reused). The test bed's
    /// own requests (creating ports, networks...) are POSTs, which no client may repeat
    /// after a closed connection, so this client opens a connection per request; the
    /// programs under test pool theirs.
    pub fn neutron(&self) -> Neutron {
        let session = self.session.get_or_init(|| {
            let opts = HttpOptions::default();
            let http = reqwest::Client::builder().timeout(opts.timeout).pool_max_idle_per_host(0).build().expect("HTTP client");
            Arc::new(Session::new(http, self.credentials()))
        });
        Neutron::new(session.clone(), &self.env.neutron_url)
    }

    /// The `ipam` section of a CNI config for `tcnp-ipam` against this stack, reading the
    /// password from the stack's 0600 password file. Callers add or override keys.
    pub fn ipam_config(&self, network_id: &str) -> serde_json::Value {
        json!({
            "type": "tcnp-ipam",
            "openstackConf": {
                "username": self.env.username,
                "passwordFile": self.env.password_file,
                "project": self.env.project,
                "domain": "default",
                "authUrl": self.env.auth_url,
                "region": self.env.region,
            },
            "neutronConf": { "networks": [network_id], "mode": "mix" },
            "routes": [{ "dst": "0.0.0.0/0" }],
        })
    }

    /// Creates a port on `network_id` with this MAC: the Neutron side of a test "VM".
    pub fn create_vm_port(&self, network_id: &str, name: &str, mac: &str) -> Result<Port, HarnessError> {
        self.create_vm_port_in(network_id, name, mac, None)
    }

    /// As [`Stack::create_vm_port`], owned by `project_id` when given.
    pub fn create_vm_port_in(&self, network_id: &str, name: &str, mac: &str, project_id: Option<&str>) -> Result<Port, HarnessError> {
        let neutron = self.neutron();
        let mut fields = json!({ "name": name, "mac_address": mac, "device_owner": "compute:nova" });
        if let Some(p) = project_id {
            fields["project_id"] = json!(p);
        }
        Ok(block_on(neutron.create_port(network_id, fields))?)
    }

    /// Deletes a port (missing is fine).
    pub fn delete_port(&self, port_id: &str) -> Result<(), HarnessError> {
        let neutron = self.neutron();
        Ok(block_on(neutron.delete_port(port_id))?)
    }

    /// Creates a network with one subnet (gateway: first host; `pool` limits the allocation
    /// pool to `(start, end)`). Does not attach it to the router.
    pub fn create_network(&self, name: &str, cidr: IpNet, pool: Option<(IpAddr, IpAddr)>) -> Result<(String, String), HarnessError> {
        let neutron = self.neutron();
        block_on(async {
            let net = neutron.create_network(name, json!({})).await?;
            let mut fields = json!({ "name": format!("{name}-subnet"), "enable_dhcp": false });
            if let Some((start, end)) = pool {
                fields["allocation_pools"] = json!([{ "start": start.to_string(), "end": end.to_string() }]);
            }
            let subnet = neutron.create_subnet(&net.id, cidr, fields).await?;
            Ok((net.id, subnet.id))
        })
    }

    /// Adds an IPv6 subnet to `network_id` with this `ipv6_address_mode` (`dhcpv6-stateful`,
    /// `slaac`, `dhcpv6-stateless`; Neutron needs DHCP enabled for any of them) and no RA
    /// mode (the router, not Neutron, would send RAs). Ports created afterwards get an
    /// address of it automatically. Returns the subnet id.
    pub fn add_ipv6_subnet(&self, network_id: &str, cidr: IpNet, address_mode: &str) -> Result<String, HarnessError> {
        self.create_ipv6_subnet(network_id, cidr, address_mode, None)
    }

    /// As [`Stack::add_ipv6_subnet`] with `dhcpv6-stateful` for a Neutron router: RA mode
    /// `dhcpv6-stateful` too, as a router interface needs. Neutron refuses to add one to a
    /// subnet with an address mode but no RA mode (400 "configured to receive RAs from an
    /// external router"), which leaves such a subnet without routes to its pods.
    pub fn add_routed_ipv6_subnet(&self, network_id: &str, cidr: IpNet) -> Result<String, HarnessError> {
        self.create_ipv6_subnet(network_id, cidr, "dhcpv6-stateful", Some("dhcpv6-stateful"))
    }

    fn create_ipv6_subnet(&self, network_id: &str, cidr: IpNet, address_mode: &str, ra_mode: Option<&str>) -> Result<String, HarnessError> {
        let neutron = self.neutron();
        let mut fields = json!({ "name": format!("v6-{address_mode}"), "enable_dhcp": true, "ipv6_address_mode": address_mode });
        if let Some(mode) = ra_mode {
            fields["ipv6_ra_mode"] = json!(mode);
        }
        Ok(block_on(neutron.create_subnet(network_id, cidr, fields))?.id)
    }

    /// Makes Keystone and Neutron reachable at their usual URLs from inside the network
    /// namespace at `netns` (e.g. a namespace playing the VM, where plugins run).
    pub fn expose_in(&self, netns: &Path) -> Result<Forwarder, HarnessError> {
        Forwarder::start(netns, &[url_port(&self.env.auth_url)?, url_port(&self.env.neutron_url)?])
    }

    /// Stops Neutron (owned stacks only): for tests of an unreachable Neutron.
    pub fn stop_neutron(&self) {
        assert!(self.owned, "only an owned stack may stop its Neutron");
        self.stop(self.env.neutron_pgid);
    }

    fn stop(&self, pgid: i32) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        let leader = children.iter_mut().find(|(g, _)| *g == pgid).map(|(_, c)| c);
        process::stop_group(pgid, leader, Duration::from_secs(5));
    }

    /// Stops the services and removes the run directory (what Drop does for owned stacks;
    /// `cargo xtask openstack down` uses it on a detached stack).
    pub fn destroy(&self) {
        self.stop(self.env.neutron_pgid);
        self.stop(self.env.keystone_pgid);
        let _ = fs::remove_dir_all(&self.env.dir);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        self.destroy();
        if let Some(r) = self.reaper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            r.dismiss();
        }
    }
}

/// Runs a future to completion on a private runtime in a scoped thread, so it works from
/// plain and from async (tokio) tests alike.
pub fn block_on<F: std::future::Future + Send>(fut: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(fut))
            .join()
            .expect("block_on thread panicked")
    })
}

fn url_port(url: &str) -> Result<u16, HarnessError> {
    let authority = url.split("://").nth(1).and_then(|r| r.split('/').next()).ok_or("bad URL")?;
    let port = authority.rsplit(':').next().ok_or("URL has no port")?;
    Ok(port.parse()?)
}
