//! eBPF fast path: loads, pins and attaches the TC programs and keeps the pinned
//! endpoint map in step with the pods of this host.
//!
//! INTERFACE CONTRACT (used by the plugin; keep these signatures stable):
//! - `DatapathConfig` is flattened into the plugin's network config.
//! - `attach` after the pod is fully wired (or `attach_early` once its host veth exists and
//!   `PendingAttach::finish` after), `detach` on DEL (idempotent), `check` on CHECK,
//!   `gc` on GC. All run in the host (VM) network namespace of the plugin process.

pub mod cli;
mod loader;
mod maps;
mod migrate;
mod pins;
mod tc;
mod trace;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;
use veth_route_common::{Endpoint, PodSource, SOURCE_F_ANTI_SPOOF, SOURCE_F_MODE_ALWAYS, SOURCE_F_MODE_AUTO};

use self::loader::{Prog, Programs};
use self::maps::PinnedMaps;
use self::pins::PinLayout;
use self::tc::AttachMode;

/// How the fast path is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FastPath {
    /// Redirect flows the kernel was seen to deliver untranslated (no NAT); kernel path for
    /// the rest (see docs/fastpath.md).
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
    /// Why this pod keeps the kernel path although the network has a fast path (set from
    /// the runtime's arguments, never from the config file).
    #[serde(skip)]
    pub kernel_path_reason: Option<&'static str>,
}

impl DatapathConfig {
    /// The `sources` map flags this config asks for: anti-spoofing, and the redirect mode of
    /// this network's pods (per pod, so networks sharing a pin directory keep their own).
    fn source_flags(&self) -> u32 {
        let spoof = if self.anti_spoof { SOURCE_F_ANTI_SPOOF } else { 0 };
        let mode = if self.fast_path == FastPath::Always { SOURCE_F_MODE_ALWAYS } else { SOURCE_F_MODE_AUTO };
        spoof | mode
    }
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self { fast_path: FastPath::Auto, bpf_pin_dir: default_pin_dir(), uplinks: Vec::new(), anti_spoof: true, kernel_path_reason: None }
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
    /// A dual-stack pod's IPv6 address: its `sources6` entry and its IPv6 endpoint.
    pub pod_ip6: Option<std::net::Ipv6Addr>,
    /// MAC of the pod-side interface.
    pub pod_mac: [u8; 6],
    /// Host-side veth.
    pub host_ifindex: u32,
    /// Host-side veth name.
    pub host_ifname: String,
    /// MAC of the host-side veth.
    pub host_mac: [u8; 6],
}

impl PodEndpoint {
    /// Its value in the `endpoints` map.
    fn endpoint(&self) -> Endpoint {
        Endpoint { ifindex: self.host_ifindex, pod_mac: self.pod_mac, host_mac: self.host_mac }
    }

    /// Its entry in the `sources` map under `cfg`'s anti-spoof setting.
    fn source(&self, cfg: &DatapathConfig) -> PodSource {
        PodSource { ip: self.pod_ip.octets(), flags: cfg.source_flags() }
    }
}

/// What `attach` achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// Programs attached and endpoint in the map.
    Fast,
    /// Kernel routes only, and why.
    KernelOnly { reason: String },
}

/// Datapath failures: each keeps the error it comes from as its source (with the errno of
/// the system call, see [`DatapathError::errno`]); `Unavailable` and `Mismatch` are
/// decisions (kernel path; CHECK differs) and carry their reason.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// eBPF is unusable and the config requires it.
    #[error("eBPF fast path required but unavailable: {0}")]
    Unavailable(String),
    /// A CHECK found a difference.
    #[error("datapath check failed: {0}")]
    Mismatch(String),
    /// The pin directory (or one above it on bpffs) could be planted, redirected or changed
    /// by someone other than root.
    #[error("bpfPinDir: {} {problem}; the fast path's pins must be root's alone: fix or remove it", .path.display())]
    InsecurePins { path: PathBuf, problem: String },
    /// A file system operation on bpffs (a pin directory, pin, lock or record) failed.
    #[error("{op} {}: {source}", .path.display())]
    Fs { op: &'static str, path: PathBuf, source: std::io::Error },
    /// A pinned map could not be opened, read or written (or is of another layout).
    #[error("{op}: {source}")]
    Map { op: String, source: aya::maps::MapError },
    /// A program could not be opened, attached or queried.
    #[error("{op}: {}", loader::error_chain(.source))]
    Program { op: String, source: aya::programs::ProgramError },
    /// A TCX link could not be opened or converted.
    #[error("{op}: {source}")]
    Link { op: String, source: aya::programs::links::LinkError },
    /// A program or link could not be pinned.
    #[error("{op}: {source}")]
    Pin { op: String, source: aya::pin::PinError },
    /// A netlink tc request (clsact qdisc, cls_bpf filter) failed.
    #[error("{op}: {source}")]
    Tc { op: String, source: aya::programs::tc::TcError },
    /// The embedded eBPF object could not be loaded for another reason than missing eBPF.
    #[error("loading eBPF object: {}", loader::error_chain(.0))]
    Object(#[source] aya::EbpfError),
    /// An interface the config or the attachment names does not exist.
    #[error("{role} {name}: no such interface")]
    NoInterface { role: &'static str, name: String },
    /// A netlink request of the plugin's own (listing interfaces or tc filters) failed.
    #[error("{op}: {source}")]
    Netlink { op: &'static str, source: Box<crate::error::Error> },
    /// `veth-route trace` could not attach to the programs' log buffer.
    #[error("attaching to the programs' log buffer: {0}")]
    Log(#[source] aya_log::Error),
    /// `veth-route stats --json` could not render its output.
    #[error("rendering JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Nothing is pinned where an operator command looks.
    #[error("no fast path pinned at {} (no pod added with eBPF yet, or another bpfPinDir)", .0.display())]
    NotPinned(PathBuf),
    /// A bug rather than the host: the attach thread panicked, the object lacks a program.
    #[error("datapath: {0}")]
    Internal(String),
}

impl DatapathError {
    /// The errno of the system call behind this failure, if one failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DatapathError::Program { source, .. } => loader::program_errno(source),
            other => loader::errno_in_chain(other),
        }
    }
}

/// Attach the programs for one pod and insert its endpoint.
///
/// Loads and pins the programs on first use on this host; attaches the uplinks once.
/// When eBPF cannot be used here the pod keeps the kernel path (one log line), unless
/// `fastPath` is `required`.
pub fn attach(cfg: &DatapathConfig, ep: &PodEndpoint) -> Result<Attached, DatapathError> {
    let early = (cfg.fast_path != FastPath::Off).then(|| attach_program(cfg, &ep.host_ifname));
    PendingAttach { cfg: cfg.clone(), work: None, early }.finish(ep)
}

/// Start [`attach`] for a pod whose host veth exists but has no address yet: attaching
/// the programs runs on a thread while the caller allocates and configures, because an
/// attach may wait for an RCU grace period holding RTNL (the first cls_bpf filter on a hook
/// an expedited one, a TCX link a full one). Until [`PendingAttach::finish`] stores the pod's
/// address and endpoint, anti-spoof drops every IPv4 packet from the pod.
///
/// On failure the caller undoes it with [`detach`], after dropping the `PendingAttach`.
pub fn attach_early(cfg: &DatapathConfig, host_ifname: &str) -> PendingAttach {
    let mut pending = PendingAttach { cfg: cfg.clone(), work: None, early: None };
    if cfg.fast_path == FastPath::Off {
        return pending;
    }
    let (thread_cfg, ifname) = (cfg.clone(), host_ifname.to_string());
    match std::thread::Builder::new().name("datapath-attach".into()).spawn(move || attach_program(&thread_cfg, &ifname)) {
        Ok(handle) => pending.work = Some(handle),
        Err(_) => pending.early = Some(attach_program(cfg, host_ifname)),
    }
    pending
}

/// A pod attachment begun by [`attach_early`].
///
/// Dropping it unfinished waits for the attach thread, so a rollback's [`detach`] never
/// races it.
pub struct PendingAttach {
    cfg: DatapathConfig,
    work: Option<std::thread::JoinHandle<Result<PinnedMaps, DatapathError>>>,
    early: Option<Result<PinnedMaps, DatapathError>>,
}

impl PendingAttach {
    /// Insert the endpoint of the (now fully configured) pod: from here on the fast path
    /// delivers to it.
    pub fn finish(mut self, ep: &PodEndpoint) -> Result<Attached, DatapathError> {
        let early = match self.work.take() {
            Some(handle) => handle.join().unwrap_or_else(|_| Err(DatapathError::Internal("attach thread panicked".into()))),
            None => match self.early.take() {
                Some(early) => early,
                None => return Ok(Attached::KernelOnly { reason: self.cfg.kernel_path_reason.unwrap_or("fastPath is off").into() }),
            },
        };
        match early.and_then(|mut maps| insert_endpoint(&self.cfg, &mut maps, ep)) {
            Ok(()) => Ok(Attached::Fast),
            Err(DatapathError::Unavailable(reason)) if self.cfg.fast_path != FastPath::Required => {
                log::warn!("eBPF fast path unavailable, pod {} uses kernel routes only: {reason}", ep.pod_ip);
                Ok(Attached::KernelOnly { reason })
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for PendingAttach {
    fn drop(&mut self) {
        if let Some(handle) = self.work.take() {
            let _ = handle.join();
        }
    }
}

/// Load (or reuse) the programs, migrate an older pin generation, attach the uplinks, then
/// put a placeholder anti-spoof entry (no IPv4 source passes) and attach the pod programs
/// to the host veth, in that order, so the check holds from the first packet. Leaves
/// nothing of the pod behind on failure.
fn attach_program(cfg: &DatapathConfig, host_ifname: &str) -> Result<PinnedMaps, DatapathError> {
    let mut stages = crate::timings::Stages::start(format!("datapath attach {host_ifname}"));
    let layout = PinLayout::new(&cfg.bpf_pin_dir);
    layout.prepare()?;
    let _lock = layout.lock()?;
    stages.end("lock");
    let mut progs = loader::load_or_reuse(&layout)?;
    let mut maps = PinnedMaps::open(&layout)?;
    migrate::migrate(&layout, &mut progs, &mut maps)?;
    ensure_uplinks(cfg, &layout, &mut progs)?;
    stages.end("programs");

    let host_ifindex = ifindex(host_ifname).ok_or_else(|| DatapathError::NoInterface { role: "host veth", name: host_ifname.into() })?;
    let flags = cfg.source_flags();
    let mode = AttachMode::for_pod_veth();
    let attached = maps.put_source(host_ifindex, PodSource { ip: Ipv4Addr::BROADCAST.octets(), flags }).and_then(|()| {
        Prog::POD.iter().try_for_each(|&p| {
            let r = tc::attach(progs.get_mut(p), p, host_ifname, &layout.link(p, host_ifname), mode);
            stages.end(p.name());
            r
        })
    });
    if let Err(e) = attached {
        // Leave nothing behind: the plugin rolls back the veth, we roll back our entries.
        detach_pod_programs(&layout, host_ifname);
        let _ = maps.remove_source(host_ifindex);
        return Err(e);
    }
    Ok(maps)
}

/// Detach the pod programs from `host_ifname`, best effort (used on rollback).
fn detach_pod_programs(layout: &PinLayout, host_ifname: &str) {
    for p in Prog::POD {
        if let Err(e) = tc::detach(p, host_ifname, &layout.link(p, host_ifname)) {
            log::warn!("rollback: {e}");
        }
    }
}

/// Store the pod's address for anti-spoof and insert its endpoint (the programs start
/// redirecting to it); on failure undo [`attach_program`].
fn insert_endpoint(cfg: &DatapathConfig, maps: &mut PinnedMaps, ep: &PodEndpoint) -> Result<(), DatapathError> {
    let layout = PinLayout::new(&cfg.bpf_pin_dir);
    let _lock = layout.lock()?;
    let inserted = ep
        .pod_ip6
        .map_or(Ok(()), |ip6| maps.put_source6(ep.host_ifindex, ip6))
        .and_then(|()| maps.put_source(ep.host_ifindex, ep.source(cfg)))
        .and_then(|()| maps.put_endpoint(ep.pod_ip, ep.endpoint()))
        .and_then(|()| ep.pod_ip6.map_or(Ok(()), |ip6| maps.put_endpoint6(ip6, ep.endpoint())));
    if let Err(e) = inserted {
        if let Some(ip6) = ep.pod_ip6 {
            let _ = maps.remove_endpoint6(ip6);
        }
        let _ = maps.remove_endpoint(ep.pod_ip);
        detach_pod_programs(&layout, &ep.host_ifname);
        let _ = maps.remove_source(ep.host_ifindex);
        let _ = maps.remove_source6(ep.host_ifindex);
        return Err(e);
    }
    Ok(())
}

/// Attach the uplink programs to each configured uplink that does not have them yet
/// (idempotent; the pinned link or netlink filter outlives this process).
fn ensure_uplinks(cfg: &DatapathConfig, layout: &PinLayout, progs: &mut Programs) -> Result<(), DatapathError> {
    let mode = AttachMode::for_uplink();
    for uplink in &cfg.uplinks {
        if ifindex(uplink).is_none() {
            return Err(DatapathError::NoInterface { role: "uplink", name: uplink.clone() });
        }
        for p in Prog::UPLINK {
            let pin = layout.link(p, uplink);
            if tc::is_attached(progs.get_mut(p), p, uplink, &pin)? {
                continue;
            }
            tc::attach(progs.get_mut(p), p, uplink, &pin, mode)?;
            log::info!("eBPF fast path: {} attached to uplink {uplink} ({})", p.name(), mode.as_str());
        }
    }
    Ok(())
}

/// STATUS, and ADD before its first side effect: with `fastPath: required` the programs must
/// be loadable (or already pinned) here, else no ADD can succeed. Other modes fall back to
/// the kernel path and need nothing.
pub fn status(cfg: &DatapathConfig) -> Result<(), DatapathError> {
    if cfg.fast_path != FastPath::Required {
        return Ok(());
    }
    let layout = PinLayout::new(&cfg.bpf_pin_dir);
    layout.prepare()?;
    let _lock = layout.lock()?;
    loader::load_or_reuse(&layout).map(|_| ())
}

/// Remove the pod's endpoint and per-pod attachments; succeeds when already gone.
///
/// Runs whatever `fastPath` says now (it may have been different at ADD). An entry whose
/// interface still exists under another name belongs to a newer pod and is kept.
pub fn detach(cfg: &DatapathConfig, pod_ip: Option<Ipv4Addr>, host_ifname: &str) -> Result<(), DatapathError> {
    let layout = PinLayout::new(&cfg.bpf_pin_dir);
    if !layout.exists() {
        return Ok(());
    }
    let _lock = layout.lock()?;
    for p in Prog::POD {
        tc::detach(p, host_ifname, &layout.link(p, host_ifname))?;
    }
    let Ok(mut maps) = PinnedMaps::open(&layout) else {
        return Ok(());
    };
    let live = ifindex(host_ifname);
    if let Some(ip) = pod_ip {
        if let Some(ep) = maps.endpoint(ip)? {
            if live == Some(ep.ifindex) || ifname(ep.ifindex).is_none() {
                maps.remove_endpoint(ip)?;
            }
        }
    }
    if let Some(idx) = live {
        maps.remove_source(idx)?;
        maps.remove_source6(idx)?;
        for (ip, ep) in maps.all_endpoints()? {
            if ep.ifindex == idx {
                maps.remove_endpoint(ip)?;
            }
        }
        for (ip, ep) in maps.all_endpoints6()? {
            if ep.ifindex == idx {
                maps.remove_endpoint6(ip)?;
            }
        }
    }
    sweep_vanished(&mut maps)
}

/// Verify the pod's endpoint and attachment.
pub fn check(cfg: &DatapathConfig, ep: &PodEndpoint) -> Result<(), DatapathError> {
    if cfg.fast_path == FastPath::Off {
        return Ok(());
    }
    let layout = PinLayout::new(&cfg.bpf_pin_dir);
    // What ADD did for this attachment, not what the host has: its link pins (or netlink
    // records), its anti-spoof entry and its endpoint. None of them: ADD gave it the kernel
    // path (eBPF was unusable then, or the network's fastPath was off), which other pods'
    // pins do not make wrong.
    let maps = if layout.exists() { PinnedMaps::open(&layout).ok() } else { None };
    let in_maps = maps.as_ref().is_some_and(|m| {
        m.source(ep.host_ifindex).ok().flatten().is_some()
            || m.endpoint(ep.pod_ip).ok().flatten().is_some_and(|e| e.ifindex == ep.host_ifindex)
    });
    let recorded = in_maps || Prog::POD.iter().any(|p| layout.link(*p, &ep.host_ifname).exists());
    if !recorded {
        return match cfg.fast_path {
            FastPath::Required => Err(DatapathError::Mismatch(format!(
                "{} has no fast path under {} (fastPath is required)",
                ep.host_ifname,
                layout.root().display()
            ))),
            _ => Ok(()),
        };
    }
    let Some(maps) = maps else {
        return Err(DatapathError::Mismatch(format!(
            "the fast path of {} is gone: no maps pinned under {}",
            ep.host_ifname,
            layout.root().display()
        )));
    };
    let want = ep.endpoint();
    match maps.endpoint(ep.pod_ip)? {
        None => return Err(DatapathError::Mismatch(format!("no endpoint for {} in {}", ep.pod_ip, layout.map("endpoints").display()))),
        Some(got) if got != want => {
            return Err(DatapathError::Mismatch(format!(
                "endpoint for {} is {} but the pod is {}",
                ep.pod_ip,
                cli::describe(&got),
                cli::describe(&want)
            )))
        }
        Some(_) => {}
    }
    match maps.source(ep.host_ifindex)? {
        Some(src) if src == ep.source(cfg) => {}
        other => {
            return Err(DatapathError::Mismatch(format!(
                "anti-spoof entry of {} (ifindex {}) is {other:?}, expected source {} with antiSpoof={}",
                ep.host_ifname, ep.host_ifindex, ep.pod_ip, cfg.anti_spoof
            )))
        }
    }
    let got6 = maps.source6(ep.host_ifindex)?;
    if got6 != ep.pod_ip6 {
        return Err(DatapathError::Mismatch(format!(
            "IPv6 anti-spoof entry of {} (ifindex {}) is {got6:?}, expected {:?}",
            ep.host_ifname, ep.host_ifindex, ep.pod_ip6
        )));
    }
    if let Some(ip6) = ep.pod_ip6 {
        match maps.endpoint6(ip6)? {
            Some(got) if got == want => {}
            got => {
                return Err(DatapathError::Mismatch(format!(
                    "IPv6 endpoint for {ip6} is {} but the pod is {}",
                    got.as_ref().map_or("missing".into(), cli::describe),
                    cli::describe(&want)
                )))
            }
        }
    }
    for p in Prog::POD {
        let pin =
            loader::pinned_program(&layout, p).ok_or_else(|| DatapathError::Mismatch(format!("program {} is not pinned", p.name())))?;
        let prog = loader::open_pinned(&pin, p.name())?;
        if !tc::is_attached(&prog, p, &ep.host_ifname, &layout.link(p, &ep.host_ifname))? {
            return Err(DatapathError::Mismatch(format!("{} is not attached to tc {:?} of {}", p.name(), p.attach_type(), ep.host_ifname)));
        }
    }
    Ok(())
}

/// After GC deleted this network's stale host veths: remove the pins and map entries of
/// host veths that no longer exist.
///
/// The pin directory may be shared by several networks (the default one is), so GC goes
/// by what is gone, never by this network's list of valid attachments: another network's
/// pods are not in that list, and must keep their fast path and anti-spoofing.
pub fn gc(cfg: &DatapathConfig) -> Result<(), DatapathError> {
    let layout = PinLayout::new(&cfg.bpf_pin_dir);
    if !layout.exists() {
        return Ok(());
    }
    let _lock = layout.lock()?;
    for p in Prog::POD {
        let Ok(dir) = std::fs::read_dir(layout.links(p)) else { continue };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ifindex(&name).is_none() {
                tc::detach(p, &name, &entry.path())?;
            }
        }
    }
    let Ok(mut maps) = PinnedMaps::open(&layout) else {
        return Ok(());
    };
    sweep_vanished(&mut maps)
}

/// Drop map entries whose host veth no longer exists: an endpoint (of either family) whose
/// ifindex is gone or now has another MAC (a new interface got the index), or whose
/// `sources` (`sources6`) entry names another pod; an anti-spoof entry whose ifindex is gone.
fn sweep_vanished(maps: &mut PinnedMaps) -> Result<(), DatapathError> {
    let links = crate::netns::with_netlink(|h| async move { crate::netlink::links(&h).await })
        .map_err(|e| DatapathError::Netlink { op: "listing interfaces", source: Box::new(e) })?;
    let mac_of: std::collections::HashMap<u32, Option<[u8; 6]>> = links.into_iter().map(|l| (l.index, l.mac)).collect();
    for (ip, ep) in maps.all_endpoints()? {
        let owner = maps.source(ep.ifindex)?.map(|s| s.ip);
        let live = mac_of.get(&ep.ifindex) == Some(&Some(ep.host_mac)) && owner.is_none_or(|o| o == ip.octets());
        if !live {
            log::info!("removing stale endpoint {ip} (host veth ifindex {} is gone or another pod's)", ep.ifindex);
            maps.remove_endpoint(ip)?;
        }
    }
    for (ip, ep) in maps.all_endpoints6()? {
        let owner = maps.source6(ep.ifindex)?;
        let live = mac_of.get(&ep.ifindex) == Some(&Some(ep.host_mac)) && owner.is_none_or(|o| o == ip);
        if !live {
            log::info!("removing stale endpoint {ip} (host veth ifindex {} is gone or another pod's)", ep.ifindex);
            maps.remove_endpoint6(ip)?;
        }
    }
    for (idx, _) in maps.all_sources()? {
        if !mac_of.contains_key(&idx) {
            maps.remove_source(idx)?;
        }
    }
    for (idx, _) in maps.all_sources6()? {
        if !mac_of.contains_key(&idx) {
            maps.remove_source6(idx)?;
        }
    }
    Ok(())
}

/// ifindex of `name` in the current network namespace.
fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Name of interface `idx` in the current network namespace.
fn ifname(idx: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buffer of IF_NAMESIZE bytes as the call requires.
    let p = unsafe { libc::if_indextoname(idx, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}
