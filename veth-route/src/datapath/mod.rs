//! eBPF fast path: loads, pins and attaches the TC programs and keeps the pinned
//! endpoint map in step with the pods of this host.
//!
//! INTERFACE CONTRACT (used by the plugin; keep these signatures stable):
//! - `DatapathConfig` is flattened into the plugin's network config.
//! - `attach` after the pod is fully wired, `detach` on DEL (idempotent), `check` on CHECK,
//!   `gc` on GC. All run in the host (VM) network namespace of the plugin process.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;

/// How the fast path is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FastPath {
    /// Redirect flows that conntrack does not NAT; kernel path for the rest.
    #[default]
    Auto,
    /// Redirect every flow the endpoint map covers.
    Always,
    /// Kernel routes only; no programs are attached.
    Off,
    /// Like `auto`, but ADD fails when eBPF cannot be used.
    Required,
}

/// Datapath keys of the network configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatapathConfig {
    /// Fast-path policy.
    #[serde(default)]
    pub fast_path: FastPath,
    /// bpffs directory holding the versioned pins.
    #[serde(default = "default_pin_dir")]
    pub bpf_pin_dir: PathBuf,
    /// VM uplink interfaces whose ingress traffic to pods is redirected.
    #[serde(default)]
    pub uplinks: Vec<String>,
    /// Drop packets from a pod whose source is not the pod's address.
    #[serde(default = "default_true")]
    pub anti_spoof: bool,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self { fast_path: FastPath::Auto, bpf_pin_dir: default_pin_dir(), uplinks: Vec::new(), anti_spoof: true }
    }
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/veth-route")
}

fn default_true() -> bool {
    true
}

/// One pod as the datapath sees it.
#[derive(Debug, Clone)]
pub struct PodEndpoint {
    /// The pod's IPv4 address.
    pub pod_ip: Ipv4Addr,
    /// MAC of the pod-side interface.
    pub pod_mac: [u8; 6],
    /// Host-side veth.
    pub host_ifindex: u32,
    /// Host-side veth name.
    pub host_ifname: String,
    /// MAC of the host-side veth.
    pub host_mac: [u8; 6],
}

/// What `attach` achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// Programs attached and endpoint in the map.
    Fast,
    /// Kernel routes only, and why.
    KernelOnly { reason: String },
}

/// Datapath failures.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// eBPF is unusable and the config requires it.
    #[error("eBPF fast path required but unavailable: {0}")]
    Unavailable(String),
    /// A CHECK found a difference.
    #[error("datapath check failed: {0}")]
    Mismatch(String),
    /// Any other failure, with context.
    #[error("datapath: {0}")]
    Other(String),
}

/// Attach the programs for one pod and insert its endpoint.
pub fn attach(cfg: &DatapathConfig, _ep: &PodEndpoint) -> Result<Attached, DatapathError> {
    match cfg.fast_path {
        FastPath::Off => Ok(Attached::KernelOnly { reason: "fastPath is off".into() }),
        FastPath::Required => Err(DatapathError::Unavailable("not implemented yet".into())),
        _ => Ok(Attached::KernelOnly { reason: "fast path not implemented yet".into() }),
    }
}

/// Remove the pod's endpoint and per-pod attachments; succeeds when already gone.
pub fn detach(_cfg: &DatapathConfig, _pod_ip: Option<Ipv4Addr>, _host_ifname: &str) -> Result<(), DatapathError> {
    Ok(())
}

/// Verify the pod's endpoint and attachment.
pub fn check(_cfg: &DatapathConfig, _ep: &PodEndpoint) -> Result<(), DatapathError> {
    Ok(())
}

/// Remove endpoints and per-pod pins for host veths not in `keep`.
pub fn gc(_cfg: &DatapathConfig, _keep: &[String]) -> Result<(), DatapathError> {
    Ok(())
}
