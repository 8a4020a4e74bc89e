//! Delivery: rewrite like a router would, then hand the packet to the pod's veth peer, or
//! out of the VM after a FIB lookup.

use crate::{family::Family, flows, maps::LocalPod, packet::EthHdr, PassReason, Verdict};
use aya_ebpf::{
    bindings::{bpf_check_mtu_flags::BPF_MTU_CHK_SEGS, bpf_fib_lookup as FibLookupC, bpf_redir_neigh, TC_ACT_REDIRECT},
    helpers::{bpf_check_mtu, bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};

/// Rewrite MACs and TTL (hop limit), then `bpf_redirect_peer` into the pod behind `pod.ep.ifindex`.
///
/// `bpf_redirect_peer` cannot fail here: it only records the target, and a target that is
/// gone is a silent drop later, in the kernel. So the target is checked first, and the
/// kernel gets the packet instead (`pass_redirect_failed`) when the endpoint is stale (the
/// pod went without a DEL, so its veth and ifindex are gone; or the ifindex now belongs to
/// another pod, whose `sources` or `sources6` entry names another address) or the packet does not fit
/// the veth's MTU (the kernel answers with "fragmentation needed", as a router does).
#[inline(always)]
pub fn deliver<P: Family>(ctx: &TcContext, pkt: &P, pod: &LocalPod) -> Verdict {
    let ep = &pod.ep;
    if !pod.current || !fits(ctx, ep.ifindex) {
        return Verdict::Pass(PassReason::RedirectFailed);
    }
    rewrite_macs(pkt.eth(), &ep.pod_mac, &ep.host_mac);
    pkt.decrement_hop();
    // SAFETY: plain helper call; flags must be 0.
    let rc = unsafe { bpf_redirect_peer(ep.ifindex, 0) };
    if rc == TC_ACT_REDIRECT as i64 {
        Verdict::Redirected
    } else {
        Verdict::Pass(PassReason::RedirectFailed)
    }
}

/// Whether interface `ifindex` exists and the packet (each segment, for a GSO packet) fits
/// its MTU. `bpf_check_mtu` looks the interface up by index: -ENODEV when it is gone.
#[inline(always)]
fn fits(ctx: &TcContext, ifindex: u32) -> bool {
    let mut mtu_len = 0u32;
    // SAFETY: `mtu_len` is a valid u32; with BPF_MTU_CHK_SEGS it must be 0, as len_diff.
    let rc = unsafe { bpf_check_mtu(ctx.skb.skb.cast(), ifindex, &mut mtu_len, 0, BPF_MTU_CHK_SEGS as u64) };
    rc == 0
}

/// `struct bpf_fib_lookup` (64 bytes); addresses in network order, an IPv4 address in the
/// first 4 bytes of its field.
#[repr(C)]
pub struct FibLookup {
    family: u8,
    l4_protocol: u8,
    sport: u16,
    dport: u16,
    /// 0: the kernel checks the skb (GSO aware) against the egress MTU.
    tot_len: u16,
    ifindex: u32,
    /// IPv4 TOS or IPv6 flow info; 0 for both.
    tos: u32,
    src: [u8; 16],
    /// The destination; on `BPF_FIB_LKUP_RET_NO_NEIGH`, the next hop.
    pub dst: [u8; 16],
    vlan: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

impl FibLookup {
    /// A query for a packet of `family` (`AF_INET`, `AF_INET6`) entering on `ifindex`.
    #[inline(always)]
    pub fn new(family: u8, l4_protocol: u8, ifindex: u32, src: [u8; 16], dst: [u8; 16]) -> Self {
        FibLookup { family, l4_protocol, sport: 0, dport: 0, tot_len: 0, ifindex, tos: 0, src, dst, vlan: 0, smac: [0; 6], dmac: [0; 6] }
    }
}
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const BPF_FIB_LKUP_RET_NO_NEIGH: i64 = 7;

/// Send a pod's packet out of the VM the way the kernel would route it, without the
/// kernel's forwarding path. The packet is marked so the uplink's egress program knows it
/// is ours. An unresolved neighbour is left to `bpf_redirect_neigh` (the kernel resolves
/// it and queues the packet), so a verified flow never drops back to the kernel path
/// mid-stream when the neighbour entry expires. No route, a local destination or an MTU
/// problem go to the kernel.
#[inline(always)]
pub fn route_out<P: Family>(ctx: &TcContext, pkt: &P) -> Verdict {
    // SAFETY: reading a field of the context the kernel passed in.
    let ingress_ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let mut fib = pkt.fib_query(ingress_ifindex);
    // SAFETY: `fib` is a valid, initialised bpf_fib_lookup of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(ctx.skb.skb.cast(), (&mut fib as *mut FibLookup).cast::<FibLookupC>(), core::mem::size_of::<FibLookup>() as i32, 0)
    };
    let redirected = match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {
            rewrite_macs(pkt.eth(), &fib.dmac, &fib.smac);
            pkt.decrement_hop();
            flows::mark_redirected(ctx);
            // SAFETY: plain helper call; flags 0 = egress of the target.
            unsafe { bpf_redirect(fib.ifindex, 0) }
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            // The lookup filled in the egress interface and the next hop (the gateway, or
            // the destination itself when on-link).
            let mut nh = P::next_hop(&fib);
            pkt.decrement_hop();
            flows::mark_redirected(ctx);
            // SAFETY: `nh` is a valid bpf_redir_neigh of the size passed; flags must be 0.
            unsafe { bpf_redirect_neigh(fib.ifindex, &mut nh, core::mem::size_of::<bpf_redir_neigh>() as i32, 0) }
        }
        _ => return Verdict::Pass(PassReason::NotLocal),
    };
    if redirected == TC_ACT_REDIRECT as i64 {
        Verdict::RedirectedOut
    } else {
        Verdict::Pass(PassReason::RedirectFailed)
    }
}

/// Before kernel 6.15 `bpf_redirect_peer` does not scrub the skb: the destination MAC must
/// be the pod's or the pod's stack drops the packet as PACKET_OTHERHOST.
#[inline(always)]
fn rewrite_macs(eth: *mut EthHdr, dst: &[u8; 6], src: &[u8; 6]) {
    // SAFETY: bounds checked in `packet::parse`.
    unsafe {
        (*eth).dst = *dst;
        (*eth).src = *src;
    }
}
