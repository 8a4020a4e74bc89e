//! `fastPath: auto`: ask the kernel's conntrack whether a flow is NATed before bypassing
//! netfilter, using the `bpf_skb_ct_lookup` / `bpf_ct_release` kfuncs.
//!
//! aya-ebpf 0.2 / aya 0.14 cannot emit or relocate kfunc calls, so each call is one raw
//! `BPF_CALL` instruction with `src_reg = BPF_PSEUDO_KFUNC_CALL` and a placeholder `imm`
//! ([`veth_route_common::kfunc`]); the loader replaces the placeholder with the kfunc's
//! BTF id in the running kernel's vmlinux BTF before loading.
//!
//! Decision: a packet of tuple T may bypass netfilter when
//! - conntrack has no entry for T: the kernel never saw the flow, so no NAT binding exists
//!   (kube-proxy and portmap only DNAT virtual/host addresses, which miss the endpoint map
//!   and so take the kernel path, where conntrack records the binding); or
//! - the entry that holds T also holds its inverse in the other direction: a connection
//!   whose reply tuple is the exact inverse of its original tuple is not NATed.
//! Anything else (a reply of a DNATed Service connection, SNATed flows, lookup errors)
//! takes the kernel path. Protocols the lookup cannot key (ICMP...) take the kernel path.

use core::arch::asm;

use aya_ebpf::programs::TcContext;
use veth_route_common::kfunc::{CT_LOOKUP_PLACEHOLDER, CT_RELEASE_PLACEHOLDER};

use crate::{
    packet::{Ipv4Packet, IPPROTO_TCP, IPPROTO_UDP},
    PassReason,
};

/// `struct bpf_sock_tuple`, IPv4 member; addresses and ports in network order.
#[repr(C)]
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

/// `Ok` when the flow may be redirected, `Err(reason)` when the kernel must see it.
#[inline(always)]
pub fn check_not_nated(ctx: &TcContext, pkt: &Ipv4Packet) -> Result<(), PassReason> {
    let proto = pkt.proto();
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Err(PassReason::UntrackedProto);
    }
    let [sport, dport] = pkt.ports(ctx).ok_or(PassReason::Malformed)?;
    let (saddr, daddr) = (pkt.saddr(), pkt.daddr());

    let dir = match lookup_dir(ctx, SockTupleV4 { saddr, daddr, sport, dport }, proto) {
        Lookup::Missing => return Ok(()),
        Lookup::Found(dir) => dir,
        Lookup::Error => return Err(PassReason::Nat),
    };
    match lookup_dir(ctx, SockTupleV4 { saddr: daddr, daddr: saddr, sport: dport, dport: sport }, proto) {
        Lookup::Found(inv_dir) if inv_dir != dir => Ok(()),
        _ => Err(PassReason::Nat),
    }
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
    let mut opts = CtOpts {
        netns_id: CURRENT_NETNS,
        error: 0,
        l4proto: proto,
        dir: 0,
        ct_zone_id: 0,
        ct_zone_dir: 0,
        reserved: [0; 3],
    };
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
