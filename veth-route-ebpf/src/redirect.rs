//! Delivery: rewrite like a router would, then hand the packet to the pod's veth peer.

use aya_ebpf::{bindings::TC_ACT_REDIRECT, helpers::bpf_redirect_peer, programs::TcContext};
use veth_route_common::Endpoint;

use crate::{packet::Ipv4Packet, PassReason, Verdict};

/// Rewrite MACs and TTL, then `bpf_redirect_peer` into the pod behind `ep.ifindex`.
#[inline(always)]
pub fn deliver(_ctx: &TcContext, pkt: &Ipv4Packet, ep: &Endpoint) -> Verdict {
    rewrite_macs(pkt, ep);
    decrement_ttl(pkt);
    // SAFETY: plain helper call; flags must be 0.
    let rc = unsafe { bpf_redirect_peer(ep.ifindex, 0) };
    if rc == TC_ACT_REDIRECT as i64 {
        Verdict::Redirected
    } else {
        Verdict::Pass(PassReason::RedirectFailed)
    }
}

/// Before kernel 6.15 `bpf_redirect_peer` does not scrub the skb: the destination MAC must
/// be the pod's or `ip_rcv` in the pod drops the packet as PACKET_OTHERHOST.
#[inline(always)]
fn rewrite_macs(pkt: &Ipv4Packet, ep: &Endpoint) {
    // SAFETY: bounds checked in `Ipv4Packet::parse`.
    unsafe {
        (*pkt.eth).dst = ep.pod_mac;
        (*pkt.eth).src = ep.host_mac;
    }
}

/// TTL - 1 with the incremental checksum update of RFC 1141, as `ip_decrease_ttl` does:
/// the TTL is the high byte of its 16-bit word, so the sum grows by 0x0100.
#[inline(always)]
fn decrement_ttl(pkt: &Ipv4Packet) {
    // SAFETY: bounds checked in `Ipv4Packet::parse`.
    unsafe {
        let ip = &mut *pkt.ip;
        let mut check = ip.check as u32;
        check += (0x0100u16).to_be() as u32;
        ip.check = (check + (check >= 0xffff) as u32) as u16;
        ip.ttl -= 1;
    }
}
