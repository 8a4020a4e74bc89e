//! veth-route fast path: tc programs that deliver IPv4 and IPv6 packets straight into the
//! destination pod with `bpf_redirect_peer` (or out of the VM), leaving everything they
//! cannot handle safely to the kernel's routes (the fallback path).
//!
//! - `from_pod` (ingress of each host veth): anti-spoofing, then forwarding.
//! - `from_uplink` (ingress of each uplink): forwarding to local pods.
//! - `to_pod` / `to_uplink` (egress of the same): watch what the kernel delivered, to learn
//!   which flows it does not translate (see `flows`).
//!
//! Each ingress program is a pipeline of small steps: parse -> (anti-spoof) -> forwardable
//! -> lookup -> flow state -> check the target -> rewrite -> redirect. A step either continues or returns a
//! [`Verdict`] that is counted and turned into a tc action.
#![no_std]
#![no_main]

mod counters;
mod family;
mod flows;
mod maps;
mod packet;
mod redirect;

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use veth_route_common::{CounterSlot, SOURCE_F_ANTI_SPOOF};

use crate::family::Family;
use crate::flows::Known;
use crate::maps::LocalPod;
use crate::packet::{Frame, Ipv6Packet, NotForwardable};

/// Outcome of one packet; every outcome has a counter.
#[derive(Clone, Copy)]
pub enum Verdict {
    /// Handed to `bpf_redirect_peer` (into a pod).
    Redirected,
    /// Handed to `bpf_redirect` / `bpf_redirect_neigh` (out of the VM) after a FIB lookup.
    RedirectedOut,
    /// Kernel path, with the reason.
    Pass(PassReason),
    /// Dropped, with the reason.
    Drop(DropReason),
}

/// Why a packet goes to the kernel path.
#[derive(Clone, Copy)]
pub enum PassReason {
    NotIp,
    Ipv6,
    Malformed,
    IpOptions,
    Fragment,
    Ttl,
    NotLocal,
    NewFlow,
    KernelFlow,
    UntrackedProto,
    RedirectFailed,
}

/// Why a packet is dropped.
#[derive(Clone, Copy)]
pub enum DropReason {
    Spoofed,
    Ipv6,
    Malformed,
}

impl From<NotForwardable> for PassReason {
    fn from(n: NotForwardable) -> Self {
        match n {
            NotForwardable::Options => PassReason::IpOptions,
            NotForwardable::Fragment => PassReason::Fragment,
            NotForwardable::Ttl => PassReason::Ttl,
            NotForwardable::Ipv6KernelOnly => PassReason::Ipv6,
        }
    }
}

/// tc ingress of a host veth: packets leaving a pod.
#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    counters::record(CounterSlot::FromPod, from_pod_verdict(&ctx))
}

/// tc ingress of an uplink: packets arriving from the tenant network.
#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    let verdict = if packet::vlan_tagged(&ctx) {
        // A frame of another network (a trunk's subport) is never one of our pods'.
        Verdict::Pass(PassReason::NotIp)
    } else {
        match packet::parse(&ctx) {
            Some(Frame::Ipv4(pkt)) => forward(&ctx, &pkt, Ingress::Uplink),
            Some(Frame::Ipv6(pkt)) => forward(&ctx, &pkt, Ingress::Uplink),
            Some(Frame::Arp | Frame::Other) => Verdict::Pass(PassReason::NotIp),
            None => Verdict::Pass(PassReason::Malformed),
        }
    };
    counters::record(CounterSlot::FromUplink, verdict)
}

/// tc egress of a host veth: the kernel delivers a packet to a pod (redirected packets
/// never come through here).
#[classifier]
pub fn to_pod(ctx: TcContext) -> i32 {
    observe(&ctx, CounterSlot::ToPod, false);
    TC_ACT_UNSPEC
}

/// tc egress of an uplink: a packet leaves the VM, routed by the kernel or by `route_out`.
#[classifier]
pub fn to_uplink(ctx: TcContext) -> i32 {
    let ours = flows::take_redirected_mark(&ctx);
    observe(&ctx, CounterSlot::ToUplink, ours);
    TC_ACT_UNSPEC
}

/// Anti-spoofing, then forwarding. The source entry is written before `from_pod` is
/// attached and removed after it is detached, so a missing entry means lost state: the
/// pod is policed as if `antiSpoof` were on (fail closed).
#[inline(always)]
fn from_pod_verdict(ctx: &TcContext) -> Verdict {
    // SAFETY: reading a field of the context the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // No entry: no source matches, no mode of its own, policed (see `maps::pod_source`).
    let (src, present) = maps::pod_source(ifindex);
    let (src_ip, src_flags) = (src.ip, src.flags);
    let policed = !present || src_flags & SOURCE_F_ANTI_SPOOF != 0;
    // A tag would carry the frame to a network nothing here checks (as other EtherTypes).
    if packet::vlan_tagged(ctx) {
        return if policed { Verdict::Drop(DropReason::Malformed) } else { Verdict::Pass(PassReason::NotIp) };
    }
    let Some(frame) = packet::parse(ctx) else {
        return if policed { Verdict::Drop(DropReason::Malformed) } else { Verdict::Pass(PassReason::Malformed) };
    };
    match frame {
        Frame::Ipv4(pkt) => {
            if policed && src_ip != pkt.saddr() {
                aya_log_ebpf::debug!(ctx, "drop spoofed source {:i} on ifindex {}", u32::from_be_bytes(pkt.saddr()), ifindex);
                return Verdict::Drop(DropReason::Spoofed);
            }
            forward(ctx, &pkt, Ingress::Pod { mode_flags: src_flags })
        }
        Frame::Ipv6(pkt) if policed => ipv6_from_pod(ctx, &pkt, ifindex, src_flags),
        Frame::Ipv6(pkt) => forward(ctx, &pkt, Ingress::Pod { mode_flags: src_flags }),
        Frame::Arp => Verdict::Pass(PassReason::NotIp),
        // VLAN tags and other EtherTypes would carry headers nothing here checks.
        Frame::Other if policed => Verdict::Drop(DropReason::Malformed),
        Frame::Other => Verdict::Pass(PassReason::NotIp),
    }
}

/// A policed pod's IPv6: link-local neighbour discovery and MLD from any pod (to the
/// kernel), since every pod's kernel sends them; the rest only from a dual-stack pod (one
/// with a `sources6` entry): from its own address (forwarded), or staying on the link (to
/// the kernel). An IPv4-only pod's other IPv6 is dropped as IPv6, a dual-stack pod's
/// forged source as spoofed.
#[inline(always)]
fn ipv6_from_pod(ctx: &TcContext, pkt: &Ipv6Packet, ifindex: u32, mode_flags: u32) -> Verdict {
    if pkt.is_link_local_control(ctx) {
        return Verdict::Pass(PassReason::Ipv6);
    }
    let Some(own) = maps::pod_source6(ifindex) else { return Verdict::Drop(DropReason::Ipv6) };
    if pkt.from_address(&own.ip) {
        forward(ctx, pkt, Ingress::Pod { mode_flags })
    } else if pkt.stays_on_the_link() {
        Verdict::Pass(PassReason::Ipv6)
    } else {
        Verdict::Drop(DropReason::Spoofed)
    }
}

/// Where a packet entered the VM.
#[derive(Clone, Copy)]
pub enum Ingress {
    /// From a pod (tc ingress of its host veth), with the flags of its `sources` entry.
    Pod { mode_flags: u32 },
    /// From the tenant network (tc ingress of an uplink).
    Uplink,
}

/// Route one packet: redirect into a local pod or out of the VM when its flow is
/// verified (`auto`) or its destination is a pod (`always`); else the kernel's. The mode is
/// the destination pod's network's, else the sending pod's.
#[inline(always)]
fn forward<P: Family>(ctx: &TcContext, pkt: &P, ingress: Ingress) -> Verdict {
    if let Err(n) = pkt.forwardable(ctx) {
        return Verdict::Pass(n.into());
    }
    let pod = pkt.local_pod();
    let mode_flags = match (&pod, ingress) {
        (Some(p), _) => p.owner_flags,
        (None, Ingress::Pod { mode_flags }) => mode_flags,
        (None, Ingress::Uplink) => 0,
    };
    if !maps::mode_is_auto(mode_flags) {
        return match pod {
            Some(p) => redirect::deliver(ctx, pkt, &p),
            None => Verdict::Pass(PassReason::NotLocal),
        };
    }
    // From the network, only pods are ours to deliver; the VM's own traffic is the kernel's.
    if pod.is_none() && matches!(ingress, Ingress::Uplink) {
        return Verdict::Pass(PassReason::NotLocal);
    }
    let Some(key) = pkt.flow(ctx) else {
        // An ICMP error about a bypassed flow goes the flow's way (see flows).
        if pkt.quotes_verified_flow(ctx) {
            return along_the_flow(ctx, pkt, pod);
        }
        return Verdict::Pass(if pod.is_some() { PassReason::UntrackedProto } else { PassReason::NotLocal });
    };
    match flows::classify(ctx, pkt, &key) {
        Known::New => Verdict::Pass(PassReason::NewFlow),
        Known::Kernel => Verdict::Pass(PassReason::KernelFlow),
        Known::Verified => {
            let verdict = along_the_flow(ctx, pkt, pod);
            if let Verdict::Pass(_) = verdict {
                flows::pending(&key);
            }
            verdict
        }
    }
}

/// Where a verified flow's packets go: into the local pod, else out of the VM.
#[inline(always)]
fn along_the_flow<P: Family>(ctx: &TcContext, pkt: &P, pod: Option<LocalPod>) -> Verdict {
    match pod {
        Some(p) => redirect::deliver(ctx, pkt, &p),
        None => redirect::route_out(ctx, pkt),
    }
}

/// Egress side of `auto`: what the kernel delivered tells which flows it left untranslated
/// (for pods of `always` networks too: modes are per network, and the state is harmless to
/// a pod whose packets never consult it).
#[inline(always)]
fn observe(ctx: &TcContext, slot: CounterSlot, ours: bool) {
    match packet::parse(ctx) {
        Some(Frame::Ipv4(pkt)) => observe_flow(ctx, &pkt, slot, ours),
        Some(Frame::Ipv6(pkt)) => observe_flow(ctx, &pkt, slot, ours),
        _ => {}
    }
}

#[inline(always)]
fn observe_flow<P: Family>(ctx: &TcContext, pkt: &P, slot: CounterSlot, ours: bool) {
    if pkt.plain(ctx).is_err() {
        return;
    }
    if let Some(key) = pkt.flow(ctx) {
        counters::observed(slot, flows::observe(&key, ours));
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// `bpf_redirect_peer` and `bpf_redirect_neigh` require a GPL-compatible program.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
