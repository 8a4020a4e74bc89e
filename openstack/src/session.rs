//! An authenticated session: HTTP client settings, the current token (optionally cached
//! by the caller), one re-authentication and retry on 401, and call counters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::error::{is_stale_connection, parse_error_body, transport_error, Error, Result, Service};
use crate::keystone::{authenticate, Auth, Token};

/// Transport settings shared by Keystone and Neutron requests.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Per-request timeout.
    pub timeout: Duration,
    /// Extra CA bundle (PEM) to trust.
    pub ca_bundle: Option<PathBuf>,
    /// Skip TLS verification (explicit opt-in only).
    pub insecure: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), ca_bundle: None, insecure: false }
    }
}

impl HttpOptions {
    /// Builds the reqwest client.
    pub fn build(&self) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .danger_accept_invalid_certs(self.insecure);
        if let Some(path) = &self.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| Error::Config(format!("cannot read CA bundle {}: {e}", path.display())))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Config(format!("bad CA bundle {}: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map_err(|e| Error::Config(format!("cannot build HTTP client: {e}")))
    }
}

/// Where a session keeps tokens between processes (e.g. a 0600 file). Errors are the store's to log.
pub trait TokenStore: Send + Sync {
    /// A previously stored token for these credentials, if any.
    fn load(&self) -> Option<Token>;
    /// Remembers a new token.
    fn store(&self, token: &Token);
}

/// How many calls a session made (for benchmarks and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallCounts {
    /// Keystone password authentications.
    pub keystone_auths: u64,
    /// Requests to other services (Neutron), including retries.
    pub service_requests: u64,
    /// Of those, the ones that changed something (POST/PUT/DELETE).
    pub service_writes: u64,
}

/// An authenticated session against one Keystone.
pub struct Session {
    http: reqwest::Client,
    auth: Auth,
    store: Option<Box<dyn TokenStore>>,
    token: tokio::sync::Mutex<Option<Token>>,
    auths: AtomicU64,
    requests: AtomicU64,
    writes: AtomicU64,
}

impl Session {
    /// A session with no token yet, for a password ([`crate::Credentials`]) or an
    /// application credential.
    pub fn new(http: reqwest::Client, auth: impl Into<Auth>) -> Self {
        Self {
            http,
            auth: auth.into(),
            store: None,
            token: tokio::sync::Mutex::new(None),
            auths: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }

    /// Uses `store` to load and save tokens.
    pub fn with_token_store(mut self, store: Box<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// How this session authenticates.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Calls made so far.
    pub fn counts(&self) -> CallCounts {
        CallCounts {
            keystone_auths: self.auths.load(Ordering::Relaxed),
            service_requests: self.requests.load(Ordering::Relaxed),
            service_writes: self.writes.load(Ordering::Relaxed),
        }
    }

    /// A fresh token: the current one, a stored one, or a new authentication.
    pub async fn token(&self) -> Result<Token> {
        let mut current = self.token.lock().await;
        if let Some(t) = current.as_ref().filter(|t| t.is_fresh()) {
            return Ok(t.clone());
        }
        if let Some(t) = self.store.as_ref().and_then(|s| s.load()).filter(Token::is_fresh) {
            *current = Some(t.clone());
            return Ok(t);
        }
        let t = self.authenticate().await?;
        *current = Some(t.clone());
        Ok(t)
    }

    /// Forgets `stale` (a token a service refused) and authenticates again.
    async fn renew(&self, stale: &Token) -> Result<Token> {
        let mut current = self.token.lock().await;
        if let Some(t) = current.as_ref().filter(|t| t.value != stale.value && t.is_fresh()) {
            return Ok(t.clone());
        }
        let t = self.authenticate().await?;
        *current = Some(t.clone());
        Ok(t)
    }

    async fn authenticate(&self) -> Result<Token> {
        self.auths.fetch_add(1, Ordering::Relaxed);
        log::debug!("authenticating to {} as {}", self.auth.auth_url(), self.auth.describe());
        let t = authenticate(&self.http, self.auth.clone()).await?;
        if let Some(store) = &self.store {
            store.store(&t);
        }
        Ok(t)
    }

    /// Sends a JSON request with the token; on 401 re-authenticates once and retries.
    /// Returns the parsed body (`Value::Null` for empty bodies). GET, HEAD, DELETE and
    /// requests guarded by `If-Match` are sent once more when they met a stale pooled
    /// connection (see [`Session::request_with`]).
    pub async fn request(
        &self,
        service: Service,
        method: Method,
        url: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Value> {
        let replayable = matches!(method, Method::GET | Method::HEAD | Method::DELETE) || if_match.is_some();
        self.request_with(service, method, url, body, if_match, replayable).await
    }

    /// As [`Session::request`]; `replayable` says that sending the request twice does no
    /// harm (it is idempotent, or guarded by `If-Match`), so that a request that met a
    /// pooled connection the server had closed is sent once more, on a new connection.
    /// When the repeat of an `If-Match` request is refused with 412, the first may have
    /// been applied: that is reported as the first failure, [`Error::Interrupted`].
    pub async fn request_with(
        &self,
        service: Service,
        method: Method,
        url: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        replayable: bool,
    ) -> Result<Value> {
        let token = self.token().await?;
        let req = Req { service, method, url, body, if_match, replayable };
        match self.send_replaying(&token, &req).await {
            Err(Error::Unauthorized { .. }) => {
                log::info!("{service} refused the token for {} {url}; authenticating again", req.method);
                let token = self.renew(&token).await?;
                self.send_replaying(&token, &req).await
            }
            other => other,
        }
    }

    async fn send_replaying(&self, token: &Token, req: &Req<'_>) -> Result<Value> {
        match self.send(token, req).await {
            Ok(v) => Ok(v),
            Err(Failure { error: first, stale: true }) if req.replayable => {
                log::debug!("{first}; the pooled connection was stale, sending once more");
                match self.send(token, req).await {
                    Ok(v) => Ok(v),
                    Err(Failure { error, .. }) if req.if_match.is_some() && error.is_revision_conflict() => Err(first),
                    Err(Failure { error, .. }) => Err(error),
                }
            }
            Err(Failure { error, .. }) => Err(error),
        }
    }

    async fn send(&self, token: &Token, req: &Req<'_>) -> Result<Value, Failure> {
        let Req { service, ref method, url, body, if_match, .. } = *req;
        self.requests.fetch_add(1, Ordering::Relaxed);
        if method != Method::GET && method != Method::HEAD {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        let endpoint = format!("{method} {}", url.split('?').next().unwrap_or(url));
        let mut builder =
            self.http.request(method.clone(), url).header("X-Auth-Token", token.value.expose()).header("Accept", "application/json");
        if let Some(b) = body {
            builder = builder.json(b);
        }
        if let Some(m) = if_match {
            builder = builder.header("If-Match", m);
        }
        let transport = |e: reqwest::Error| Failure { stale: is_stale_connection(&e), error: transport_error(service, &endpoint, &e) };
        let resp = builder.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(transport)?;
        if (200..300).contains(&status) {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| Failure::from(Error::Decode { service, endpoint, reason: e.to_string() }));
        }
        let (kind, message) = parse_error_body(&text);
        Err(Failure::from(match status {
            401 => Error::Unauthorized { endpoint, message: format!("{service} refused the token: {message}") },
            s if s >= 500 => Error::Server { service, endpoint, status, message },
            _ => Error::Api { service, endpoint, status, kind, message },
        }))
    }
}

/// One request, as [`Session::request_with`] was given it.
struct Req<'a> {
    service: Service,
    method: Method,
    url: &'a str,
    body: Option<&'a Value>,
    if_match: Option<&'a str>,
    replayable: bool,
}

/// A failed send, and whether it was that of a stale pooled connection.
struct Failure {
    error: Error,
    stale: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure { error, stale: false }
    }
}
