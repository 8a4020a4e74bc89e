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

pub mod bench;
mod config;
mod forward;
mod process;
mod vm;

pub use forward::Forwarder;
pub use vm::{random_mac, StackVm};

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// The venv with keystone, neutron and uwsgi.
pub fn venv_dir() -> PathBuf {
    let cache = std::env::var_os("VETH_ROUTE_CACHE").map(PathBuf::from).unwrap_or_else(|| "/var/cache/veth-route".into());
    cache.join("openstack-venv")
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

fn run_step(what: &str, cmd: &mut Command, log: &Path) -> Result<(), HarnessError> {
    let out = fs::File::options().create(true).append(true).open(log)?;
    let status = cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).status()?;
    if !status.success() {
        return Err(format!("{what} failed ({status}):\n{}", process::tail(log)).into());
    }
    Ok(())
}

impl Stack {
    /// Starts and provisions a new stack (about 15-30 s).
    pub fn start(opts: StackOptions) -> Result<Stack, HarnessError> {
        let venv = venv_dir();
        let bin = venv.join("bin");
        if !bin.join("uwsgi").exists() || !bin.join("keystone-manage").exists() {
            return Err(format!("no OpenStack venv at {}: run `cargo xtask setup`", venv.display()).into());
        }
        let dir = match &opts.dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("veth-route-os-{}-{}", std::process::id(), random_hex(4)?)),
        };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let mut reaper = if opts.detached { None } else { Some(process::Reaper::start(&dir)?) };
        let result = Self::provision(&opts, &venv, &dir, reaper.as_mut());
        match result {
            Ok((env, children)) => Ok(Stack {
                env,
                owned: !opts.detached,
                reaper: Mutex::new(reaper),
                children: Mutex::new(children),
                session: OnceLock::new(),
            }),
            Err(e) => {
                // The reaper (or, detached, nobody) would clean up; do it now so failures leave nothing.
                if let Some(r) = reaper {
                    drop(r); // closing its stdin triggers the cleanup
                }
                Err(e)
            }
        }
    }

    fn provision(opts: &StackOptions, venv: &Path, dir: &Path, mut reaper: Option<&mut process::Reaper>) -> Result<(StackEnv, Vec<(i32, Child)>), HarnessError> {
        let bin = venv.join("bin");
        let admin_password = random_hex(16)?;
        let neutron_password = random_hex(16)?;
        let region = "RegionOne".to_string();
        let ks_port = process::free_port()?;
        let nt_port = process::free_port()?;
        let auth_url = format!("http://127.0.0.1:{ks_port}/v3");
        let neutron_url = format!("http://127.0.0.1:{nt_port}");
        let setup_log = dir.join("setup.log");

        // Keystone: config, schema, keys, bootstrap (password via environment, not argv).
        let ks_dir = dir.join("keystone");
        fs::DirBuilder::new().mode(0o700).create(&ks_dir)?;
        write_private(&ks_dir.join("keystone.conf"), config::keystone_conf(dir, opts.token_expiration).as_bytes())?;
        let ks_conf = ks_dir.join("keystone.conf");
        let manage = |args: &[&str]| {
            let mut c = Command::new(bin.join("keystone-manage"));
            c.arg("--config-file").arg(&ks_conf).args(args);
            c
        };
        run_step("keystone-manage db_sync", &mut manage(&["db_sync"]), &setup_log)?;
        for step in ["fernet_setup", "credential_setup"] {
            run_step(step, &mut manage(&[step, "--keystone-user", "root", "--keystone-group", "root"]), &setup_log)?;
        }
        let mut bootstrap = manage(&[
            "bootstrap",
            "--bootstrap-region-id",
            &region,
            "--bootstrap-admin-url",
            &auth_url,
            "--bootstrap-internal-url",
            &auth_url,
            "--bootstrap-public-url",
            &auth_url,
        ]);
        bootstrap.env("OS_BOOTSTRAP_PASSWORD", &admin_password);
        run_step("keystone-manage bootstrap", &mut bootstrap, &setup_log)?;

        // Neutron: config and schema from the models.
        let nt_dir = dir.join("neutron");
        fs::DirBuilder::new().mode(0o700).create(&nt_dir)?;
        fs::DirBuilder::new().mode(0o700).create(dir.join("locks"))?;
        write_private(&nt_dir.join("neutron.conf"), config::neutron_conf(dir, venv, &auth_url, &neutron_password).as_bytes())?;
        let db_url = format!("sqlite:///{}/neutron.db", dir.display());
        run_step(
            "neutron schema",
            Command::new(bin.join("python")).arg("-c").arg(config::NEUTRON_SCHEMA_PY).arg(&db_url),
            &setup_log,
        )?;

        // Serve both; Neutron loads slowly (10-20 s), so it starts while Keystone does.
        let uwsgi = |port: u16, module: &str, threads: &str| {
            let mut c = Command::new(bin.join("uwsgi"));
            // uwsgi's plain http-socket closes after each response without saying so, which
            // breaks clients that pool connections: announce it. (http11-socket would keep idle
            // connections pinned to the few worker threads.)
            c.args(["--http-socket", &format!("127.0.0.1:{port}"), "--add-header", "Connection: close"])
                .args(["--module", module])
                .args(["--master", "--processes", "1", "--threads", threads, "--die-on-term", "--need-app"])
                .args(["--home"]).arg(venv);
            c
        };
        let mut ks_cmd = uwsgi(ks_port, "keystone.wsgi.api:application", "2");
        ks_cmd.env("OS_KEYSTONE_CONFIG_DIR", &ks_dir).env("OS_KEYSTONE_CONFIG_FILES", "keystone.conf");
        let ks_log = dir.join("keystone-uwsgi.log");
        let mut keystone = process::spawn_group(&mut ks_cmd, &ks_log)?;
        let keystone_pgid = keystone.id() as i32;
        if let Some(r) = reaper.as_deref_mut() {
            r.watch(keystone_pgid)?;
        }
        let mut nt_cmd = uwsgi(nt_port, "neutron.wsgi.api:application", "1");
        nt_cmd.env("OS_NEUTRON_CONFIG_DIR", &nt_dir).env("OS_NEUTRON_CONFIG_FILES", "neutron.conf");
        let nt_log = dir.join("neutron-uwsgi.log");
        let mut neutron = process::spawn_group(&mut nt_cmd, &nt_log)?;
        let neutron_pgid = neutron.id() as i32;
        if let Some(r) = reaper {
            r.watch(neutron_pgid)?;
        }
        fn stop_both(ks: (i32, &mut Child), nt: (i32, &mut Child)) {
            process::stop_group(ks.0, Some(ks.1), Duration::from_secs(3));
            process::stop_group(nt.0, Some(nt.1), Duration::from_secs(3));
        }
        if let Err(e) = process::wait_http(ks_port, "/v3", &mut keystone, &ks_log, Duration::from_secs(120)) {
            stop_both((keystone_pgid, &mut keystone), (neutron_pgid, &mut neutron));
            return Err(format!("Keystone did not start: {e}").into());
        }

        // Neutron's version document needs no token; waiting here notices a crash at once.
        if let Err(e) = process::wait_http(nt_port, "/", &mut neutron, &nt_log, Duration::from_secs(180)) {
            stop_both((keystone_pgid, &mut keystone), (neutron_pgid, &mut neutron));
            return Err(format!("Neutron did not start: {e}").into());
        }

        let cidr = opts.cidr;
        let gateway = cidr.hosts().next().ok_or("subnet has no host addresses")?;
        let input = json!({
            "auth_url": auth_url,
            "neutron_url": neutron_url,
            "region": region,
            "admin_password": admin_password,
            "neutron_password": neutron_password,
            "network_name": "tenant",
            "cidr": cidr.to_string(),
            "gateway": gateway.to_string(),
            "public_cidr": "172.24.4.0/24",
        });
        let mut prov = Command::new(bin.join("python"))
            .arg(assets_dir().join("provision.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::options().create(true).append(true).open(&setup_log)?)
            .spawn()?;
        prov.stdin.take().ok_or("no stdin")?.write_all(input.to_string().as_bytes())?;
        let out = prov.wait_with_output()?;
        if !out.status.success() {
            stop_both((keystone_pgid, &mut keystone), (neutron_pgid, &mut neutron));
            return Err(format!(
                "provisioning failed:\n{}\n-- neutron log:\n{}",
                process::tail(&setup_log),
                process::tail(&nt_log)
            )
            .into());
        }
        let ids: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let id = |k: &str| ids[k].as_str().map(str::to_string).ok_or_else(|| format!("provision output lacks {k}"));

        let password_file = dir.join("admin-password");
        write_private(&password_file, admin_password.as_bytes())?;
        let env = StackEnv {
            dir: dir.to_path_buf(),
            auth_url,
            neutron_url,
            region,
            username: "admin".into(),
            password: Secret::new(admin_password),
            password_file,
            project: "admin".into(),
            project_id: id("project_id")?,
            token_expiration: opts.token_expiration,
            network_id: id("network_id")?,
            subnet_id: id("subnet_id")?,
            cidr,
            gateway,
            public_network_id: id("public_network_id")?,
            router_id: id("router_id")?,
            keystone_pgid,
            neutron_pgid,
        };
        write_private(&dir.join("stack.json"), serde_json::to_string_pretty(&env)?.as_bytes())?;
        write_private(&dir.join("clouds.yaml"), clouds_yaml(&env).as_bytes())?;
        Ok((env, vec![(keystone_pgid, keystone), (neutron_pgid, neutron)]))
    }

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

    /// An admin Neutron client (one session per stack, so tokens are reused).
    pub fn neutron(&self) -> Neutron {
        let session = self.session.get_or_init(|| {
            let http = HttpOptions::default().build().expect("HTTP client");
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
        let neutron = self.neutron();
        let fields = json!({ "name": name, "mac_address": mac, "device_owner": "compute:nova" });
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
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(fut)
        })
        .join()
        .expect("block_on thread panicked")
    })
}

fn url_port(url: &str) -> Result<u16, HarnessError> {
    let authority = url.split("://").nth(1).and_then(|r| r.split('/').next()).ok_or("bad URL")?;
    let port = authority.rsplit(':').next().ok_or("URL has no port")?;
    Ok(port.parse()?)
}

fn clouds_yaml(env: &StackEnv) -> String {
    format!(
        "clouds:\n  veth-route:\n    auth:\n      auth_url: {}\n      username: {}\n      password: {}\n      \
         project_name: {}\n      user_domain_id: default\n      project_domain_id: default\n    region_name: {}\n",
        env.auth_url,
        env.username,
        env.password.expose(),
        env.project,
        env.region
    )
}
