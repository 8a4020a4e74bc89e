//! Anti-spoofing in the kernel: what stops a pod's forged packets whenever the eBPF
//! program `from_pod` does not (`fastPath: off`, eBPF unusable on this kernel, a pod left
//! on the kernel path), and a second line beneath it when it does.
//!
//! - IPv4: strict reverse-path filtering on the host veth (`rp_filter=1`). The only route
//!   to the pod's address is its /32 through this veth, so a packet arriving here with any
//!   other source fails the check and is dropped before it is routed or delivered: another
//!   pod's address routes through that pod's veth, an uplink-subnet address through the
//!   uplink, anything else through the default route. The kernel applies the larger of
//!   `net.ipv4.conf.all.rp_filter` and the device's value, so `all=2` (loose; Ubuntu sets
//!   it) overrides the device's 1. Loose still drops them on a veth without IPv4
//!   addresses (the `dummy0` gateway's case): the kernel's source validation
//!   (`__fib_validate_source`) rejects, in loose mode too, every source that does not
//!   route back through an address-less interface. A veth holding the gateway itself
//!   (`gatewayMode: hostVeth`) gets no such help; [`KernelGuard`] says which applies.
//! - IPv6: pods are IPv4-only. `from_pod`, once attached, lets them send only link-local
//!   ND/MLD; where it is not attached the host veth takes no IPv6 at all
//!   (`disable_ipv6=1`), so the kernel drops every IPv6 packet from the pod on arrival.
//!   An IPv4-only pod loses nothing it needs by that: at most ND/MLD towards a host veth
//!   that then has no IPv6 address to answer from. ADD blocks IPv6 before the veth is up
//!   and lifts the block only once `from_pod` is attached ([`settle`]), so no pod is
//!   unguarded while ADD runs, whatever the attach turns out to be.
//!
//! Both are settings of the host veth itself and vanish with it, so DEL has nothing to undo.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::datapath::DatapathConfig;
use crate::error::{Error, Result};
use crate::sysctl;

/// An `rp_filter` mode (`net.ipv4.conf.*.rp_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RpFilter {
    /// 0: no source validation.
    Off,
    /// 1: the source must route back through the receiving interface.
    Strict,
    /// 2 (and above): the source must be routable through any interface.
    Loose,
}

impl RpFilter {
    fn from_value(v: u32) -> RpFilter {
        match v {
            0 => RpFilter::Off,
            1 => RpFilter::Strict,
            _ => RpFilter::Loose,
        }
    }
}

/// What the host veth does with IPv6 from the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ipv6Intake {
    /// `disable_ipv6=1`: every IPv6 packet from the pod is dropped.
    Blocked,
    /// The host veth takes IPv6 like any interface.
    Open,
    /// The host has no IPv6 on this veth (IPv6 disabled at boot, or an MTU below 1280):
    /// nothing from the pod reaches an IPv6 stack.
    Absent,
}

/// The kernel's anti-spoofing on one host veth, as read back from its sysctls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelGuard {
    /// The mode in force: the larger of `all` and the device's value.
    pub rp_filter: RpFilter,
    /// `net.ipv4.conf.<veth>.rp_filter`.
    pub rp_filter_dev: u32,
    /// `net.ipv4.conf.all.rp_filter`.
    pub rp_filter_all: u32,
    /// The veth has an IPv4 address (the gateway, in `hostVeth` placement): only then does
    /// loose mode let routable forged sources through.
    pub veth_has_ipv4: bool,
    /// IPv6 from the pod.
    pub ipv6: Ipv6Intake,
}

impl KernelGuard {
    /// Whether forged IPv4 sources are dropped: strict rp_filter, or loose on a veth
    /// without IPv4 addresses (see the module docs).
    pub fn ipv4_enforced(&self) -> bool {
        match self.rp_filter {
            RpFilter::Strict => true,
            RpFilter::Loose => !self.veth_has_ipv4,
            RpFilter::Off => false,
        }
    }

    /// Whether no IPv6 from the pod reaches the host's IPv6 stack.
    pub fn ipv6_blocked(&self) -> bool {
        self.ipv6 != Ipv6Intake::Open
    }
}

impl fmt::Display for KernelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rp_filter {
            RpFilter::Strict => write!(f, "rp_filter strict")?,
            RpFilter::Loose if self.rp_filter_all > self.rp_filter_dev => write!(
                f,
                "rp_filter loose (net.ipv4.conf.all.rp_filter={} overrides the veth's {})",
                self.rp_filter_all, self.rp_filter_dev
            )?,
            RpFilter::Loose => write!(f, "rp_filter loose ({})", self.rp_filter_dev)?,
            RpFilter::Off => write!(f, "rp_filter off")?,
        }
        if self.rp_filter == RpFilter::Loose {
            write!(
                f,
                "{}",
                if self.veth_has_ipv4 { " on a veth with an IPv4 address" } else { ", as strict on a veth without IPv4 addresses" }
            )?;
        }
        match self.ipv6 {
            Ipv6Intake::Blocked => write!(f, ", IPv6 blocked (disable_ipv6=1)"),
            Ipv6Intake::Open => write!(f, ", IPv6 open"),
            Ipv6Intake::Absent => write!(f, ", no IPv6 on the veth"),
        }
    }
}

/// What `from_pod` polices for a pod (no eBPF program attached: neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EbpfGuard {
    /// `from_pod` is attached and drops forged IPv4 sources.
    pub ipv4: bool,
    /// `from_pod` is attached and drops the pod's IPv6 other than link-local NDP/MLD.
    pub ipv6: bool,
}

fn rp_filter_key(ifname: &str) -> String {
    format!("net/ipv4/conf/{ifname}/rp_filter")
}

fn disable_ipv6_key(ifname: &str) -> String {
    format!("net/ipv6/conf/{ifname}/disable_ipv6")
}

/// Turn on the kernel's anti-spoofing for the pod behind `host_ifname`: strict rp_filter,
/// and with `enable_ipv6_block` no IPv6 from the pod. Idempotent; calling it again with
/// `true` adds the IPv6 block to a veth set up without it. Returns what is in force then.
///
/// ADD applies rp_filter whenever `antiSpoof` is on, with `from_pod` attached or not:
/// it runs before ADD knows whether the attach (on its own thread) succeeds, so no pod is
/// ever without a guard; a pod's own source always passes it (its /32 routes through
/// this veth) and redirected packets never reach the IP layer where it runs, so it costs
/// legitimate traffic nothing; and it still holds if the program or its anti-spoof entry
/// is ever lost (a half-done upgrade, a link detached by hand).
pub fn kernel_fallback(host_ifname: &str, enable_ipv6_block: bool) -> Result<KernelGuard> {
    sysctl::ensure(&rp_filter_key(host_ifname), "1")?;
    if enable_ipv6_block {
        sysctl::ensure_if_present(&disable_ipv6_key(host_ifname), "1")?;
    }
    in_force(host_ifname)?.ok_or_else(|| Error::Command(format!("host veth {host_ifname} vanished while setting up anti-spoofing")))
}

/// Give the host veth back the IPv6 it would have without [`kernel_fallback`] (the
/// namespace's `default.disable_ipv6`, normally 0): for a pod whose IPv6 `from_pod`
/// polices, so the link-local ND/MLD it lets through reach the host.
pub fn lift_ipv6_block(host_ifname: &str) -> Result<()> {
    let Some(default) = sysctl::read("net/ipv6/conf/default/disable_ipv6")? else { return Ok(()) };
    sysctl::ensure_if_present(&disable_ipv6_key(host_ifname), &default)
}

/// Finish the kernel's part once ADD knows what `from_pod` covers: lift the IPv6 block
/// where `from_pod` polices IPv6, and log which mechanisms guard the pod (info when IPv4
/// and IPv6 are both covered, a warning naming what is not). Never fails ADD: a block
/// that cannot be lifted stays, which only errs on the safe side.
/// `dual_stack`: the pod has an IPv6 address, whose sources the ip6tables rpfilter rule
/// polices beneath `from_pod` (`antispoof6`; ADD installed it or failed).
pub fn settle(cfg: &DatapathConfig, pod_ip: Ipv4Addr, host_ifname: &str, ebpf: EbpfGuard, dual_stack: bool) {
    if cfg.anti_spoof && ebpf.ipv6 {
        if let Err(e) = lift_ipv6_block(host_ifname) {
            log::warn!("anti-spoofing for {pod_ip}: IPv6 stays blocked on {host_ifname} as well: {e}");
        }
    }
    report(cfg, pod_ip, host_ifname, ebpf, dual_stack);
}

/// What the kernel enforces on `host_ifname` now; `None` when the veth does not exist.
pub fn in_force(host_ifname: &str) -> Result<Option<KernelGuard>> {
    let Some(dev) = read_u32(&rp_filter_key(host_ifname))? else { return Ok(None) };
    let all = read_u32("net/ipv4/conf/all/rp_filter")?.unwrap_or(0);
    let ipv6 = match sysctl::read(&disable_ipv6_key(host_ifname))?.as_deref() {
        None => Ipv6Intake::Absent,
        Some("0") => Ipv6Intake::Open,
        Some(_) => Ipv6Intake::Blocked,
    };
    let rp_filter = RpFilter::from_value(dev.max(all));
    Ok(Some(KernelGuard { rp_filter, rp_filter_dev: dev, rp_filter_all: all, veth_has_ipv4: has_ipv4(host_ifname)?, ipv6 }))
}

/// Whether `ifname` holds an IPv4 address (in the calling thread's namespace).
fn has_ipv4(ifname: &str) -> Result<bool> {
    let addrs =
        nix::ifaddrs::getifaddrs().map_err(|e| Error::io("list interface addresses")(std::io::Error::from_raw_os_error(e as i32)))?;
    Ok(addrs.into_iter().any(|a| a.interface_name == ifname && a.address.is_some_and(|s| s.as_sockaddr_in().is_some())))
}

/// What CHECK finds missing of what ADD set on `host_ifname`: strict rp_filter, and with
/// `ipv6_block` (the caller knows `from_pod` does not police this pod) no IPv6. Nothing
/// when the veth is gone: CHECK reports that on its own. Host-wide settings that weaken it
/// (`all.rp_filter=2`) are not the attachment's state; ADD's log and [`in_force`] report
/// them.
pub fn check(host_ifname: &str, ipv6_block: bool) -> Result<Vec<String>> {
    let Some(guard) = in_force(host_ifname)? else { return Ok(Vec::new()) };
    let mut d = Vec::new();
    if guard.rp_filter_dev != 1 {
        d.push(format!("anti-spoofing: net.ipv4.conf.{host_ifname}.rp_filter is {}, expected 1 (strict)", guard.rp_filter_dev));
    }
    if ipv6_block && guard.ipv6 == Ipv6Intake::Open {
        d.push(format!("anti-spoofing: host veth {host_ifname} accepts IPv6 from the pod (net.ipv6.conf.{host_ifname}.disable_ipv6=0)"));
    }
    Ok(d)
}

/// Log which mechanisms guard the pod's sources: info when both IPv4 and IPv6 are
/// covered, a warning naming what is not.
fn report(cfg: &DatapathConfig, pod_ip: Ipv4Addr, host_ifname: &str, ebpf: EbpfGuard, dual_stack: bool) {
    if !cfg.anti_spoof {
        log::info!("anti-spoofing for {pod_ip} ({host_ifname}): off (antiSpoof is false)");
        return;
    }
    match in_force(host_ifname) {
        Ok(Some(kernel)) => {
            let (text, complete) = summary(ebpf, &kernel, dual_stack);
            if complete {
                log::info!("anti-spoofing for {pod_ip} ({host_ifname}): {text}");
            } else {
                log::warn!("anti-spoofing for {pod_ip} ({host_ifname}) is incomplete: {text}");
            }
        }
        Ok(None) => log::warn!("anti-spoofing for {pod_ip}: host veth {host_ifname} not found"),
        Err(e) => log::warn!("anti-spoofing for {pod_ip} ({host_ifname}): cannot read the kernel's settings: {e}"),
    }
}

/// The mechanism in force per address family, and whether both are covered.
fn summary(ebpf: EbpfGuard, kernel: &KernelGuard, dual_stack: bool) -> (String, bool) {
    let rp = if kernel.rp_filter == RpFilter::Strict {
        "strict rp_filter"
    } else {
        "rp_filter (loose, as strict on a veth without IPv4 addresses)"
    };
    let ipv4 = match (ebpf.ipv4, kernel.ipv4_enforced()) {
        (true, true) => format!("IPv4 by eBPF from_pod, with the kernel's {rp} beneath it"),
        (true, false) => format!("IPv4 by eBPF from_pod (kernel: {kernel})"),
        (false, true) => format!("IPv4 by the kernel's {rp} (eBPF from_pod not attached)"),
        (false, false) => {
            let fix = if kernel.rp_filter_all > 1 && kernel.rp_filter_dev == 1 {
                "; set net.ipv4.conf.all.rp_filter to 0 or 1 so the veth's 1 counts"
            } else {
                ""
            };
            format!("IPv4 NOT enforced: eBPF from_pod not attached and kernel has {kernel}{fix}")
        }
    };
    let ipv6 = match (ebpf.ipv6, kernel.ipv6) {
        _ if dual_stack && ebpf.ipv6 => {
            "IPv6 by eBPF from_pod (its own address and link-local), with the ip6tables rpfilter rule beneath it"
        }
        _ if dual_stack => "IPv6 by the ip6tables rpfilter rule (eBPF from_pod not attached)",
        (_, Ipv6Intake::Blocked) => "IPv6 blocked by the kernel (disable_ipv6=1)",
        (_, Ipv6Intake::Absent) => "no IPv6 on the host veth",
        (true, Ipv6Intake::Open) => "IPv6 by eBPF from_pod (link-local ND/MLD only)",
        (false, Ipv6Intake::Open) => "IPv6 NOT enforced: the host veth accepts IPv6 and eBPF from_pod does not police it",
    };
    let complete = (ebpf.ipv4 || kernel.ipv4_enforced()) && (dual_stack || ebpf.ipv6 || kernel.ipv6_blocked());
    (format!("{ipv4}; {ipv6}"), complete)
}

fn read_u32(key: &str) -> Result<Option<u32>> {
    match sysctl::read(key)? {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            Error::io(format!("read sysctl {key}"))(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a number: {v:?}")))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host veth holding the gateway (hostVeth placement); see `no_addr`.
    fn guard(dev: u32, all: u32, ipv6: Ipv6Intake) -> KernelGuard {
        KernelGuard { rp_filter: RpFilter::from_value(dev.max(all)), rp_filter_dev: dev, rp_filter_all: all, veth_has_ipv4: true, ipv6 }
    }

    /// The same veth without IPv4 addresses (dummy0 placement).
    fn no_addr(g: KernelGuard) -> KernelGuard {
        KernelGuard { veth_has_ipv4: false, ..g }
    }

    #[test]
    fn the_larger_of_all_and_device_is_in_force() {
        assert!(guard(1, 0, Ipv6Intake::Blocked).ipv4_enforced());
        assert!(guard(1, 1, Ipv6Intake::Blocked).ipv4_enforced());
        let loose = guard(1, 2, Ipv6Intake::Blocked);
        assert_eq!(loose.rp_filter, RpFilter::Loose);
        assert_eq!(
            loose.to_string(),
            "rp_filter loose (net.ipv4.conf.all.rp_filter=2 overrides the veth's 1) on a veth with an IPv4 address, IPv6 blocked (disable_ipv6=1)"
        );
        assert!(!loose.ipv4_enforced());
        // Without an address on the veth loose drops what strict drops.
        assert!(no_addr(loose).ipv4_enforced());
        assert!(no_addr(guard(0, 2, Ipv6Intake::Blocked)).ipv4_enforced());
        assert!(!no_addr(guard(0, 0, Ipv6Intake::Blocked)).ipv4_enforced());
        assert_eq!(
            no_addr(guard(2, 0, Ipv6Intake::Absent)).to_string(),
            "rp_filter loose (2), as strict on a veth without IPv4 addresses, no IPv6 on the veth"
        );
        assert_eq!(guard(0, 0, Ipv6Intake::Open).to_string(), "rp_filter off, IPv6 open");
        assert!(guard(0, 0, Ipv6Intake::Absent).ipv6_blocked());
        assert!(!guard(0, 0, Ipv6Intake::Open).ipv6_blocked());
    }

    #[test]
    fn summary_names_the_mechanism_and_what_is_missing() {
        let strict = guard(1, 0, Ipv6Intake::Blocked);
        let (text, complete) = summary(EbpfGuard::default(), &strict, false);
        assert!(complete);
        assert_eq!(text, "IPv4 by the kernel's strict rp_filter (eBPF from_pod not attached); IPv6 blocked by the kernel (disable_ipv6=1)");

        let (text, complete) = summary(EbpfGuard { ipv4: true, ipv6: false }, &strict, false);
        assert!(complete);
        assert!(text.starts_with("IPv4 by eBPF from_pod, with the kernel's strict rp_filter beneath it"), "{text}");

        let (text, complete) = summary(EbpfGuard::default(), &guard(1, 2, Ipv6Intake::Blocked), false);
        assert!(!complete);
        assert!(text.contains("IPv4 NOT enforced") && text.contains("set net.ipv4.conf.all.rp_filter to 0 or 1"), "{text}");

        // eBPF covering IPv4 makes a loose kernel check a note, not a gap.
        let (_, complete) = summary(EbpfGuard { ipv4: true, ipv6: false }, &guard(1, 2, Ipv6Intake::Blocked), false);
        assert!(complete);

        let (text, complete) = summary(EbpfGuard { ipv4: true, ipv6: false }, &guard(1, 0, Ipv6Intake::Open), false);
        assert!(!complete);
        assert!(text.contains("IPv6 NOT enforced"), "{text}");
        assert!(summary(EbpfGuard { ipv4: true, ipv6: true }, &guard(1, 0, Ipv6Intake::Open), false).1);

        let (text, complete) = summary(EbpfGuard::default(), &no_addr(guard(1, 2, Ipv6Intake::Blocked)), false);
        assert!(complete);
        assert!(text.starts_with("IPv4 by the kernel's rp_filter (loose, as strict on a veth without IPv4 addresses)"), "{text}");

        // A dual-stack pod's veth takes IPv6: the rpfilter rule polices it.
        let (text, complete) = summary(EbpfGuard::default(), &guard(1, 0, Ipv6Intake::Open), true);
        assert!(complete);
        assert!(text.ends_with("IPv6 by the ip6tables rpfilter rule (eBPF from_pod not attached)"), "{text}");
    }
}
