//! veth-route fast path: tc ingress programs that deliver IPv4 packets straight into the
//! destination pod with `bpf_redirect_peer`, leaving everything they cannot handle safely
//! to the kernel's routes (the fallback path).
//!
//! Each program is a pipeline of small steps: parse -> (anti-spoof) -> forwardable ->
//! lookup -> conntrack check -> rewrite -> redirect. A step either continues or returns a
//! [`Verdict`] that is counted and turned into a tc action.
//!
//! In `auto` the programs keep every flow either entirely on the kernel path or entirely
//! off it (see `conntrack`), so conntrack never sees half a flow.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod conntrack;
mod counters;
mod maps;
mod packet;
mod redirect;

use aya_ebpf::{macros::classifier, programs::TcContext};
use veth_route_common::{CounterSlot, SOURCE_F_ANTI_SPOOF};

use crate::packet::Ipv4Packet;

/// Outcome of one packet; every outcome has a counter.
#[derive(Clone, Copy)]
pub enum Verdict {
    /// Handed to `bpf_redirect_peer` (into a pod).
    Redirected,
    /// Handed to `bpf_redirect` (out of the VM) after a FIB lookup.
    RedirectedOut,
    /// Kernel path, with the reason.
    Pass(PassReason),
    /// Dropped, with the reason.
    Drop(DropReason),
}

/// Why a packet goes to the kernel path.
#[derive(Clone, Copy)]
pub enum PassReason {
    NotIpv4,
    Malformed,
    IpOptions,
    Fragment,
    Ttl,
    NotLocal,
    Nat,
    Tracked,
    NewFlow,
    UntrackedProto,
    RedirectFailed,
}

/// Why a packet is dropped.
#[derive(Clone, Copy)]
pub enum DropReason {
    Spoofed,
}

/// tc ingress of a host veth: packets leaving a pod.
#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    let verdict = match Ipv4Packet::parse(&ctx) {
        Ok(pkt) => match check_source(&ctx, &pkt) {
            Ok(()) => forward(&ctx, &pkt, Ingress::Pod),
            Err(v) => v,
        },
        Err(reason) => Verdict::Pass(reason),
    };
    counters::record(CounterSlot::FromPod, verdict)
}

/// tc ingress of an uplink: packets arriving from the tenant network.
#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    let verdict = match Ipv4Packet::parse(&ctx) {
        Ok(pkt) => forward(&ctx, &pkt, Ingress::Uplink),
        Err(reason) => Verdict::Pass(reason),
    };
    counters::record(CounterSlot::FromUplink, verdict)
}

/// Anti-spoofing: the source must be the address the sending pod was given.
#[inline(always)]
fn check_source(ctx: &TcContext, pkt: &Ipv4Packet) -> Result<(), Verdict> {
    // SAFETY: reading a field of the context the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let Some(src) = maps::pod_source(ifindex) else {
        return Ok(());
    };
    if src.flags & SOURCE_F_ANTI_SPOOF != 0 && pkt.saddr() != src.ip {
        aya_log_ebpf::debug!(ctx, "drop spoofed source {:i} on ifindex {}", u32::from_be_bytes(pkt.saddr()), ifindex);
        return Err(Verdict::Drop(DropReason::Spoofed));
    }
    Ok(())
}

/// Where a packet entered the VM.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// From a pod (tc ingress of its host veth).
    Pod,
    /// From the tenant network (tc ingress of an uplink).
    Uplink,
}

/// Route one IPv4 packet: redirect into a local pod, send the reply of a bypassed flow out,
/// or leave it to the kernel.
#[inline(always)]
fn forward(ctx: &TcContext, pkt: &Ipv4Packet, ingress: Ingress) -> Verdict {
    if let Err(reason) = pkt.forwardable() {
        return Verdict::Pass(reason);
    }
    let auto = maps::mode_is_auto();
    let Some(ep) = maps::endpoint(pkt.daddr()) else {
        if ingress == Ingress::Pod && auto && conntrack::is_reply_of_bypassed_flow(ctx, pkt) {
            return redirect::route_out(ctx, pkt);
        }
        return Verdict::Pass(PassReason::NotLocal);
    };
    if auto {
        if let Err(reason) = conntrack::may_bypass(ctx, pkt, ingress) {
            return Verdict::Pass(reason);
        }
    }
    redirect::deliver(ctx, pkt, &ep)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The conntrack kfuncs and `bpf_redirect_peer` require a GPL-compatible program.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
