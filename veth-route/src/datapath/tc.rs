//! Attaching the programs to interfaces, by one of two methods: a TCX link pinned per
//! interface (kernel >= 6.6), or a netlink clsact/cls_bpf filter, which persists without a
//! pin; an empty directory at the link's pin path records it instead. [`AttachMode`] decides
//! the method for a new attachment; everything after (CHECK, DEL, GC, listing, upgrades)
//! goes by what the pin path holds, so attachments of either kind, by any build, are served
//! alike.

use std::path::Path;
use std::sync::Mutex;

use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{
    qdisc_add_clsact, qdisc_detach_program, NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions, TcError, TcHandle,
};
use aya::programs::{ProgramError, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;

use super::loader::{program_errno, Prog};
use super::pins::unpin;
use super::DatapathError;

/// A method of attaching a program to an interface's tc hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX links (kernel >= 6.6), pinned so they outlive the plugin process.
    Tcx,
    /// Netlink clsact qdisc + direct-action cls_bpf filter.
    Netlink,
}

impl AttachMode {
    /// The method for the pod programs on a host veth: netlink cls_bpf, on every kernel.
    ///
    /// Each TCX attach waits for an RCU grace period holding RTNL, and deleting a veth with
    /// TCX programs waits for one more per hook: on a 6.18 host that made ADD 2.4x and DEL
    /// 1.5x ptp's, against 0.7-1.1x with cls_bpf (docs/fastpath.md, "Costs"). TCX's ordering
    /// among other programs buys little on a veth this plugin creates for one pod.
    pub fn for_pod_veth() -> Self {
        Self::forced().unwrap_or(Self::Netlink)
    }

    /// The method for the uplink programs: TCX where the kernel has it. An uplink is shared
    /// with other software, whose TCX programs run in a defined order with ours, and it is
    /// attached once per host, not per pod.
    pub fn for_uplink() -> Self {
        Self::forced().unwrap_or(match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => Self::Tcx,
            _ => Self::Netlink,
        })
    }

    /// `VETH_ROUTE_TC_ATTACH=netlink|tcx`: one method for every new attachment (testing:
    /// `tcx` attaches pods as builds before netlink pod attachments did; or kernels with
    /// backported TCX).
    fn forced() -> Option<Self> {
        match std::env::var("VETH_ROUTE_TC_ATTACH").as_deref() {
            Ok("netlink") => Some(Self::Netlink),
            Ok("tcx") => Some(Self::Tcx),
            _ => None,
        }
    }

    /// The kind of attachment recorded at `pin`: a TCX link pin is a file, a netlink
    /// filter's record a directory; `None` if nothing is.
    pub fn recorded(pin: &Path) -> Option<Self> {
        let meta = std::fs::symlink_metadata(pin).ok()?;
        Some(if meta.is_dir() { Self::Netlink } else { Self::Tcx })
    }

    /// For logs and `veth-route stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Netlink => "netlink",
        }
    }
}

/// Attach `prog` (program `which`) to its hook on `ifname` by `mode`, replacing an earlier
/// attachment of ours there. TCX: the link is pinned at `pin`; netlink: `pin` records it.
pub fn attach(prog: &mut SchedClassifier, which: Prog, ifname: &str, pin: &Path, mode: AttachMode) -> Result<(), DatapathError> {
    let fail = |source: ProgramError| DatapathError::Program { op: format!("attaching {} to {ifname}", which.name()), source };
    match mode {
        AttachMode::Tcx => {
            // An earlier attachment goes first (dropping a TCX pin releases its link).
            detach_now(which, ifname, pin)?;
            let id =
                prog.attach_with_options(ifname, which.attach_type(), TcAttachOptions::TcxOrder(LinkOrder::default())).map_err(fail)?;
            let link = prog.take_link(id).map_err(fail)?;
            let link = FdLink::try_from(link).map_err(|source| DatapathError::Link { op: format!("link of {ifname}"), source })?;
            link.pin(pin).map_err(|source| DatapathError::Pin { op: format!("pinning link {}", pin.display()), source })?;
        }
        AttachMode::Netlink => {
            if AttachMode::recorded(pin) == Some(AttachMode::Tcx) {
                detach_now(which, ifname, pin)?;
            }
            let fresh = match qdisc_add_clsact(ifname) {
                Ok(()) => true,
                Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => false,
                Err(source) => return Err(DatapathError::Tc { op: format!("adding clsact to {ifname}"), source }),
            };
            // The record first, so that DEL and GC find a filter whatever happens next.
            let recorded = std::fs::create_dir_all(pin);
            recorded.map_err(|source| DatapathError::Fs { op: "recording the filter at", path: pin.to_path_buf(), source })?;
            // A clsact qdisc we just added has no filters; an older one may have ours.
            let ours = if fresh { Vec::new() } else { netlink_filters(ifname, which.attach_type())? };
            let ours: Vec<_> = ours.into_iter().filter(|f| f.name == which.name()).collect();
            if ours.is_empty() {
                let id = prog.attach_with_options(ifname, which.attach_type(), TcAttachOptions::Netlink(NlOptions::default()));
                leave_in_kernel(prog, id.map_err(fail)?).map_err(fail)?;
            }
            for f in &ours {
                // Without NLM_F_CREATE the kernel swaps the program of the filter at this
                // priority and handle in place: the hook never runs without one.
                let old = SchedClassifierLink::attached(ifname, which.attach_type(), f.priority, f.handle, None)
                    .map_err(|e| DatapathError::Tc { op: format!("filter {} of {ifname}", which.name()), source: TcError::IoError(e) })?;
                let id = prog.attach_to_link(old).map_err(fail)?;
                leave_in_kernel(prog, id).map_err(fail)?;
            }
        }
    }
    Ok(())
}

/// Let the netlink filter `id` of `prog` outlive `prog`, which would delete it on drop.
fn leave_in_kernel(prog: &mut SchedClassifier, id: SchedClassifierLinkId) -> Result<(), ProgramError> {
    std::mem::forget(prog.take_link(id)?);
    Ok(())
}

/// Whether `prog` is attached to its hook on `ifname` the way `pin` records: TCX, this
/// program; netlink, a filter of that name (a new build replaces it under the same name).
pub fn is_attached(prog: &SchedClassifier, which: Prog, ifname: &str, pin: &Path) -> Result<bool, DatapathError> {
    match AttachMode::recorded(pin) {
        None => Ok(false),
        Some(AttachMode::Tcx) => {
            let id = prog.info().map_err(|source| DatapathError::Program { op: "program info".into(), source })?.id();
            match SchedClassifier::query_tcx(ifname, which.attach_type()) {
                Ok((_, progs)) => Ok(progs.iter().any(|p| p.id() == id)),
                Err(e) if program_errno(&e) == Some(libc::ENODEV) => Ok(false),
                Err(source) => Err(DatapathError::Program { op: format!("querying tcx of {ifname}"), source }),
            }
        }
        Some(AttachMode::Netlink) => Ok(netlink_filters(ifname, which.attach_type())?.iter().any(|f| f.name == which.name())),
    }
}

/// Links unpinned by `detach`, released when the process exits.
static RELEASE_AT_EXIT: Mutex<Vec<FdLink>> = Mutex::new(Vec::new());

/// Undo the attachment `pin` records on `ifname` (an interface that may already be gone),
/// whichever kind it is.
///
/// Releasing a TCX link of a live interface waits for an RCU grace period. DEL deletes the
/// veth right after this, which detaches the program anyway; so the pin is removed now but
/// the link itself is held until the process exits, when releasing it costs nothing.
pub fn detach(which: Prog, ifname: &str, pin: &Path) -> Result<(), DatapathError> {
    if AttachMode::recorded(pin) == Some(AttachMode::Tcx) {
        if let Ok(link) = PinnedLink::from_pin(pin) {
            if let Ok(mut held) = RELEASE_AT_EXIT.lock() {
                held.push(FdLink::from(link));
            }
        }
    }
    detach_now(which, ifname, pin)
}

/// [`detach`], releasing a TCX link at once.
fn detach_now(which: Prog, ifname: &str, pin: &Path) -> Result<(), DatapathError> {
    if AttachMode::recorded(pin) == Some(AttachMode::Netlink) {
        detach_netlink(ifname, which)?;
    }
    unpin(pin)
}

fn detach_netlink(ifname: &str, which: Prog) -> Result<(), DatapathError> {
    match qdisc_detach_program(ifname, which.attach_type(), which.name()) {
        Ok(()) => Ok(()),
        // The interface, its clsact qdisc or the filter is already gone.
        Err(TcError::IoError(e))
            if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) || e.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(TcError::NetlinkError(e)) if matches!(e.raw_os_error(), Some(libc::ENODEV | libc::EINVAL | libc::ENOENT)) => Ok(()),
        Err(source) => Err(DatapathError::Tc { op: format!("detaching {} from {ifname}", which.name()), source }),
    }
}

/// Names of the programs on `ifname`'s `hook` in run order, whoever attached them: TCX
/// programs, then cls_bpf filters (empty if none, or the interface is gone).
pub fn programs_on(ifname: &str, hook: TcAttachType) -> Vec<String> {
    let tcx = match SchedClassifier::query_tcx(ifname, hook) {
        Ok((_, progs)) => progs.iter().map(|p| p.name_as_str().unwrap_or("?").to_string()).collect(),
        // No TCX in this kernel, or the interface is gone.
        Err(_) => Vec::new(),
    };
    let filters = netlink_filters(ifname, hook).unwrap_or_default();
    tcx.into_iter().chain(filters.into_iter().map(|f| f.name)).collect()
}

/// A cls_bpf filter on a clsact hook.
struct NlFilter {
    /// Its program's name.
    name: String,
    priority: u16,
    handle: TcHandle,
}

/// The cls_bpf filters on `ifname`'s clsact `hook`, in run order (aya cannot list filters).
fn netlink_filters(ifname: &str, hook: TcAttachType) -> Result<Vec<NlFilter>, DatapathError> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};

    let Some(index) = super::ifindex(ifname) else { return Ok(Vec::new()) };
    let listed = crate::netns::with_netlink(|h| async move {
        let req = h.traffic_filter(index as i32).get();
        let req = if hook == TcAttachType::Egress { req.egress() } else { req.ingress() };
        let msgs: Vec<_> =
            req.execute().try_collect().await.map_err(|e| crate::error::Error::Command(format!("listing tc filters: {e}")))?;
        Ok(msgs)
    });
    let msgs = listed.map_err(|e| DatapathError::Netlink { op: "listing tc filters", source: Box::new(e) })?;
    let mut filters = Vec::new();
    for m in msgs {
        // tcm_info: priority in the upper 16 bits, protocol in the lower.
        let (priority, handle) = ((m.header.info >> 16) as u16, TcHandle::new(m.header.handle.major, m.header.handle.minor));
        for attr in m.attributes {
            if let TcAttribute::Options(opts) = attr {
                for o in opts {
                    if let TcOption::Bpf(TcFilterBpfOption::ProgName(name)) = o {
                        filters.push(NlFilter { name, priority, handle });
                    }
                }
            }
        }
    }
    Ok(filters)
}
