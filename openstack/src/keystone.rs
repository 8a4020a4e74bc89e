//! Keystone v3 password authentication and the service catalog.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{is_stale_connection, parse_error_body, transport_error, Error, Result, Service};
use crate::secret::Secret;
use crate::time::{now_unix, parse_timestamp};

/// A domain named either by id (`default`) or by name (`Default`); Keystone treats them differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainRef {
    /// Domain id, e.g. `default`.
    Id(String),
    /// Domain name, e.g. `Default`.
    Name(String),
}

impl DomainRef {
    fn to_json(&self) -> serde_json::Value {
        match self {
            DomainRef::Id(id) => json!({ "id": id }),
            DomainRef::Name(name) => json!({ "name": name }),
        }
    }

    fn describe(&self) -> String {
        match self {
            DomainRef::Id(id) => format!("id={id}"),
            DomainRef::Name(name) => format!("name={name}"),
        }
    }
}

/// Password credentials scoped to a project.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Keystone v3 URL, e.g. `http://keystone:5000/v3`.
    pub auth_url: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// The user's domain.
    pub user_domain: DomainRef,
    /// Project name to scope the token to.
    pub project: String,
    /// The project's domain.
    pub project_domain: DomainRef,
}

impl Credentials {
    /// A stable, secret-free key for caching tokens of these credentials.
    pub fn cache_key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            self.auth_url.trim_end_matches('/'),
            self.user_domain.describe(),
            self.username,
            self.project_domain.describe(),
            self.project
        )
    }
}

/// A Keystone application credential (`id` + `secret`): scoped to the project it was
/// created in, revocable without touching the user's password.
#[derive(Debug, Clone)]
pub struct ApplicationCredential {
    /// Keystone v3 URL.
    pub auth_url: String,
    /// Application credential id.
    pub id: String,
    /// Its secret.
    pub secret: Secret,
}

/// How a session authenticates: a user's password scoped to a project, or an
/// application credential.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Password method, project-scoped.
    Password(Credentials),
    /// `application_credential` method.
    ApplicationCredential(ApplicationCredential),
}

impl From<Credentials> for Auth {
    fn from(c: Credentials) -> Self {
        Auth::Password(c)
    }
}

impl From<&Credentials> for Auth {
    fn from(c: &Credentials) -> Self {
        Auth::Password(c.clone())
    }
}

impl From<ApplicationCredential> for Auth {
    fn from(c: ApplicationCredential) -> Self {
        Auth::ApplicationCredential(c)
    }
}

impl Auth {
    /// The Keystone v3 URL.
    pub fn auth_url(&self) -> &str {
        match self {
            Auth::Password(c) => &c.auth_url,
            Auth::ApplicationCredential(a) => &a.auth_url,
        }
    }

    /// A stable, secret-free key for caching tokens of these credentials.
    pub fn cache_key(&self) -> String {
        match self {
            Auth::Password(c) => c.cache_key(),
            Auth::ApplicationCredential(a) => format!("{}|application_credential={}", a.auth_url.trim_end_matches('/'), a.id),
        }
    }

    /// Who authenticates, for logs and errors (never the secret).
    pub fn describe(&self) -> String {
        match self {
            Auth::Password(c) => format!(
                "user '{}' ({}) for project '{}' ({})",
                c.username,
                c.user_domain.describe(),
                c.project,
                c.project_domain.describe()
            ),
            Auth::ApplicationCredential(a) => format!("application credential {}", a.id),
        }
    }

    fn body(&self) -> serde_json::Value {
        match self {
            Auth::Password(c) => json!({
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": { "user": {
                            "name": c.username,
                            "domain": c.user_domain.to_json(),
                            "password": c.password.expose(),
                        }},
                    },
                    "scope": { "project": { "name": c.project, "domain": c.project_domain.to_json() } },
                }
            }),
            // Application credentials carry their project: a scope would be refused.
            Auth::ApplicationCredential(a) => json!({
                "auth": { "identity": {
                    "methods": ["application_credential"],
                    "application_credential": { "id": a.id, "secret": a.secret.expose() },
                }}
            }),
        }
    }
}

/// One endpoint of a catalog entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogEndpoint {
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Region id, if any.
    #[serde(default)]
    pub region_id: Option<String>,
    /// Base URL.
    pub url: String,
}

/// One service of the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Service type, e.g. `network`.
    #[serde(rename = "type")]
    pub service_type: String,
    /// Its endpoints.
    #[serde(default)]
    pub endpoints: Vec<CatalogEndpoint>,
}

/// A project-scoped token with its catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    /// The token (`X-Subject-Token`).
    pub value: Secret,
    /// Expiry, Unix seconds.
    pub expires_at: u64,
    /// Issue time, Unix seconds.
    pub issued_at: u64,
    /// Project the token is scoped to.
    pub project_id: String,
    /// Service catalog.
    pub catalog: Vec<CatalogEntry>,
}

impl Token {
    /// Whether the token is still good to use at `now`: keystoneauth treats a token as
    /// stale 30 s before expiry; short-lived tokens get a quarter of their lifetime instead.
    pub fn is_fresh_at(&self, now: u64) -> bool {
        let lifetime = self.expires_at.saturating_sub(self.issued_at);
        let margin = (lifetime / 4).min(30);
        now + margin < self.expires_at
    }

    /// Whether the token is still good to use now.
    pub fn is_fresh(&self) -> bool {
        self.is_fresh_at(now_unix())
    }

    /// The URL of a service from the catalog.
    pub fn endpoint(&self, service_type: &str, interface: &str, region: Option<&str>) -> Result<String> {
        self.catalog
            .iter()
            .filter(|e| e.service_type == service_type)
            .flat_map(|e| e.endpoints.iter())
            .find(|ep| ep.interface == interface && region.is_none_or(|r| ep.region_id.as_deref() == Some(r)))
            .map(|ep| ep.url.trim_end_matches('/').to_string())
            .ok_or_else(|| Error::NoEndpoint {
                service_type: service_type.to_string(),
                interface: interface.to_string(),
                region: region.map(str::to_string),
            })
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: String,
    issued_at: String,
    project: Option<IdOnly>,
    #[serde(default)]
    catalog: Vec<CatalogEntry>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// POSTs the token request: status, `X-Subject-Token` and body, or the transport error and
/// whether it was that of a stale pooled connection.
async fn post_tokens(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(u16, Option<Secret>, String), (reqwest::Error, bool)> {
    let failed = |e: reqwest::Error| {
        let stale = is_stale_connection(&e);
        (e, stale)
    };
    let resp = http.post(url).json(body).send().await.map_err(failed)?;
    let status = resp.status().as_u16();
    let header = resp.headers().get("X-Subject-Token").and_then(|v| v.to_str().ok()).map(Secret::new);
    let text = resp.text().await.map_err(failed)?;
    Ok((status, header, text))
}

/// Obtains a project-scoped token (`POST /v3/auth/tokens`) with a password or an
/// application credential.
pub async fn authenticate(http: &reqwest::Client, auth: impl Into<Auth>) -> Result<Token> {
    let auth = auth.into();
    let url = format!("{}/auth/tokens", auth.auth_url().trim_end_matches('/'));
    let endpoint = format!("POST {url}");
    let body = auth.body();
    // Issuing a token twice does no harm: a stale pooled connection gets one more try.
    let (status, header, text) = match post_tokens(http, &url, &body).await {
        Err((e, true)) => {
            log::debug!("{}; the pooled connection was stale, sending once more", transport_error(Service::Keystone, &endpoint, &e));
            post_tokens(http, &url, &body).await
        }
        other => other,
    }
    .map_err(|(e, _)| transport_error(Service::Keystone, &endpoint, &e))?;
    if !(200..300).contains(&status) {
        let (kind, message) = parse_error_body(&text);
        return Err(match status {
            401 => Error::Unauthorized { endpoint, message: format!("Keystone refused {}: {message}", auth.describe()) },
            s if s >= 500 => Error::Server { service: Service::Keystone, endpoint, status, message },
            _ => Error::Api { service: Service::Keystone, endpoint, status, kind, message },
        });
    }
    let decode = |reason: String| Error::Decode { service: Service::Keystone, endpoint: endpoint.clone(), reason };
    let value = header.ok_or_else(|| decode("no X-Subject-Token header".into()))?;
    let body: TokenBody = serde_json::from_str(&text).map_err(|e| decode(e.to_string()))?;
    let expires_at = parse_timestamp(&body.token.expires_at).ok_or_else(|| decode("bad expires_at".into()))?;
    let issued_at = parse_timestamp(&body.token.issued_at).ok_or_else(|| decode("bad issued_at".into()))?;
    let project_id = body.token.project.map(|p| p.id).ok_or_else(|| decode("token is not project-scoped".into()))?;
    Ok(Token { value, expires_at, issued_at, project_id, catalog: body.token.catalog })
}

/// Checks that Keystone answers at `auth_url` (unauthenticated `GET` of the version document).
pub async fn check_reachable(http: &reqwest::Client, auth_url: &str) -> Result<()> {
    let endpoint = format!("GET {auth_url}");
    let resp = http.get(auth_url).send().await.map_err(|e| transport_error(Service::Keystone, &endpoint, &e))?;
    let status = resp.status().as_u16();
    if status >= 500 {
        let (_, message) = parse_error_body(&resp.text().await.unwrap_or_default());
        return Err(Error::Server { service: Service::Keystone, endpoint, status, message });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(issued: u64, expires: u64) -> Token {
        Token {
            value: Secret::new("gAAAA-secret"),
            expires_at: expires,
            issued_at: issued,
            project_id: "p".into(),
            catalog: vec![CatalogEntry {
                service_type: "network".into(),
                endpoints: vec![
                    CatalogEndpoint { interface: "public".into(), region_id: Some("RegionOne".into()), url: "http://n:9696/".into() },
                    CatalogEndpoint { interface: "internal".into(), region_id: Some("RegionTwo".into()), url: "http://m:9696".into() },
                ],
            }],
        }
    }

    #[test]
    fn freshness_margin_follows_keystoneauth_and_short_lifetimes() {
        let hour = token(1000, 4600);
        assert!(hour.is_fresh_at(4569) && !hour.is_fresh_at(4570));
        let short = token(1000, 1010); // 10 s lifetime: 2 s margin
        assert!(short.is_fresh_at(1007) && !short.is_fresh_at(1008));
    }

    #[test]
    fn catalog_lookup_and_secret_hiding() {
        let t = token(0, 1);
        assert_eq!(t.endpoint("network", "public", None).unwrap(), "http://n:9696");
        assert_eq!(t.endpoint("network", "internal", Some("RegionTwo")).unwrap(), "http://m:9696");
        let e = t.endpoint("network", "admin", Some("RegionOne")).unwrap_err();
        assert!(e.to_string().contains("'admin'") && e.to_string().contains("RegionOne"));
        assert!(!format!("{t:?}").contains("gAAAA-secret"));
    }

    #[test]
    fn cache_key_has_no_password() {
        let c = Credentials {
            auth_url: "http://k/v3/".into(),
            username: "u".into(),
            password: Secret::new("hunter2"),
            user_domain: DomainRef::Name("Default".into()),
            project: "p".into(),
            project_domain: DomainRef::Id("default".into()),
        };
        assert_eq!(c.cache_key(), "http://k/v3|name=Default|u|id=default|p");
    }
}
