//! veth-route: a CNI plugin that gives each pod a veth pair and a /32 host route behind a
//! link-local gateway (169.254.1.1), with an optional eBPF fast path.
//!
//! Where things happen: `add`/`del`/`check`/`status`/`gc` orchestrate one verb each;
//! `veth`, `host`, `pod`, `gateway`, `antispoof`, `masq` and `sysctl` do one kernel concern each;
//! `netns` runs work inside a namespace; `netlink` wraps rtnetlink; `names` derives the
//! stateless names; `config` parses the network config; `timings` logs where a verb's time
//! goes; `datapath` is the eBPF fast path.

pub mod add;
pub mod antispoof;
pub mod antispoof6;
pub mod check;
pub mod config;
pub mod datapath;
pub mod del;
pub mod error;
pub mod gateway;
pub mod gc;
pub mod host;
pub mod masq;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod pod;
pub mod proxy_neigh;
pub mod status;
pub mod sysctl;
pub mod timings;
pub mod veth;
pub mod xtables;

use cni::{CniError, CniResult, Plugin, Request};

/// The CNI plugin.
pub struct VethRoute;

impl Plugin for VethRoute {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        add::add(req).map_err(CniError::from)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        del::del(req).map_err(CniError::from)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        check::check(req).map_err(CniError::from)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        status::status(req).map_err(CniError::from)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        gc::gc(req).map_err(CniError::from)
    }
}

/// One-line description printed when run without CNI_COMMAND or arguments.
pub const ABOUT: &str = "veth-route CNI plugin: veth pair + /32 host route behind a 169.254.1.1 gateway (CNI 0.3.0-1.1.0)";

/// Operator subcommands (`veth-route stats`, `veth-route endpoints`, `veth-route trace`,
/// `veth-route --help`); `args` starts with the subcommand name.
pub fn operator_cli(args: &[String]) -> i32 {
    datapath::cli::run(args)
}
