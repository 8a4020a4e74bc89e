//! `fastPath: auto`: ask the kernel's conntrack before bypassing netfilter, using the
//! `bpf_skb_ct_lookup` / `bpf_ct_release` kfuncs.
//!
//! aya-ebpf 0.2 / aya 0.14 cannot emit or relocate kfunc calls, so each call is one raw
//! `BPF_CALL` instruction with `src_reg = BPF_PSEUDO_KFUNC_CALL` and a placeholder `imm`
//! ([`veth_route_common::kfunc`]); the loader replaces the placeholder with the kfunc's
//! BTF id in the running kernel's vmlinux BTF before loading.
//!
//! Rule: a flow is either entirely the kernel's or entirely ours, never split, because a
//! conntrack entry that sees only one direction breaks NAT (a pod's reply to a bypassed
//! inbound connection would be masqueraded as a new flow) and TCP state tracking.
//! - TCP, no conntrack entry: the kernel never saw the flow, so no NAT binding exists
//!   (kube-proxy and portmap only DNAT virtual/host addresses, which miss the endpoint map
//!   and so take the kernel path, where conntrack records the binding) -> bypass. Its
//!   replies are bypassed too: into a pod by `deliver`, or out of the VM by `route_out`
//!   ([`is_reply_of_bypassed_flow`]).
//! - TCP with an entry: the kernel owns the flow (Service NAT, or it simply started on the
//!   kernel path) -> kernel, both directions.
//! - UDP: has no handshake to tell replies from new flows, so from the uplink the first
//!   packet goes to the kernel; afterwards, and between pods, UDP is bypassed unless the
//!   entry is NATed. Conntrack tracks no UDP state that a one-sided view could break.
//! - NAT test: the entry holding the tuple also holds its exact inverse in the other
//!   direction. Lookup errors count as NATed. Other protocols (ICMP...) stay with the kernel.
use core::arch::asm;

use aya_ebpf::programs::TcContext;
use veth_route_common::kfunc::{CT_LOOKUP_PLACEHOLDER, CT_RELEASE_PLACEHOLDER};

use crate::{
    packet::{Ipv4Packet, IPPROTO_TCP, IPPROTO_UDP, TCP_FLAG_ACK},
    Ingress, PassReason,
};

/// `struct bpf_sock_tuple`, IPv4 member; addresses and ports in network order.
#[repr(C)]
#[derive(Clone)]
struct SockTupleV4 {
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: u16,
    dport: u16,
}

/// `struct bpf_ct_opts` (16-byte layout, kernel >= 6.1 accepts it).
#[repr(C)]
struct CtOpts {
    netns_id: i32,
    error: i32,
    l4proto: u8,
    dir: u8,
    ct_zone_id: u16,
    ct_zone_dir: u8,
    reserved: [u8; 3],
}

/// `BPF_F_CURRENT_NETNS`: look up in the netns of the skb's device.
const CURRENT_NETNS: i32 = -1;
const ENOENT: i32 = 2;

/// `Ok` when a packet to a local pod may bypass the kernel, `Err(reason)` otherwise.
#[inline(always)]
pub fn may_bypass(ctx: &TcContext, pkt: &Ipv4Packet, ingress: Ingress) -> Result<(), PassReason> {
    let proto = pkt.proto();
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Err(PassReason::UntrackedProto);
    }
    let tuple = tuple_of(ctx, pkt).ok_or(PassReason::Malformed)?;
    match lookup_dir(ctx, tuple.clone(), proto) {
        Lookup::Error => Err(PassReason::Nat),
        Lookup::Missing if proto == IPPROTO_UDP && ingress == Ingress::Uplink => Err(PassReason::NewFlow),
        Lookup::Missing => Ok(()),
        Lookup::Found(dir) => {
            if is_nated(ctx, tuple, proto, dir) {
                Err(PassReason::Nat)
            } else if proto == IPPROTO_TCP {
                Err(PassReason::Tracked)
            } else {
                Ok(())
            }
        }
    }
}

/// A pod's TCP packet to a non-local address that belongs to a flow the kernel has never
/// seen and that is not being opened by the pod (ACK set): the reply direction of a
/// connection whose inbound packets were redirected. A pod's own new connections (SYN)
/// always start on the kernel path, where masquerade and policy apply.
#[inline(always)]
pub fn is_reply_of_bypassed_flow(ctx: &TcContext, pkt: &Ipv4Packet) -> bool {
    if pkt.proto() != IPPROTO_TCP {
        return false;
    }
    match pkt.tcp_flags(ctx) {
        Some(flags) if flags & TCP_FLAG_ACK != 0 => {}
        _ => return false,
    }
    match tuple_of(ctx, pkt) {
        Some(tuple) => matches!(lookup_dir(ctx, tuple, IPPROTO_TCP), Lookup::Missing),
        None => false,
    }
}

#[inline(always)]
fn tuple_of(ctx: &TcContext, pkt: &Ipv4Packet) -> Option<SockTupleV4> {
    let [sport, dport] = pkt.ports(ctx)?;
    Some(SockTupleV4 { saddr: pkt.saddr(), daddr: pkt.daddr(), sport, dport })
}

/// NATed unless the entry that matched `tuple` in direction `dir` also holds its inverse
/// in the other direction.
#[inline(always)]
fn is_nated(ctx: &TcContext, tuple: SockTupleV4, proto: u8, dir: u8) -> bool {
    let inverse = SockTupleV4 { saddr: tuple.daddr, daddr: tuple.saddr, sport: tuple.dport, dport: tuple.sport };
    !matches!(lookup_dir(ctx, inverse, proto), Lookup::Found(inv_dir) if inv_dir != dir)
}

enum Lookup {
    Missing,
    /// Entry found; the tuple matched in this direction (0 original, 1 reply).
    Found(u8),
    Error,
}

/// One conntrack lookup; the reference it takes is released before returning.
#[inline(always)]
fn lookup_dir(ctx: &TcContext, mut tuple: SockTupleV4, proto: u8) -> Lookup {
    let mut opts = CtOpts { netns_id: CURRENT_NETNS, error: 0, l4proto: proto, dir: 0, ct_zone_id: 0, ct_zone_dir: 0, reserved: [0; 3] };
    let ct = ct_lookup(ctx, &mut tuple, &mut opts);
    if ct == 0 {
        return if opts.error == -ENOENT { Lookup::Missing } else { Lookup::Error };
    }
    let dir = opts.dir;
    ct_release(ct);
    Lookup::Found(dir)
}

/// `struct nf_conn *bpf_skb_ct_lookup(skb, tuple, tuple__sz, opts, opts__sz)`.
#[inline(always)]
fn ct_lookup(ctx: &TcContext, tuple: &mut SockTupleV4, opts: &mut CtOpts) -> u64 {
    let ret: u64;
    // SAFETY: the verifier checks the call against the kfunc's BTF prototype; the raw
    // instruction is `call` with src_reg=2 (kfunc) and the placeholder id (patched on load).
    unsafe {
        asm!(
            ".byte 0x85, 0x20, 0x00, 0x00",
            ".4byte {id}",
            id = const CT_LOOKUP_PLACEHOLDER,
            inlateout("r1") ctx.skb.skb as u64 => _,
            inlateout("r2") tuple as *mut SockTupleV4 as u64 => _,
            inlateout("r3") core::mem::size_of::<SockTupleV4>() as u64 => _,
            inlateout("r4") opts as *mut CtOpts as u64 => _,
            inlateout("r5") core::mem::size_of::<CtOpts>() as u64 => _,
            lateout("r0") ret,
        );
    }
    ret
}

/// `void bpf_ct_release(struct nf_conn *)`.
#[inline(always)]
fn ct_release(ct: u64) {
    // SAFETY: `ct` is the non-null reference returned by `ct_lookup`.
    unsafe {
        asm!(
            ".byte 0x85, 0x20, 0x00, 0x00",
            ".4byte {id}",
            id = const CT_RELEASE_PLACEHOLDER,
            inlateout("r1") ct => _,
            lateout("r0") _,
            lateout("r2") _,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
        );
    }
}
