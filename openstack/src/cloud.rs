//! Operators' conventions, as keystoneauth and openstacksdk read them: a cloud of
//! `clouds.yaml` named by `OS_CLOUD` (or by a setting), or the `OS_*` variables
//! (`OS_AUTH_URL`, `OS_USERNAME`, `OS_PASSWORD`, `OS_PROJECT_NAME`, `OS_USER_DOMAIN_NAME`,
//! `OS_PROJECT_DOMAIN_ID`, ..., `OS_APPLICATION_CREDENTIAL_ID`/`_SECRET`, `OS_REGION_NAME`,
//! `OS_INTERFACE`, `OS_CACERT`, `OS_INSECURE`). Passwords and application credentials both
//! work; user and project domains are separate, by id or by name, `domain_id`/`domain_name`
//! being the default for both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::keystone::{ApplicationCredential, Auth, Credentials, DomainRef};
use crate::secret::Secret;

/// Where openstacksdk looks for `clouds.yaml`, after `OS_CLIENT_CONFIG_FILE`.
const SEARCH_PATH: &[&str] = &["clouds.yaml", "~/.config/openstack/clouds.yaml", "/etc/openstack/clouds.yaml"];

/// A cloud's connection settings.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// How to authenticate.
    pub auth: Auth,
    /// `region_name`.
    pub region: Option<String>,
    /// `interface` (public, internal, admin).
    pub interface: Option<String>,
    /// `cacert`: extra CA bundle.
    pub cacert: Option<PathBuf>,
    /// `verify: false` / `OS_INSECURE`.
    pub insecure: bool,
}

/// The `auth` section of a cloud, or the `OS_*` variables: every key keystoneauth's
/// password and application-credential plugins know.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFields {
    auth_url: Option<String>,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<String>,
    project_name: Option<String>,
    project_id: Option<String>,
    #[serde(alias = "tenant_name")]
    _tenant_name: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    domain_name: Option<String>,
    domain_id: Option<String>,
    application_credential_id: Option<String>,
    application_credential_secret: Option<String>,
    application_credential_name: Option<String>,
}

/// One entry of `clouds:`.
#[derive(Debug, Default, Deserialize)]
struct CloudEntry {
    #[serde(default)]
    auth: AuthFields,
    auth_type: Option<String>,
    region_name: Option<String>,
    interface: Option<String>,
    cacert: Option<PathBuf>,
    verify: Option<bool>,
    identity_api_version: Option<serde_yaml::Value>,
    /// Other openstacksdk settings (e.g. `*_api_version`, `networks`) do not concern us.
    #[serde(flatten)]
    _other: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
struct CloudsFile {
    clouds: BTreeMap<String, CloudEntry>,
}

fn invalid(msg: String) -> Error {
    Error::Config(msg)
}

fn domain(id: Option<String>, name: Option<String>, default: &Option<DomainRef>, which: &str) -> Result<DomainRef> {
    match (id, name) {
        (Some(_), Some(_)) => Err(invalid(format!("give {which}_domain_id or {which}_domain_name, not both"))),
        (Some(id), None) => Ok(DomainRef::Id(id)),
        (None, Some(name)) => Ok(DomainRef::Name(name)),
        (None, None) => Ok(default.clone().unwrap_or_else(|| DomainRef::Id("default".into()))),
    }
}

impl AuthFields {
    fn into_auth(self, auth_type: Option<&str>, source: &str) -> Result<Auth> {
        let auth_url = self.auth_url.ok_or_else(|| invalid(format!("{source}: no auth_url")))?.trim_end_matches('/').to_string();
        let app_cred = self.application_credential_id.is_some() || self.application_credential_secret.is_some();
        let auth_type = auth_type.unwrap_or(if app_cred { "v3applicationcredential" } else { "password" });
        match auth_type {
            "v3applicationcredential" | "applicationcredential" => {
                let secret = self
                    .application_credential_secret
                    .ok_or_else(|| invalid(format!("{source}: application_credential_secret is missing")))?;
                let id = match (self.application_credential_id, self.application_credential_name) {
                    (Some(id), _) => id,
                    (None, Some(_)) => {
                        return Err(invalid(format!(
                            "{source}: an application credential by name is not supported; give application_credential_id"
                        )))
                    }
                    (None, None) => return Err(invalid(format!("{source}: application_credential_id is missing"))),
                };
                Ok(Auth::ApplicationCredential(ApplicationCredential { auth_url, id, secret: Secret::new(secret) }))
            }
            "password" | "v3password" => {
                if self.user_id.is_some() && self.username.is_none() {
                    return Err(invalid(format!("{source}: a user by id is not supported; give username and its domain")));
                }
                let username = self.username.ok_or_else(|| invalid(format!("{source}: no username")))?;
                let password = self.password.ok_or_else(|| invalid(format!("{source}: no password")))?;
                let project = match (self.project_name, self.project_id) {
                    (Some(name), _) => name,
                    (None, Some(_)) => return Err(invalid(format!("{source}: a project by id only is not supported; give project_name"))),
                    (None, None) => return Err(invalid(format!("{source}: no project_name"))),
                };
                let shared = match (self.domain_id, self.domain_name) {
                    (Some(id), _) => Some(DomainRef::Id(id)),
                    (None, Some(name)) => Some(DomainRef::Name(name)),
                    (None, None) => None,
                };
                Ok(Auth::Password(Credentials {
                    auth_url,
                    username,
                    password: Secret::new(password),
                    user_domain: domain(self.user_domain_id, self.user_domain_name, &shared, "user")?,
                    project,
                    project_domain: domain(self.project_domain_id, self.project_domain_name, &shared, "project")?,
                }))
            }
            other => Err(invalid(format!("{source}: auth_type {other:?} is not supported (password, v3applicationcredential)"))),
        }
    }
}

fn expand_home(p: &str) -> Option<PathBuf> {
    match p.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map(|h| Path::new(&h).join(rest)),
        None => Some(PathBuf::from(p)),
    }
}

impl CloudConfig {
    /// From this process's environment: the cloud `OS_CLOUD` names, else the `OS_*`
    /// variables when `OS_AUTH_URL` is set, else None.
    pub fn from_env() -> Result<Option<CloudConfig>> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(cloud) = get("OS_CLOUD") {
            return Self::from_clouds_yaml(&cloud, None).map(Some);
        }
        if get("OS_AUTH_URL").is_some() {
            return Self::from_vars(get).map(Some);
        }
        Ok(None)
    }

    /// Cloud `name` of `file`, or of the first `clouds.yaml` found where openstacksdk looks:
    /// `OS_CLIENT_CONFIG_FILE`, `./clouds.yaml`, `~/.config/openstack/`, `/etc/openstack/`.
    pub fn from_clouds_yaml(name: &str, file: Option<&Path>) -> Result<CloudConfig> {
        let candidates: Vec<PathBuf> = match file {
            Some(f) => vec![f.to_path_buf()],
            None => std::env::var_os("OS_CLIENT_CONFIG_FILE")
                .map(PathBuf::from)
                .into_iter()
                .chain(SEARCH_PATH.iter().filter_map(|p| expand_home(p)))
                .collect(),
        };
        let path = candidates
            .iter()
            .find(|p| p.is_file())
            .ok_or_else(|| invalid(format!("cloud '{name}': no clouds.yaml (looked in {candidates:?})")))?;
        let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        Self::parse_clouds_yaml(&text, name, &path.display().to_string())
    }

    /// Cloud `name` of a `clouds.yaml` text (`source` names it in errors).
    pub fn parse_clouds_yaml(text: &str, name: &str, source: &str) -> Result<CloudConfig> {
        // serde_yaml's messages quote positions, not values: no secret leaks through them.
        let mut file: CloudsFile = serde_yaml::from_str(text).map_err(|e| invalid(format!("{source}: {e}")))?;
        let entry = file.clouds.remove(name).ok_or_else(|| {
            invalid(format!("{source} has no cloud '{name}' (it has: {})", file.clouds.keys().cloned().collect::<Vec<_>>().join(", ")))
        })?;
        if let Some(v) = &entry.identity_api_version {
            if !matches!(v, serde_yaml::Value::Number(n) if n.as_f64() == Some(3.0))
                && !matches!(v, serde_yaml::Value::String(s) if s == "3")
            {
                return Err(invalid(format!("{source}: cloud '{name}': only identity_api_version 3 is supported")));
            }
        }
        let what = format!("{source}: cloud '{name}'");
        Ok(CloudConfig {
            auth: entry.auth.into_auth(entry.auth_type.as_deref(), &what)?,
            region: entry.region_name,
            interface: entry.interface.map(|i| i.trim_end_matches("URL").to_string()),
            cacert: entry.cacert,
            insecure: entry.verify == Some(false),
        })
    }

    /// From `OS_*` variables, read through `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<CloudConfig> {
        let v = |k: &str| get(&format!("OS_{k}"));
        let fields = AuthFields {
            auth_url: v("AUTH_URL"),
            username: v("USERNAME"),
            user_id: v("USER_ID"),
            password: v("PASSWORD"),
            project_name: v("PROJECT_NAME").or_else(|| v("TENANT_NAME")),
            project_id: v("PROJECT_ID").or_else(|| v("TENANT_ID")),
            _tenant_name: None,
            user_domain_name: v("USER_DOMAIN_NAME"),
            user_domain_id: v("USER_DOMAIN_ID"),
            project_domain_name: v("PROJECT_DOMAIN_NAME"),
            project_domain_id: v("PROJECT_DOMAIN_ID"),
            domain_name: v("DOMAIN_NAME"),
            domain_id: v("DOMAIN_ID"),
            application_credential_id: v("APPLICATION_CREDENTIAL_ID"),
            application_credential_secret: v("APPLICATION_CREDENTIAL_SECRET"),
            application_credential_name: v("APPLICATION_CREDENTIAL_NAME"),
        };
        let insecure = v("INSECURE").is_some_and(|i| matches!(i.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        Ok(CloudConfig {
            auth: fields.into_auth(v("AUTH_TYPE").as_deref(), "OS_* environment")?,
            region: v("REGION_NAME"),
            interface: v("INTERFACE").or_else(|| v("ENDPOINT_TYPE")).map(|i| i.trim_end_matches("URL").to_string()),
            cacert: v("CACERT").map(PathBuf::from),
            insecure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "
clouds:
  prod:
    auth:
      auth_url: https://keystone.example:5000/v3/
      username: k8s
      password: s3cret
      project_name: pods
      user_domain_name: Users
      project_domain_id: default
    region_name: RegionTwo
    interface: internal
    identity_api_version: 3
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example:5000/v3
      application_credential_id: 21dced0fd20347869b93710d2b98aae0
      application_credential_secret: app-s3cret
    verify: false
";

    #[test]
    fn clouds_yaml_password_and_application_credential() {
        let c = CloudConfig::parse_clouds_yaml(YAML, "prod", "clouds.yaml").unwrap();
        let Auth::Password(p) = &c.auth else { panic!("{c:?}") };
        assert_eq!(p.auth_url, "https://keystone.example:5000/v3");
        assert_eq!((p.username.as_str(), p.project.as_str()), ("k8s", "pods"));
        assert_eq!(p.user_domain, DomainRef::Name("Users".into()));
        assert_eq!(p.project_domain, DomainRef::Id("default".into()));
        assert_eq!((c.region.as_deref(), c.interface.as_deref(), c.insecure), (Some("RegionTwo"), Some("internal"), false));
        let a = CloudConfig::parse_clouds_yaml(YAML, "appcred", "clouds.yaml").unwrap();
        let Auth::ApplicationCredential(ac) = &a.auth else { panic!("{a:?}") };
        assert_eq!(ac.id, "21dced0fd20347869b93710d2b98aae0");
        assert!(a.insecure);
        assert!(!format!("{c:?}{a:?}").contains("s3cret"), "secrets must not show in Debug");
        let e = CloudConfig::parse_clouds_yaml(YAML, "nope", "clouds.yaml").unwrap_err().to_string();
        assert!(e.contains("appcred, prod"), "{e}");
    }

    #[test]
    fn os_variables_with_a_shared_domain() {
        let vars: BTreeMap<&str, &str> = [
            ("OS_AUTH_URL", "http://k:5000/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
            ("OS_PROJECT_NAME", "pr"),
            ("OS_DOMAIN_NAME", "Default"),
            ("OS_USER_DOMAIN_ID", "default"),
            ("OS_INTERFACE", "internalURL"),
        ]
        .into();
        let c = CloudConfig::from_vars(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        let Auth::Password(p) = &c.auth else { panic!() };
        assert_eq!(p.user_domain, DomainRef::Id("default".into()));
        assert_eq!(p.project_domain, DomainRef::Name("Default".into()));
        assert_eq!(c.interface.as_deref(), Some("internal"));
        let e = CloudConfig::from_vars(|k| (k == "OS_AUTH_URL").then(|| "http://k/v3".to_string())).unwrap_err();
        assert!(e.to_string().contains("no username"), "{e}");
    }
}
