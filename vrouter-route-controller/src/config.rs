//! Settings from flags, environment and an optional JSON config file (in that order of
//! precedence), parsed once into typed values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::ledger::Cluster;
use openstack::{ApplicationCredential, Auth, CloudConfig, Credentials, DomainRef, HttpOptions, Secret};

/// Command line (every flag also reads an environment variable).
#[derive(Debug, Parser, Default)]
#[command(
    name = "vrouter-route-controller",
    version,
    about = "Keeps Neutron router static routes in step with pod IPs on VM ports managed by tcnp-ipam"
)]
pub struct Args {
    /// JSON config file; flags and environment override its values.
    #[arg(long, env = "VRC_CONFIG")]
    pub config: Option<PathBuf>,
    /// This cluster's id: scopes the route records on shared routers. The same in every
    /// replica, different for each cluster sharing a router (a-z, A-Z, 0-9, '.', '-').
    #[arg(long, env = "VRC_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Neutron network id whose managed VM ports carry pod IPs (repeat or comma-separate).
    #[arg(long = "network", env = "VRC_NETWORKS", value_delimiter = ',')]
    pub networks: Vec<String>,
    /// Only manage these router ids (default: every router attached to the networks).
    #[arg(long = "router", env = "VRC_ROUTERS", value_delimiter = ',')]
    pub routers: Vec<String>,
    /// A cloud of clouds.yaml (OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/,
    /// /etc/openstack/), instead of the credential flags below.
    #[arg(long, env = "OS_CLOUD")]
    pub cloud: Option<String>,
    /// Keystone v3 URL, e.g. http://keystone:5000/v3.
    #[arg(long, env = "OS_AUTH_URL")]
    pub auth_url: Option<String>,
    /// Application credential id (with its secret from --application-credential-secret-file
    /// or OS_APPLICATION_CREDENTIAL_SECRET), instead of a user and password.
    #[arg(long, env = "OS_APPLICATION_CREDENTIAL_ID")]
    pub application_credential_id: Option<String>,
    /// File holding the application credential's secret.
    #[arg(long, env = "OS_APPLICATION_CREDENTIAL_SECRET_FILE")]
    pub application_credential_secret_file: Option<PathBuf>,
    /// Keystone user.
    #[arg(long, env = "OS_USERNAME")]
    pub username: Option<String>,
    /// File holding the password (trailing newline ignored). OS_PASSWORD is read as a fallback.
    #[arg(long, env = "OS_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Project (name) to scope the token to.
    #[arg(long, env = "OS_PROJECT_NAME")]
    pub project: Option<String>,
    /// Domain of user and project: an id (`default`, 32 hex digits) or a name (`Default`).
    #[arg(long, env = "OS_DOMAIN")]
    pub domain: Option<String>,
    /// The user's domain, when it differs from the project's (id or name, as --domain).
    #[arg(long, env = "OS_USER_DOMAIN_NAME")]
    pub user_domain: Option<String>,
    /// The project's domain, when it differs from the user's (id or name, as --domain).
    #[arg(long, env = "OS_PROJECT_DOMAIN_NAME")]
    pub project_domain: Option<String>,
    /// Keystone region of the Neutron endpoint.
    #[arg(long, env = "OS_REGION_NAME")]
    pub region: Option<String>,
    /// Catalog interface: public, internal or admin.
    #[arg(long, env = "OS_INTERFACE")]
    pub interface: Option<String>,
    /// Neutron URL, instead of the one in the Keystone catalog.
    #[arg(long, env = "VRC_NEUTRON_URL")]
    pub neutron_url: Option<String>,
    /// Extra CA bundle (PEM) to trust.
    #[arg(long, env = "OS_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Skip TLS certificate verification (only for test clouds).
    #[arg(long, env = "VRC_INSECURE")]
    pub insecure: bool,
    /// Per-request timeout in seconds.
    #[arg(long, env = "VRC_TIMEOUT")]
    pub timeout: Option<u64>,
    /// Address of the health/metrics HTTP server.
    #[arg(long, env = "VRC_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Seconds between cheap change checks.
    #[arg(long, env = "VRC_POLL_INTERVAL")]
    pub poll_interval: Option<u64>,
    /// Seconds between full resyncs, whatever the change check says.
    #[arg(long, env = "VRC_RESYNC_INTERVAL")]
    pub resync_interval: Option<u64>,
    /// One /32 route per pod: do not collapse blocks wholly behind one VM.
    #[arg(long, env = "VRC_NO_AGGREGATE")]
    pub no_aggregate: bool,
    /// Widest block one aggregated route may cover, as an IPv4 prefix length (IPv6 blocks
    /// may cover as many addresses: 24 allows /120).
    #[arg(long, env = "VRC_MIN_PREFIX")]
    pub min_prefix: Option<u8>,
    /// Cap on routes per router, below Neutron's own limit (e.g. to leave room for others).
    #[arg(long, env = "VRC_MAX_ROUTES")]
    pub max_routes: Option<usize>,
    /// Reconcile once and exit: 0 converged, 1 failed, 3 converged but routes were refused.
    #[arg(long)]
    pub once: bool,
    /// Plan and log, write nothing.
    #[arg(long, env = "VRC_DRY_RUN")]
    pub dry_run: bool,
    /// Remove every route this controller added (uninstall; before detaching a router), with --once.
    #[arg(long, requires = "once")]
    pub release: bool,
    /// off, error, warn, info, debug, trace.
    #[arg(long, env = "VRC_LOG_LEVEL")]
    pub log_level: Option<String>,
}

/// The JSON config file: same settings as the flags, camelCase.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    cluster_id: Option<String>,
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    routers: Vec<String>,
    #[serde(default)]
    openstack: FileOpenStack,
    listen: Option<SocketAddr>,
    poll_interval_seconds: Option<u64>,
    resync_interval_seconds: Option<u64>,
    aggregate: Option<bool>,
    min_prefix: Option<u8>,
    max_routes: Option<usize>,
    log_level: Option<String>,
}

/// `openstack` block of the config file (a password is only accepted from a file).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileOpenStack {
    cloud: Option<String>,
    auth_url: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    application_credential_id: Option<String>,
    application_credential_secret_file: Option<PathBuf>,
    project: Option<String>,
    domain: Option<String>,
    user_domain: Option<String>,
    project_domain: Option<String>,
    region: Option<String>,
    interface: Option<String>,
    neutron_url: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    timeout_seconds: Option<u64>,
}

/// Everything the controller runs with.
#[derive(Debug)]
pub struct Config {
    /// Networks to watch.
    pub networks: Vec<String>,
    /// Routers to restrict to (empty: all attached).
    pub routers: Vec<String>,
    /// How to authenticate to Keystone.
    pub auth: Auth,
    /// HTTP client settings.
    pub http: HttpOptions,
    /// Region for the catalog lookup.
    pub region: Option<String>,
    /// Catalog interface.
    pub interface: String,
    /// Neutron URL override.
    pub neutron_url: Option<String>,
    /// Health/metrics address.
    pub listen: SocketAddr,
    /// Change-check period.
    pub poll_interval: Duration,
    /// Full resync period.
    pub resync_interval: Duration,
    /// Reconciler settings.
    pub reconcile: crate::reconcile::Settings,
    /// Single pass.
    pub once: bool,
    /// Log level.
    pub log_level: log::LevelFilter,
}

/// A setting is missing or malformed.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn required(v: Option<String>, what: &str, flag: &str, env: &str) -> Result<String, ConfigError> {
    v.filter(|s| !s.is_empty()).ok_or_else(|| ConfigError(format!("{what} is required (--{flag}, {env} or the config file)")))
}

/// `default` and 32-hex-digit values are domain ids, anything else a name.
pub fn domain_ref(s: &str) -> DomainRef {
    if s == "default" || (s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())) {
        DomainRef::Id(s.to_string())
    } else {
        DomainRef::Name(s.to_string())
    }
}

/// Secrets that only come from the environment, never from a flag (argv is public).
#[derive(Default)]
pub struct EnvSecrets {
    /// `OS_PASSWORD`.
    pub password: Option<String>,
    /// `OS_APPLICATION_CREDENTIAL_SECRET`.
    pub application_credential_secret: Option<String>,
}

impl EnvSecrets {
    /// From this process's environment.
    pub fn from_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        EnvSecrets { password: get("OS_PASSWORD"), application_credential_secret: get("OS_APPLICATION_CREDENTIAL_SECRET") }
    }
}

fn read_secret(p: &std::path::Path, what: &str) -> Result<String, ConfigError> {
    Ok(std::fs::read_to_string(p)
        .map_err(|e| ConfigError(format!("cannot read {what} file {}: {e}", p.display())))?
        .trim_end_matches(['\n', '\r'])
        .to_string())
}

impl Config {
    /// Merges flags/env over the file. Credentials come from one source: a cloud of
    /// clouds.yaml, an application credential, or a user and password.
    pub fn load(args: Args, secrets: EnvSecrets) -> Result<Config, ConfigError> {
        let file: FileConfig = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
                serde_json::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", p.display())))?
            }
            None => FileConfig::default(),
        };
        let os = file.openstack;
        let networks = if args.networks.is_empty() { file.networks } else { args.networks };
        if networks.is_empty() {
            return Err(ConfigError("at least one network is required (--network, VRC_NETWORKS or \"networks\")".into()));
        }
        let cluster_id = required(args.cluster_id.or(file.cluster_id), "the cluster id", "cluster-id", "VRC_CLUSTER_ID")?;
        let cluster = Cluster::new(&cluster_id).map_err(|e| ConfigError(e.to_string()))?;
        let app_cred_id = args.application_credential_id.or(os.application_credential_id);
        let username = args.username.or(os.username);
        let (auth, cloud) = match args.cloud.or(os.cloud) {
            Some(name) => {
                if username.is_some() || app_cred_id.is_some() {
                    return Err(ConfigError(format!(
                        "cloud {name:?} and explicit credentials (a user name or an application credential id) are both given; use one"
                    )));
                }
                let cloud = CloudConfig::from_clouds_yaml(&name, None).map_err(|e| ConfigError(e.to_string()))?;
                (cloud.auth.clone(), Some(cloud))
            }
            None => {
                let auth_url = required(args.auth_url.or(os.auth_url), "the Keystone URL", "auth-url", "OS_AUTH_URL")?;
                let auth = match app_cred_id {
                    Some(id) => {
                        let secret = match args.application_credential_secret_file.or(os.application_credential_secret_file) {
                            Some(p) => read_secret(&p, "application credential secret")?,
                            None => secrets.application_credential_secret.ok_or_else(|| {
                                ConfigError("an application credential needs its secret (--application-credential-secret-file, OS_APPLICATION_CREDENTIAL_SECRET_FILE, OS_APPLICATION_CREDENTIAL_SECRET or openstack.applicationCredentialSecretFile)".into())
                            })?,
                        };
                        Auth::ApplicationCredential(ApplicationCredential { auth_url, id, secret: Secret::new(secret) })
                    }
                    None => {
                        let password = match args.password_file.or(os.password_file) {
                            Some(p) => read_secret(&p, "password")?,
                            None => secrets.password.ok_or_else(|| {
                                ConfigError(
                                    "a password is required (--password-file, OS_PASSWORD_FILE, OS_PASSWORD or openstack.passwordFile)"
                                        .into(),
                                )
                            })?,
                        };
                        let domain = args.domain.or(os.domain).unwrap_or_else(|| "default".into());
                        Auth::Password(Credentials {
                            auth_url,
                            username: required(username, "the user name", "username", "OS_USERNAME")?,
                            password: Secret::new(password),
                            user_domain: domain_ref(args.user_domain.or(os.user_domain).as_deref().unwrap_or(&domain)),
                            project: required(args.project.or(os.project), "the project", "project", "OS_PROJECT_NAME")?,
                            project_domain: domain_ref(args.project_domain.or(os.project_domain).as_deref().unwrap_or(&domain)),
                        })
                    }
                };
                (auth, None)
            }
        };
        let http = HttpOptions {
            timeout: Duration::from_secs(args.timeout.or(os.timeout_seconds).unwrap_or(30)),
            ca_bundle: args.cacert.or(os.ca_file).or_else(|| cloud.as_ref().and_then(|c| c.cacert.clone())),
            insecure: args.insecure || os.insecure || cloud.as_ref().is_some_and(|c| c.insecure),
        };
        let level = args.log_level.or(file.log_level).unwrap_or_else(|| "info".into());
        let log_level = level.parse().map_err(|_| ConfigError(format!("unknown log level {level:?}")))?;
        let min_prefix = args.min_prefix.or(file.min_prefix).unwrap_or(24);
        if min_prefix > 32 {
            return Err(ConfigError(format!("minPrefix {min_prefix} is not a prefix length")));
        }
        let poll = args.poll_interval.or(file.poll_interval_seconds).unwrap_or(5).max(1);
        let resync = args.resync_interval.or(file.resync_interval_seconds).unwrap_or(60).max(poll);
        Ok(Config {
            networks,
            routers: if args.routers.is_empty() { file.routers } else { args.routers },
            auth,
            http,
            region: args.region.or(os.region).or_else(|| cloud.as_ref().and_then(|c| c.region.clone())),
            interface: args.interface.or(os.interface).or_else(|| cloud.and_then(|c| c.interface)).unwrap_or_else(|| "public".into()),
            neutron_url: args.neutron_url.or(os.neutron_url),
            listen: args.listen.or(file.listen).unwrap_or_else(|| "0.0.0.0:9180".parse().expect("valid address")),
            poll_interval: Duration::from_secs(poll),
            resync_interval: Duration::from_secs(resync),
            reconcile: crate::reconcile::Settings {
                cluster,
                shape: crate::desired::Shape { aggregate: !args.no_aggregate && file.aggregate.unwrap_or(true), min_prefix },
                max_routes: args.max_routes.or(file.max_routes),
                dry_run: args.dry_run,
                release: args.release,
            },
            once: args.once,
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("vrc").chain(list.iter().copied())).unwrap()
    }

    #[test]
    fn flags_override_the_file_and_password_comes_from_a_file() {
        let dir = std::env::temp_dir().join(format!("vrc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
        let cfg = dir.join("c.json");
        let body = serde_json::json!({
            "clusterId": "prod", "networks": ["net-a"], "maxRoutes": 20, "aggregate": false,
            "openstack": {"authUrl": "http://k/v3", "username": "u", "project": "p", "domain": "Default",
                          "passwordFile": dir.join("pw")}
        });
        std::fs::write(&cfg, body.to_string()).unwrap();
        let c = Config::load(
            args(&["--config", cfg.to_str().unwrap(), "--network", "net-b,net-c", "--max-routes", "10"]),
            EnvSecrets::default(),
        )
        .unwrap();
        assert_eq!(c.networks, ["net-b", "net-c"]);
        assert_eq!(c.reconcile.cluster.as_str(), "prod");
        assert_eq!(c.reconcile.max_routes, Some(10));
        assert!(!c.reconcile.shape.aggregate);
        let Auth::Password(creds) = &c.auth else { panic!("password auth expected: {:?}", c.auth) };
        assert_eq!(creds.password.expose(), "s3cret");
        assert_eq!(creds.user_domain, DomainRef::Name("Default".into()));
        assert!(!format!("{c:?}").contains("s3cret"), "no secret in Debug output");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_settings_are_named() {
        let e = Config::load(args(&["--network", "n"]), pw()).unwrap_err().to_string();
        assert!(e.contains("VRC_CLUSTER_ID"), "{e}");
        let e = Config::load(args(&["--network", "n", "--cluster-id", "a:b"]), pw()).unwrap_err().to_string();
        assert!(e.contains("cluster id"), "{e}");
        let e = Config::load(args(&["--network", "n", "--cluster-id", "c"]), pw()).unwrap_err().to_string();
        assert!(e.contains("OS_AUTH_URL"), "{e}");
        let e = Config::load(args(&[]), EnvSecrets::default()).unwrap_err().to_string();
        assert!(e.contains("network"), "{e}");
    }

    fn pw() -> EnvSecrets {
        EnvSecrets { password: Some("pw".into()), ..EnvSecrets::default() }
    }

    #[test]
    fn application_credentials_and_separate_domains() {
        let secrets = EnvSecrets { application_credential_secret: Some("app-s3cret".into()), ..EnvSecrets::default() };
        let base = ["--network", "n", "--cluster-id", "c", "--auth-url", "http://k/v3"];
        let c = Config::load(args(&[&base[..], &["--application-credential-id", "ac1"]].concat()), secrets).unwrap();
        let Auth::ApplicationCredential(a) = &c.auth else { panic!("{:?}", c.auth) };
        assert_eq!((a.id.as_str(), a.secret.expose()), ("ac1", "app-s3cret"));
        assert!(!format!("{c:?}").contains("app-s3cret"), "no secret in Debug output");
        let e = Config::load(args(&[&base[..], &["--application-credential-id", "ac1"]].concat()), EnvSecrets::default()).unwrap_err();
        assert!(e.to_string().contains("OS_APPLICATION_CREDENTIAL_SECRET"), "{e}");
        let split = ["--username", "u", "--project", "p", "--user-domain", "Users", "--project-domain", "default"];
        let c = Config::load(args(&[&base[..], &split[..]].concat()), pw()).unwrap();
        let Auth::Password(p) = &c.auth else { panic!("{:?}", c.auth) };
        assert_eq!((&p.user_domain, &p.project_domain), (&DomainRef::Name("Users".into()), &DomainRef::Id("default".into())));
    }

    #[test]
    fn a_cloud_of_clouds_yaml_or_explicit_credentials_not_both() {
        let dir = std::env::temp_dir().join(format!("vrc-clouds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let clouds = dir.join("clouds.yaml");
        std::fs::write(
            &clouds,
            "clouds:\n  lab:\n    region_name: RegionTwo\n    interface: internal\n    auth:\n      auth_url: http://k/v3\n      application_credential_id: ac9\n      application_credential_secret: yaml-s3cret\n",
        )
        .unwrap();
        // OS_CLIENT_CONFIG_FILE is how openstacksdk is pointed at a file; read by the crate.
        std::env::set_var("OS_CLIENT_CONFIG_FILE", &clouds);
        let c = Config::load(args(&["--network", "n", "--cluster-id", "c", "--cloud", "lab"]), EnvSecrets::default()).unwrap();
        assert!(matches!(&c.auth, Auth::ApplicationCredential(a) if a.id == "ac9"), "{:?}", c.auth);
        assert_eq!((c.region.as_deref(), c.interface.as_str()), (Some("RegionTwo"), "internal"));
        let e = Config::load(args(&["--network", "n", "--cluster-id", "c", "--cloud", "lab", "--username", "u"]), pw()).unwrap_err();
        assert!(e.to_string().contains("use one"), "{e}");
        std::env::remove_var("OS_CLIENT_CONFIG_FILE");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(serde_json::from_str::<FileConfig>(r#"{"netwrks": []}"#).is_err());
    }

    #[test]
    fn domain_id_or_name() {
        assert_eq!(domain_ref("default"), DomainRef::Id("default".into()));
        assert_eq!(domain_ref("Default"), DomainRef::Name("Default".into()));
    }
}
