//! Attaching the programs to interfaces: TCX links pinned per interface (kernel >= 6.6),
//! or netlink clsact/cls_bpf filters on older kernels. Those persist without pins; an empty
//! directory at the link's pin path records the attachment instead, so listing, CHECK and
//! GC work the same in both modes.

use std::path::Path;
use std::sync::Mutex;

use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{qdisc_add_clsact, qdisc_detach_program, NlOptions, TcAttachOptions, TcError};
use aya::programs::{ProgramError, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;

use super::loader::{program_errno, Prog};
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

    /// For logs and `veth-route stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Netlink => "netlink (clsact/cls_bpf)",
        }
    }
}

/// Attach `prog` (program `which`) to its hook on `ifname`, replacing an earlier attachment
/// of ours. TCX: the link is pinned at `pin`.
pub fn attach(prog: &mut SchedClassifier, which: Prog, ifname: &str, pin: &Path, mode: AttachMode) -> Result<(), DatapathError> {
    let fail = |source: ProgramError| DatapathError::Program { op: format!("attaching {} to {ifname}", which.name()), source };
    match mode {
        AttachMode::Tcx => {
            // Dropping the old pin releases the old link (detaching it) before we add ours.
            unpin(pin)?;
            let id = prog.attach_with_options(ifname, which.attach_type(), TcAttachOptions::TcxOrder(LinkOrder::default())).map_err(fail)?;
            let link = prog.take_link(id).map_err(fail)?;
            let link = FdLink::try_from(link).map_err(|source| DatapathError::Link { op: format!("link of {ifname}"), source })?;
            link.pin(pin).map_err(|source| DatapathError::Pin { op: format!("pinning link {}", pin.display()), source })?;
        }
        AttachMode::Netlink => {
            match qdisc_add_clsact(ifname) {
                Ok(()) => {}
                Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => return Err(DatapathError::Tc { op: format!("adding clsact to {ifname}"), source }),
            }
            detach_netlink(ifname, which)?;
            let id = prog.attach_with_options(ifname, which.attach_type(), TcAttachOptions::Netlink(NlOptions::default())).map_err(fail)?;
            let link = prog.take_link(id).map_err(fail)?;
            // The filter lives in the kernel; dropping the link would delete it.
            std::mem::forget(link);
            let recorded = std::fs::create_dir_all(pin);
            recorded.map_err(|source| DatapathError::Fs { op: "recording the filter at", path: pin.to_path_buf(), source })?;
        }
    }
    Ok(())
}

/// Whether `prog` is attached to its hook on `ifname`: its pin (or record) is there and the
/// interface runs it (TCX: this program; netlink: a filter of that name, which a new build
/// replaces under the same name).
pub fn is_attached(prog: &SchedClassifier, which: Prog, ifname: &str, pin: &Path, mode: AttachMode) -> Result<bool, DatapathError> {
    if !pin.exists() {
        return Ok(false);
    }
    match mode {
        AttachMode::Tcx => {
            let id = prog.info().map_err(|source| DatapathError::Program { op: "program info".into(), source })?.id();
            match SchedClassifier::query_tcx(ifname, which.attach_type()) {
                Ok((_, progs)) => Ok(progs.iter().any(|p| p.id() == id)),
                Err(e) if program_errno(&e) == Some(libc::ENODEV) => Ok(false),
                Err(source) => Err(DatapathError::Program { op: format!("querying tcx of {ifname}"), source }),
            }
        }
        AttachMode::Netlink => Ok(netlink_filters(ifname, which.attach_type())?.iter().any(|n| n == which.name())),
    }
}

/// Links unpinned by `detach`, released when the process exits.
static RELEASE_AT_EXIT: Mutex<Vec<FdLink>> = Mutex::new(Vec::new());

/// Undo `attach` for `ifname` (an interface that may already be gone).
///
/// Releasing a TCX link of a live interface waits for an RCU grace period. DEL deletes the
/// veth right after this, which detaches the program anyway; so the pin is removed now but
/// the link itself is held until the process exits, when releasing it costs nothing.
pub fn detach(which: Prog, ifname: &str, pin: &Path, mode: AttachMode) -> Result<(), DatapathError> {
    if let Ok(link) = PinnedLink::from_pin(pin) {
        if let Ok(mut held) = RELEASE_AT_EXIT.lock() {
            held.push(FdLink::from(link));
        }
    }
    unpin(pin)?;
    if mode == AttachMode::Netlink {
        detach_netlink(ifname, which)?;
    }
    Ok(())
}

fn detach_netlink(ifname: &str, which: Prog) -> Result<(), DatapathError> {
    match qdisc_detach_program(ifname, which.attach_type(), which.name()) {
        Ok(()) => Ok(()),
        // The interface, its clsact qdisc or the filter is already gone.
        Err(TcError::IoError(e)) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) || e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(TcError::NetlinkError(e)) if matches!(e.raw_os_error(), Some(libc::ENODEV | libc::EINVAL | libc::ENOENT)) => Ok(()),
        Err(source) => Err(DatapathError::Tc { op: format!("detaching {} from {ifname}", which.name()), source }),
    }
}

/// Names of the programs on `ifname`'s `hook`, in run order: TCX programs, or cls_bpf
/// filters (empty if none, or the interface is gone).
pub fn programs_on(ifname: &str, hook: TcAttachType, mode: AttachMode) -> Vec<String> {
    match mode {
        AttachMode::Tcx => match SchedClassifier::query_tcx(ifname, hook) {
            Ok((_, progs)) => progs.iter().map(|p| p.name_as_str().unwrap_or("?").to_string()).collect(),
            Err(_) => Vec::new(),
        },
        AttachMode::Netlink => netlink_filters(ifname, hook).unwrap_or_default(),
    }
}

/// Names of the cls_bpf filters on `ifname`'s clsact `hook` (aya cannot list filters).
fn netlink_filters(ifname: &str, hook: TcAttachType) -> Result<Vec<String>, DatapathError> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};

    let Some(index) = super::ifindex(ifname) else { return Ok(Vec::new()) };
    let listed = crate::netns::with_netlink(|h| async move {
        let req = h.traffic_filter(index as i32).get();
        let req = if hook == TcAttachType::Egress { req.egress() } else { req.ingress() };
        let msgs: Vec<_> = req.execute().try_collect().await.map_err(|e| crate::error::Error::Command(format!("listing tc filters: {e}")))?;
        Ok(msgs)
    });
    let msgs = listed.map_err(|e| DatapathError::Netlink { op: "listing tc filters", source: Box::new(e) })?;
    let mut names = Vec::new();
    for m in msgs {
        for attr in m.attributes {
            if let TcAttribute::Options(opts) = attr {
                for o in opts {
                    if let TcOption::Bpf(TcFilterBpfOption::ProgName(n)) = o {
                        names.push(n);
                    }
                }
            }
        }
    }
    Ok(names)
}
