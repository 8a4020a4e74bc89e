//! The plugin's typed errors and their CNI error codes.

use std::path::PathBuf;

use cni::{CniError, ErrorCode};

use crate::datapath::DatapathError;
use crate::proxy_neigh::ProxyNeighError;

// veth-route's own CNI codes are 120-139. tcnp-ipam, whose errors veth-route passes
// through unchanged from the IPAM step, has 100-119; README "Error codes" is the one table.

/// Plugin-specific CNI code: a kernel operation (netlink, sysctl, iptables) failed.
pub const CODE_KERNEL: u32 = 120;
/// Plugin-specific CNI code: CHECK found the attachment differs from what ADD set up.
pub const CODE_CHECK_MISMATCH: u32 = 121;
/// Plugin-specific CNI code: the eBPF datapath failed.
pub const CODE_DATAPATH: u32 = 122;
/// Plugin-specific CNI code: the IPAM result cannot be used (e.g. no IPv4 address).
pub const CODE_IPAM_RESULT: u32 = 123;
/// veth-route's range of plugin-specific codes.
pub const CODES: std::ops::RangeInclusive<u32> = 120..=139;

/// Everything that can go wrong in the plugin.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error that already is a CNI error (config, env, IPAM).
    #[error("{0}")]
    Cni(#[from] CniError),
    /// The container's network namespace cannot be opened.
    #[error("cannot open network namespace {path}: {source}")]
    Netns { path: PathBuf, source: std::io::Error },
    /// A netlink request failed.
    #[error("{op}: {source}")]
    Netlink { op: String, source: rtnetlink::Error },
    /// A netlink request the kernel rejected because of the network config (e.g. a route).
    #[error("{op}: {source}")]
    Rejected { op: String, source: rtnetlink::Error },
    /// A file or thread operation failed.
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    /// An external command (iptables) failed.
    #[error("{0}")]
    Command(String),
    /// CHECK found differences.
    #[error("attachment differs from its result: {}", .0.join("; "))]
    Mismatch(Vec<String>),
    /// The datapath failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// A proxy neighbour operation failed.
    #[error(transparent)]
    ProxyNeigh(#[from] ProxyNeighError),
}

/// Result alias for the plugin.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A netlink failure of operation `op`.
    pub fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
        let op = op.into();
        move |source| Error::Netlink { op, source }
    }

    /// An I/O failure of operation `op`.
    pub fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let op = op.into();
        move |source| Error::Io { op, source }
    }
}

impl From<Error> for CniError {
    fn from(e: Error) -> CniError {
        let msg = e.to_string();
        match e {
            Error::Cni(c) => c,
            Error::Netns { source, .. } if source.kind() == std::io::ErrorKind::NotFound => CniError::new(ErrorCode::UnknownContainer, msg),
            Error::Netns { .. } | Error::Io { .. } => CniError::new(ErrorCode::IoFailure, msg),
            Error::Rejected { .. } => CniError::new(ErrorCode::InvalidNetworkConfig, msg),
            Error::Netlink { .. } | Error::Command(_) => CniError::new(ErrorCode::Other(CODE_KERNEL), msg),
            Error::Mismatch(_) => CniError::new(ErrorCode::Other(CODE_CHECK_MISMATCH), msg),
            Error::Datapath(_) => CniError::new(ErrorCode::Other(CODE_DATAPATH), msg),
            Error::ProxyNeigh(ProxyNeighError::UplinkNotFound(_) | ProxyNeighError::NoDefaultRoute) => {
                CniError::new(ErrorCode::InvalidNetworkConfig, msg)
            }
            Error::ProxyNeigh(ProxyNeighError::Missing { .. }) => CniError::new(ErrorCode::Other(CODE_CHECK_MISMATCH), msg),
            Error::ProxyNeigh(_) => CniError::new(ErrorCode::Other(CODE_KERNEL), msg),
        }
    }
}

/// The errno of a netlink error, if the kernel sent one (positive, e.g. `libc::EEXIST`).
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_stay_in_the_plugins_range() {
        for c in [CODE_KERNEL, CODE_CHECK_MISMATCH, CODE_DATAPATH, CODE_IPAM_RESULT] {
            assert!(CODES.contains(&c), "{c}");
        }
    }
}
