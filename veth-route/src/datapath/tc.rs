//! Attaching the programs to interfaces: TCX links pinned per interface (kernel >= 6.6),
//! or netlink clsact/cls_bpf filters on older kernels (which persist without pins).

use std::io;
use std::path::Path;
use std::sync::Mutex;

use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{qdisc_add_clsact, qdisc_detach_program, NlOptions, TcAttachOptions, TcError};
use aya::programs::{ProgramError, SchedClassifier};
use aya::util::KernelVersion;

use super::loader::{error_chain, ATTACH};
use super::pins::unpin;
use super::DatapathError;

/// How programs are attached on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX links (kernel >= 6.6), pinned so they outlive the plugin process.
    Tcx,
    /// Netlink clsact qdisc + direct-action cls_bpf filter.
    Netlink,
}

impl AttachMode {
    /// TCX when the kernel has it; `VETH_ROUTE_TC_ATTACH=netlink|tcx` overrides (testing,
    /// or kernels with backported TCX).
    pub fn detect() -> Self {
        match std::env::var("VETH_ROUTE_TC_ATTACH").as_deref() {
            Ok("netlink") => return Self::Netlink,
            Ok("tcx") => return Self::Tcx,
            _ => {}
        }
        match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => Self::Tcx,
            _ => Self::Netlink,
        }
    }
}

/// Attach `prog` to tc ingress of `ifname`, replacing an earlier attachment of ours.
/// TCX: the link is pinned at `pin`.
pub fn attach(prog: &mut SchedClassifier, prog_name: &str, ifname: &str, pin: &Path, mode: AttachMode) -> Result<(), DatapathError> {
    let fail = |e: ProgramError| DatapathError::Other(format!("attaching {prog_name} to {ifname}: {}", error_chain(&e)));
    match mode {
        AttachMode::Tcx => {
            // Dropping the old pin releases the old link (detaching it) before we add ours.
            unpin(pin)?;
            let id = prog.attach_with_options(ifname, ATTACH, TcAttachOptions::TcxOrder(LinkOrder::default())).map_err(fail)?;
            let link = prog.take_link(id).map_err(fail)?;
            let link = FdLink::try_from(link).map_err(|e| DatapathError::Other(format!("link of {ifname}: {e}")))?;
            link.pin(pin).map_err(|e| DatapathError::Other(format!("pinning link {}: {e}", pin.display())))?;
        }
        AttachMode::Netlink => {
            match qdisc_add_clsact(ifname) {
                Ok(()) => {}
                Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(DatapathError::Other(format!("adding clsact to {ifname}: {e}"))),
            }
            detach_netlink(ifname, prog_name)?;
            let id = prog.attach_with_options(ifname, ATTACH, TcAttachOptions::Netlink(NlOptions::default())).map_err(fail)?;
            let link = prog.take_link(id).map_err(fail)?;
            // The filter lives in the kernel; dropping the link would delete it.
            std::mem::forget(link);
        }
    }
    Ok(())
}

/// Whether `prog` is attached to tc ingress of `ifname` (TCX: pin present and program on the
/// interface; netlink: a filter carrying the program's name exists).
pub fn is_attached(prog: &SchedClassifier, ifname: &str, pin: &Path, mode: AttachMode) -> Result<bool, DatapathError> {
    match mode {
        AttachMode::Tcx => {
            if !pin.exists() {
                return Ok(false);
            }
            let id = prog.info().map_err(|e| DatapathError::Other(format!("program info: {e}")))?.id();
            match SchedClassifier::query_tcx(ifname, ATTACH) {
                Ok((_, progs)) => Ok(progs.iter().any(|p| p.id() == id)),
                Err(e) if is_no_such_device(&e) => Ok(false),
                Err(e) => Err(DatapathError::Other(format!("querying tcx of {ifname}: {}", error_chain(&e)))),
            }
        }
        // aya has no filter listing; netlink filters cannot be detached by a process exit,
        // so a successful ADD is the best evidence available.
        AttachMode::Netlink => Ok(true),
    }
}

/// Links unpinned by `detach`, released when the process exits.
static RELEASE_AT_EXIT: Mutex<Vec<FdLink>> = Mutex::new(Vec::new());

/// Undo `attach` for `ifname` (an interface that may already be gone).
///
/// Releasing a TCX link of a live interface waits for an RCU grace period. DEL deletes the
/// veth right after this, which detaches the program anyway; so the pin is removed now but
/// the link itself is held until the process exits, when releasing it costs nothing.
pub fn detach(prog_name: &str, ifname: &str, pin: &Path, mode: AttachMode) -> Result<(), DatapathError> {
    if let Ok(link) = PinnedLink::from_pin(pin) {
        if let Ok(mut held) = RELEASE_AT_EXIT.lock() {
            held.push(FdLink::from(link));
        }
    }
    unpin(pin)?;
    if mode == AttachMode::Netlink {
        detach_netlink(ifname, prog_name)?;
    }
    Ok(())
}

fn detach_netlink(ifname: &str, prog_name: &str) -> Result<(), DatapathError> {
    match qdisc_detach_program(ifname, ATTACH, prog_name) {
        Ok(()) => Ok(()),
        Err(TcError::IoError(e)) if matches!(e.kind(), io::ErrorKind::NotFound) || e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(TcError::NetlinkError(e)) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::EINVAL) | Some(libc::ENOENT)) => Ok(()),
        Err(e) => Err(DatapathError::Other(format!("detaching {prog_name} from {ifname}: {e}"))),
    }
}

fn is_no_such_device(e: &ProgramError) -> bool {
    let s = error_chain(e);
    s.contains("No such device") || s.contains("not found")
}

/// Names of the TCX ingress programs on `ifname`, in run order (empty if none or no TCX).
pub fn tcx_ingress_programs(ifname: &str) -> Vec<String> {
    match SchedClassifier::query_tcx(ifname, ATTACH) {
        Ok((_, progs)) => progs.iter().map(|p| p.name_as_str().unwrap_or("?").to_string()).collect(),
        Err(_) => Vec::new(),
    }
}
