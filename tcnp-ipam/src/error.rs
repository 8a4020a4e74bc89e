//! Plugin errors and their CNI codes. Messages name endpoints and Neutron's error type,
//! never a password or token (the client's errors cannot hold them).

use cni::{CniError, ErrorCode};

/// Authentication refused (plugin-specific code).
pub const CODE_AUTH: u32 = 101;
/// The subnet has no free address.
pub const CODE_EXHAUSTED: u32 = 102;
/// A Neutron quota is exceeded.
pub const CODE_QUOTA: u32 = 103;
/// The VM's port cannot be found.
pub const CODE_NO_PORT: u32 = 104;
/// Any other refusal by Neutron or Keystone.
pub const CODE_API: u32 = 100;

/// What went wrong in tcnp-ipam.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Keystone/Neutron call failed.
    #[error(transparent)]
    Cloud(#[from] openstack::Error),
    /// The VM port could not be identified.
    #[error("{0}")]
    NoPort(String),
    /// Bad configuration discovered at run time (e.g. an unknown network).
    #[error("{0}")]
    Config(String),
    /// Local state (data directory) failed.
    #[error("tcnp-ipam state in {dir}: {source}")]
    State { dir: String, source: std::io::Error },
    /// No free addresses (or blocks) left.
    #[error("{0}")]
    Exhausted(String),
    /// Neutron kept changing the port under us.
    #[error("{0}")]
    Contention(String),
    /// A port update got no answer and the port could not be read to learn its outcome;
    /// the journal keeps it for the next run.
    #[error("{0}; the port could not be read to settle its outcome, the next run will")]
    Unsettled(#[source] openstack::Error),
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> CniError {
        let msg = e.to_string();
        match e {
            IpamError::Cloud(c) => cloud_error(&c),
            IpamError::NoPort(_) => CniError::new(ErrorCode::Other(CODE_NO_PORT), msg),
            IpamError::Config(_) => CniError::new(ErrorCode::InvalidNetworkConfig, msg),
            IpamError::State { .. } => CniError::new(ErrorCode::IoFailure, msg),
            IpamError::Exhausted(_) => CniError::new(ErrorCode::Other(CODE_EXHAUSTED), msg),
            IpamError::Contention(_) => CniError::new(ErrorCode::TryAgainLater, msg),
            IpamError::Unsettled(_) => CniError::new(ErrorCode::TryAgainLater, msg)
                .with_details("OpenStack is unreachable or failing; the unfinished port update is settled on the next ADD, DEL or GC"),
        }
    }
}

fn cloud_error(e: &openstack::Error) -> CniError {
    let msg = e.to_string();
    if e.is_transient() {
        return CniError::new(ErrorCode::TryAgainLater, msg).with_details("OpenStack is unreachable or failing; try again later");
    }
    match (e, e.kind()) {
        (openstack::Error::Unauthorized { .. }, _) => CniError::new(ErrorCode::Other(CODE_AUTH), msg)
            .with_details("check openstackConf username, password, project and domain settings"),
        (_, Some("IpAddressGenerationFailure")) => CniError::new(ErrorCode::Other(CODE_EXHAUSTED), msg)
            .with_details("the subnet has no free addresses for pods; enlarge its allocation pool"),
        (_, Some("OverQuota")) => {
            CniError::new(ErrorCode::Other(CODE_QUOTA), msg).with_details("raise the project's Neutron quota or free resources")
        }
        (_, Some("BadRequest")) if msg.contains("loating") => CniError::new(ErrorCode::Other(CODE_API), msg)
            .with_details("a floating IP is associated with this address; disassociate it before the pod's address can be released"),
        (openstack::Error::NoEndpoint { .. } | openstack::Error::Config(_), _) => CniError::new(ErrorCode::InvalidNetworkConfig, msg),
        _ => CniError::new(ErrorCode::Other(CODE_API), msg),
    }
}

/// Wraps an I/O error of the data directory.
pub fn state_err(dir: &std::path::Path) -> impl FnOnce(std::io::Error) -> IpamError + '_ {
    move |source| IpamError::State { dir: dir.display().to_string(), source }
}
