//! `openstackConf`: where OpenStack is and how tcnp-ipam authenticates to it. Four ways, as
//! operators know them: the seed's keys (`authUrl`, `username`, `password*`, `project`,
//! `domain`), an application credential (`applicationCredentialId` + secret), a cloud of
//! `clouds.yaml` (`cloud`, optional `cloudsFile`), or no `openstackConf` at all: then the
//! runtime's environment, `OS_CLOUD` or the `OS_*` variables. Keys given beside a cloud
//! (region, interface, TLS, timeout, neutronUrl) override the cloud's.

use std::path::PathBuf;
use std::time::Duration;

use cni::CniError;
use openstack::{ApplicationCredential, Auth, CloudConfig, Credentials, DomainRef, HttpOptions, Secret};
use serde::Deserialize;

use crate::config::invalid;

/// The raw `openstackConf` object.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawOpenStack {
    auth_url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    project: Option<String>,
    domain: Option<String>,
    user_domain_id: Option<String>,
    user_domain_name: Option<String>,
    project_domain_id: Option<String>,
    project_domain_name: Option<String>,
    application_credential_id: Option<String>,
    application_credential_secret: Option<String>,
    application_credential_secret_file: Option<PathBuf>,
    application_credential_secret_env: Option<String>,
    cloud: Option<String>,
    clouds_file: Option<PathBuf>,
    region: Option<String>,
    interface: Option<String>,
    neutron_url: Option<String>,
    ca_bundle: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    timeout_seconds: Option<u64>,
}

/// Resolved connection settings.
#[derive(Debug, Clone)]
pub struct Cloud {
    /// How to authenticate.
    pub auth: Auth,
    /// Transport.
    pub http: HttpOptions,
    /// Catalog region.
    pub region: Option<String>,
    /// Catalog interface.
    pub interface: String,
    /// Explicit Neutron URL.
    pub neutron_url: Option<String>,
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

fn pick_domain(id: &Option<String>, name: &Option<String>, shorthand: Option<&str>, which: &str) -> Result<DomainRef, CniError> {
    match (id.clone(), name.clone()) {
        (Some(_), Some(_)) => Err(invalid(format!("openstackConf: give {which}DomainId or {which}DomainName, not both"))),
        (Some(id), None) => Ok(DomainRef::Id(id)),
        (None, Some(name)) => Ok(DomainRef::Name(name)),
        (None, None) => Ok(shorthand.map(domain_from_shorthand).unwrap_or_else(|| DomainRef::Id("default".into()))),
    }
}

/// A secret given inline, in a file (preferred) or in an environment variable: exactly one.
fn read_secret(inline: &Option<String>, file: &Option<PathBuf>, env: &Option<String>, key: &str) -> Result<Secret, CniError> {
    let given = [inline.is_some(), file.is_some(), env.is_some()];
    match given.iter().filter(|g| **g).count() {
        0 => return Err(invalid(format!("openstackConf needs one of {key}, {key}File or {key}Env"))),
        1 => {}
        _ => return Err(invalid(format!("openstackConf: give only one of {key}, {key}File and {key}Env"))),
    }
    if let Some(p) = inline {
        return Ok(Secret::new(p.clone()));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read {key}File {}: {e}", path.display())))?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(invalid(format!("{key}File {} is empty", path.display())));
        }
        return Ok(Secret::new(value));
    }
    let var = env.as_deref().unwrap_or_default();
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(invalid(format!("{key}Env: environment variable {var} is not set"))),
    }
}

fn auth_url(os: &RawOpenStack) -> Result<String, CniError> {
    let url = os.auth_url.as_deref().ok_or_else(|| invalid("openstackConf.authUrl is required"))?.trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(format!("openstackConf.authUrl {url:?} is not an http(s) URL")));
    }
    Ok(url)
}

/// The explicit authentication of `os`, if it names one.
fn explicit_auth(os: &RawOpenStack) -> Result<Option<Auth>, CniError> {
    let app = os.application_credential_id.is_some()
        || os.application_credential_secret.is_some()
        || os.application_credential_secret_file.is_some()
        || os.application_credential_secret_env.is_some();
    let password = os.username.is_some() || os.password.is_some() || os.password_file.is_some() || os.password_env.is_some();
    match (app, password) {
        (true, true) => Err(invalid("openstackConf: give a username and password or an application credential, not both")),
        (true, false) => {
            let id = os.application_credential_id.clone().ok_or_else(|| invalid("openstackConf.applicationCredentialId is required"))?;
            let secret = read_secret(
                &os.application_credential_secret,
                &os.application_credential_secret_file,
                &os.application_credential_secret_env,
                "applicationCredentialSecret",
            )?;
            Ok(Some(Auth::ApplicationCredential(ApplicationCredential { auth_url: auth_url(os)?, id, secret })))
        }
        (false, true) => {
            let username = os.username.clone().ok_or_else(|| invalid("openstackConf.username is required with a password"))?;
            let project = os.project.clone().ok_or_else(|| invalid("openstackConf.project is required with a password"))?;
            let shorthand = os.domain.as_deref();
            Ok(Some(Auth::Password(Credentials {
                auth_url: auth_url(os)?,
                username,
                password: read_secret(&os.password, &os.password_file, &os.password_env, "password")?,
                user_domain: pick_domain(&os.user_domain_id, &os.user_domain_name, shorthand, "user")?,
                project,
                project_domain: pick_domain(&os.project_domain_id, &os.project_domain_name, shorthand, "project")?,
            })))
        }
        (false, false) => Ok(None),
    }
}

/// Resolves `openstackConf` (absent: the environment's `OS_CLOUD` / `OS_*`).
pub fn resolve(raw: Option<&RawOpenStack>) -> Result<Cloud, CniError> {
    let empty = RawOpenStack::default();
    let os = raw.unwrap_or(&empty);
    let from_cloud = |e: openstack::Error| invalid(e.to_string());
    let (auth, cloud) = match (explicit_auth(os)?, &os.cloud) {
        (Some(_), Some(_)) => return Err(invalid("openstackConf: give cloud or explicit credentials, not both")),
        (Some(auth), None) => (auth, None),
        (None, Some(name)) => {
            let c = CloudConfig::from_clouds_yaml(name, os.clouds_file.as_deref()).map_err(from_cloud)?;
            (c.auth.clone(), Some(c))
        }
        (None, None) => match CloudConfig::from_env().map_err(from_cloud)? {
            Some(c) => (c.auth.clone(), Some(c)),
            None => {
                return Err(invalid(
                    "no OpenStack credentials: give openstackConf (authUrl, username, password..., or an application \
                     credential, or a clouds.yaml cloud), or set OS_CLOUD or OS_AUTH_URL... in the runtime's environment",
                ))
            }
        },
    };
    if os.ca_bundle.is_some() && os.insecure {
        return Err(invalid("openstackConf: caBundle and insecure contradict each other"));
    }
    let http = HttpOptions {
        timeout: Duration::from_secs(os.timeout_seconds.unwrap_or(30).max(1)),
        ca_bundle: os.ca_bundle.clone().or_else(|| cloud.as_ref().and_then(|c| c.cacert.clone())),
        insecure: os.insecure || (os.ca_bundle.is_none() && cloud.as_ref().is_some_and(|c| c.insecure)),
    };
    let interface = os.interface.clone().or_else(|| cloud.as_ref().and_then(|c| c.interface.clone())).unwrap_or_else(|| "public".into());
    if !matches!(interface.as_str(), "public" | "internal" | "admin") {
        return Err(invalid(format!("openstackConf.interface {interface:?} must be public, internal or admin")));
    }
    Ok(Cloud {
        auth,
        http,
        region: os.region.clone().or_else(|| cloud.as_ref().and_then(|c| c.region.clone())),
        interface,
        neutron_url: os.neutron_url.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<Cloud, CniError> {
        resolve(Some(&serde_json::from_value(v).unwrap()))
    }

    #[test]
    fn application_credential_and_clouds_yaml() {
        let c = parse(serde_json::json!({ "authUrl": "http://k/v3", "applicationCredentialId": "ac", "applicationCredentialSecret": "s" }))
            .unwrap();
        assert!(matches!(&c.auth, Auth::ApplicationCredential(a) if a.id == "ac"));
        let e = parse(serde_json::json!({ "authUrl": "http://k/v3", "applicationCredentialId": "ac", "username": "u" })).unwrap_err();
        assert!(e.msg.contains("not both"), "{e}");

        let dir = std::env::temp_dir().join(format!("tcnp-clouds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("clouds.yaml");
        std::fs::write(&file, "clouds:\n  c1:\n    auth:\n      auth_url: http://k/v3\n      username: u\n      password: p\n      project_name: pr\n      user_domain_name: Default\n    region_name: R\n    interface: internal\n").unwrap();
        let c = parse(serde_json::json!({ "cloud": "c1", "cloudsFile": file, "interface": "admin" })).unwrap();
        assert_eq!((c.region.as_deref(), c.interface.as_str()), (Some("R"), "admin"));
        assert!(matches!(&c.auth, Auth::Password(p) if p.user_domain == DomainRef::Name("Default".into())));
        let e = parse(serde_json::json!({ "cloud": "c2", "cloudsFile": file })).unwrap_err();
        assert!(e.msg.contains("c1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
