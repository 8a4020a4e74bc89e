//! CNI protocol types and plugin plumbing shared by every plugin in this workspace.
//!
//! - [`version`]: spec versions and the verbs each allows.
//! - [`env`]: the CNI_* environment as a typed [`Invocation`].
//! - [`config`]: common network-config fields ([`NetConf<T>`] flattens the plugin's own).
//! - [`result`]: [`CniResult`], parsed from any version, rendered in the requested one.
//! - [`error`]: [`CniError`] and the spec's error codes.
//! - [`delegate`]: running an IPAM (or any) plugin from CNI_PATH.
//! - [`plugin`]: the [`Plugin`] trait and the runner that binaries call from `main`.
//! - [`logging`]: file/stderr logger (stdout is reserved for the result).

pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
mod fields;
pub mod logging;
pub mod plugin;
pub mod result;
pub mod version;

pub use config::{Attachment, NetConf};
pub use env::Invocation;
pub use error::{CniError, ErrorCode};
pub use plugin::{Plugin, Request};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::{Verb, Version};
