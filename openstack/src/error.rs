//! Typed client errors. They name the service and endpoint, keep Neutron's error type and
//! message and the HTTP status, and never contain a token or password.

use std::fmt;

/// The OpenStack service a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Identity (Keystone v3).
    Keystone,
    /// Networking (Neutron v2.0).
    Neutron,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Keystone => "Keystone",
            Service::Neutron => "Neutron",
        })
    }
}

/// Everything that can go wrong talking to Keystone or Neutron.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection: refused, DNS, TLS, connect timeout. The request was never sent.
    #[error("{service} at {endpoint} is unreachable: {reason}")]
    Unreachable { service: Service, endpoint: String, reason: String },
    /// The request was (or may have been) sent, but no complete answer came back: the
    /// connection closed or was reset after sending, or the client timed out. Whether it
    /// took effect is unknown until the resource is read again.
    #[error("{service} at {endpoint} gave no complete answer (the outcome is unknown): {reason}")]
    Interrupted { service: Service, endpoint: String, reason: String },
    /// The service answered 5xx.
    #[error("{service} at {endpoint} failed with HTTP {status}: {message}")]
    Server { service: Service, endpoint: String, status: u16, message: String },
    /// Keystone refused the credentials, or a fresh token was refused again.
    #[error("authentication failed at {endpoint}: {message}")]
    Unauthorized { endpoint: String, message: String },
    /// A 4xx answer other than 401; `kind` is Neutron's error type (e.g. `OverQuota`).
    #[error("{service} rejected {endpoint} with HTTP {status} {kind}: {message}")]
    Api { service: Service, endpoint: String, status: u16, kind: String, message: String },
    /// The Keystone catalog has no matching endpoint.
    #[error("no '{service_type}' endpoint with interface '{interface}'{} in the Keystone catalog", region.as_deref().map(|r| format!(" in region '{r}'")).unwrap_or_default())]
    NoEndpoint { service_type: String, interface: String, region: Option<String> },
    /// A 2xx answer we could not understand.
    #[error("unexpected answer from {service} at {endpoint}: {reason}")]
    Decode { service: Service, endpoint: String, reason: String },
    /// Bad client settings (CA bundle, URLs).
    #[error("invalid OpenStack client settings: {0}")]
    Config(String),
}

impl Error {
    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Server { status, .. } | Error::Api { status, .. } => Some(*status),
            Error::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }

    /// Neutron's error type (`NeutronError.type`), when there is one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Error::Api { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// Worth retrying later: the service is down, overloaded or failing.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Interrupted { .. } | Error::Server { .. })
    }

    /// A write that failed this way may nevertheless have been applied: no complete answer,
    /// or a 5xx (a proxy's 502/504 after forwarding, or a server failing after its commit).
    /// Read the resource again to learn the outcome. A 4xx or [`Error::Unreachable`] means
    /// the service did not apply it.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Error::Interrupted { .. } | Error::Server { .. })
    }

    /// An `If-Match` revision check failed: re-read and try again.
    pub fn is_revision_conflict(&self) -> bool {
        self.status() == Some(412) || self.kind() == Some("RevisionNumberConstraintFailed")
    }

    /// The resource does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// A quota or capacity limit: `OverQuota` (409), old `RoutesExhausted` (400),
    /// `IpAddressGenerationFailure` (409, subnet exhausted).
    pub fn is_exhausted(&self) -> bool {
        matches!(self.kind(), Some("OverQuota" | "RoutesExhausted" | "IpAddressGenerationFailure"))
    }
}

/// Result of client calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A transport failure as an [`Error`]: [`Error::Unreachable`] when no connection was made
/// (nothing was sent), [`Error::Interrupted`] otherwise.
pub(crate) fn transport_error(service: Service, endpoint: &str, err: &reqwest::Error) -> Error {
    let (endpoint, reason) = (endpoint.to_string(), transport_reason(err));
    if err.is_connect() {
        Error::Unreachable { service, endpoint, reason }
    } else {
        Error::Interrupted { service, endpoint, reason }
    }
}

/// Whether a transport failure is that of a pooled connection the server had already
/// closed: the request failed while being sent or before any answer, with no timeout.
/// uwsgi's `--http-socket` and load balancers close idle keep-alive connections without
/// announcing it, so the next request on one meets a closed or reset socket.
pub(crate) fn is_stale_connection(err: &reqwest::Error) -> bool {
    if err.is_timeout() || err.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof) {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// Describes a transport failure without the URL (the caller names the endpoint).
pub(crate) fn transport_reason(err: &reqwest::Error) -> String {
    let mut reason = if err.is_timeout() {
        "request timed out".to_string()
    } else if err.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = s.source();
    }
    reason
}

/// Extracts the message (and Neutron type) from an error body.
///
/// Neutron: `{"NeutronError":{"type","message","detail"}}`; Keystone (and Neutron's
/// token rejections): `{"error":{"code","message","title"}}`.
pub(crate) fn parse_error_body(body: &str) -> (String, String) {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if let Some(e) = value.get("NeutronError") {
        let kind = e.get("type").and_then(|v| v.as_str()).unwrap_or("NeutronError");
        let message = e.get("message").and_then(|v| v.as_str()).unwrap_or("");
        return (kind.to_string(), message.to_string());
    }
    if let Some(e) = value.get("error") {
        let kind = e.get("title").and_then(|v| v.as_str()).unwrap_or("Error");
        let message = e.get("message").and_then(|v| v.as_str()).unwrap_or("");
        return (kind.to_string(), message.to_string());
    }
    let text: String = body.chars().take(200).collect();
    ("Error".to_string(), text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutron_and_keystone_error_bodies() {
        let (kind, msg) = parse_error_body(
            r#"{"NeutronError":{"type":"OverQuota","message":"Quota exceeded for resources: ['router_route'].","detail":""}}"#,
        );
        assert_eq!((kind.as_str(), msg.as_str()), ("OverQuota", "Quota exceeded for resources: ['router_route']."));
        let (kind, msg) = parse_error_body(
            r#"{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}"#,
        );
        assert_eq!(kind, "Unauthorized");
        assert!(msg.starts_with("The request"));
        assert_eq!(parse_error_body("<html>bad gateway</html>").1, "<html>bad gateway</html>");
    }

    #[test]
    fn classification() {
        let api = |status, kind: &str| Error::Api {
            service: Service::Neutron,
            endpoint: "PUT /v2.0/ports/x".into(),
            status,
            kind: kind.into(),
            message: "m".into(),
        };
        assert!(api(412, "RevisionNumberConstraintFailed").is_revision_conflict());
        assert!(api(409, "OverQuota").is_exhausted() && api(400, "RoutesExhausted").is_exhausted());
        assert!(api(404, "PortNotFound").is_not_found());
        assert!(!api(409, "IpAddressAlreadyAllocated").is_transient());
        let down = Error::Unreachable { service: Service::Neutron, endpoint: "GET x".into(), reason: "connection failed".into() };
        assert!(down.is_transient());
        assert_eq!(down.to_string(), "Neutron at GET x is unreachable: connection failed");
        assert!(!down.outcome_unknown(), "nothing was sent");
        let lost = Error::Interrupted { service: Service::Neutron, endpoint: "PUT x".into(), reason: "connection closed".into() };
        assert!(lost.is_transient() && lost.outcome_unknown());
        let gateway = Error::Server { service: Service::Neutron, endpoint: "PUT x".into(), status: 504, message: "m".into() };
        assert!(gateway.outcome_unknown() && !api(409, "IpAddressAlreadyAllocated").outcome_unknown());
    }
}
