//! Minimal async OpenStack clients: Keystone v3 (password or application credential,
//! configured directly or from `clouds.yaml`/`OS_*`: [`CloudConfig`]) and the Neutron v2.0
//! calls veth-route needs, lists paginated. Shared by `tcnp-ipam`,
//! `vrouter-route-controller` and the test bed. A lost answer ([`Error::Interrupted`], or a
//! 5xx) is told apart from a refusal ([`Error::outcome_unknown`]); a request that met a
//! stale pooled connection is sent once more when that is harmless.
//!
//! ```no_run
//! # async fn demo() -> openstack::Result<()> {
//! use std::sync::Arc;
//! use openstack::{Credentials, DomainRef, HttpOptions, Neutron, Secret, Session};
//! let creds = Credentials {
//!     auth_url: "http://keystone:5000/v3".into(),
//!     username: "admin".into(),
//!     password: Secret::new("..."),
//!     user_domain: DomainRef::Id("default".into()),
//!     project: "admin".into(),
//!     project_domain: DomainRef::Id("default".into()),
//! };
//! let session = Arc::new(Session::new(HttpOptions::default().build()?, creds));
//! let neutron = Neutron::from_catalog(session, "public", None).await?;
//! let port = neutron.find_port_by_mac("net-id", "fa:16:3e:00:00:01").await?;
//! # Ok(()) }
//! ```
//!
//! Errors ([`Error`]) keep the HTTP status and Neutron's error type and message, name the
//! endpoint, and never contain a token or password ([`Secret`] hides them in `Debug`).

pub mod cloud;
mod error;
pub mod keystone;
pub mod neutron;
mod secret;
mod session;
pub mod time;

pub use cloud::CloudConfig;
pub use error::{Error, Result, Service};
pub use keystone::{ApplicationCredential, Auth, Credentials, DomainRef, Token};
pub use neutron::{FixedIp, FixedIpRequest, Network, Neutron, Port, Route, Router, Subnet};
pub use secret::Secret;
pub use session::{CallCounts, HttpOptions, Session, TokenStore};
