//! `fastPath: auto`: the datapath's own flow state, so the programs never need the kernel's
//! conntrack (whose kfuncs are unreachable where nf_conntrack is a module) to stay NAT-safe.
//!
//! Rule: the kernel routes the first packet of every flow, and a flow is bypassed only once
//! the kernel was SEEN to deliver it untranslated.
//! - An ingress program (`from_pod`, `from_uplink`) that has no verified state for a TCP/UDP
//!   packet records its tuple as PENDING and passes it: the kernel applies policy and NAT
//!   as for any routed packet.
//! - An egress program (`to_pod` on host veths, `to_uplink` on uplinks) that sees a PENDING
//!   tuple come out unchanged knows the kernel did not translate it (DNAT, SNAT and
//!   masquerade all change the tuple) and marks both directions VERIFIED. From then on the
//!   ingress programs redirect them.
//! - A translated flow never matches at egress (it comes out under another tuple), so it
//!   stays the kernel's in both directions and conntrack sees all of it: a Service backend's
//!   reply returns through reverse NAT.
//! - A VERIFIED tuple that the kernel delivers to a pod anyway was not sent by us (redirected
//!   packets skip the host veth's egress): the tuple was reused by a translated flow, so the
//!   state is removed. On an uplink, packets we redirected carry [`MARK_REDIRECTED`].
//! - A TCP SYN always starts over on the kernel path (the tuple may have been reused), and
//!   every packet of a verified flow that the programs cannot redirect is passed as PENDING,
//!   so it re-verifies instead of looking like a reuse.
//!
//! IPv4 and IPv6 flows live in maps of their own (`flows`, `flows6`), under the same rules.
//! State lives in LRU maps: an evicted flow falls back to the kernel path and re-verifies.

use aya_ebpf::programs::TcContext;
use veth_route_common::{FlowKey, FlowKey6, FlowState, FLOW_PENDING, FLOW_VERIFIED, MARK_REDIRECTED};

use crate::family::Family;
use crate::maps::{FLOWS, FLOWS6};
use crate::packet::{IPPROTO_TCP, TCP_FLAG_ACK, TCP_FLAG_SYN};

const PENDING: FlowState = FlowState { state: FLOW_PENDING, reserved: 0 };
const VERIFIED: FlowState = FlowState { state: FLOW_VERIFIED, reserved: 0 };

/// One direction of a flow, as a key of its family's flow map (`flows`, `flows6`).
pub trait Flow: Copy {
    fn proto(&self) -> u8;
    fn reversed(&self) -> Self;
    /// `FLOW_PENDING`, `FLOW_VERIFIED`, or `None` when the map has no entry.
    fn state(&self) -> Option<u32>;
    fn set(&self, state: FlowState);
    fn forget(&self);
}

/// `Flow` for a key type and its map: the two impls differ only in those.
macro_rules! flow_in {
    ($key:ty, $map:ident) => {
        impl Flow for $key {
            #[inline(always)]
            fn proto(&self) -> u8 {
                self.proto
            }
            #[inline(always)]
            fn reversed(&self) -> Self {
                <$key>::reversed(self)
            }
            #[inline(always)]
            fn state(&self) -> Option<u32> {
                // SAFETY: the state is copied out at once.
                unsafe { $map.get(self) }.map(|s| s.state)
            }
            #[inline(always)]
            fn set(&self, state: FlowState) {
                let _ = $map.insert(self, state, 0);
            }
            #[inline(always)]
            fn forget(&self) {
                let _ = $map.remove(self);
            }
        }
    };
}

flow_in!(FlowKey, FLOWS);
flow_in!(FlowKey6, FLOWS6);

/// Whether the flow an ICMP error is about is verified: then the error belongs on the path
/// the flow takes. The kernel's conntrack has not seen such a flow since its first packet
/// (its entry may have expired), so on the kernel path the error would be INVALID, and
/// kube-proxy's `--ctstate INVALID -j DROP` would swallow "fragmentation needed" (PMTUD).
#[inline(always)]
pub fn quoted_flow_verified<K: Flow>(quoted: &K) -> bool {
    matches!(quoted.state(), Some(FLOW_VERIFIED))
}

/// What the ingress programs know about a packet's flow.
pub enum Known {
    /// The kernel delivered this flow untranslated: redirect.
    Verified,
    /// First packet (or first after a SYN, eviction or demotion): now PENDING.
    New,
    /// Already PENDING: the kernel owns the flow (it translated it, or has not delivered it).
    Kernel,
}

/// Look up the packet's flow; anything not verified is left PENDING for the egress side.
#[inline(always)]
pub fn classify<P: Family>(ctx: &TcContext, pkt: &P, key: &P::Flow) -> Known {
    let state = key.state();
    let syn = key.proto() == IPPROTO_TCP && matches!(pkt.tcp_flags(ctx), Some(f) if f & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN);
    match state {
        Some(FLOW_VERIFIED) if !syn => Known::Verified,
        Some(FLOW_PENDING) => Known::Kernel,
        _ => {
            pending(key);
            Known::New
        }
    }
}

/// Hand a packet of `key` to the kernel such that the egress side re-verifies the flow
/// instead of taking it for a reused tuple.
#[inline(always)]
pub fn pending<K: Flow>(key: &K) {
    key.set(PENDING);
}

/// What an egress program concluded.
pub enum Observed {
    Nothing,
    Verified,
    Demoted,
}

/// The kernel delivered a packet of `key`; `ours` when the fast path itself redirected it.
#[inline(always)]
pub fn observe<K: Flow>(key: &K, ours: bool) -> Observed {
    match key.state() {
        Some(FLOW_PENDING) => {
            // Both directions: the reply enters through the other ingress program.
            key.reversed().set(VERIFIED);
            key.set(VERIFIED);
            Observed::Verified
        }
        Some(FLOW_VERIFIED) if !ours => {
            key.forget();
            key.reversed().forget();
            Observed::Demoted
        }
        _ => Observed::Nothing,
    }
}

/// Mark a packet that `route_out` redirects to an uplink.
#[inline(always)]
pub fn mark_redirected(ctx: &TcContext) {
    // SAFETY: reading a field of the context the kernel passed in.
    let mark = unsafe { (*ctx.skb.skb).mark };
    ctx.set_mark(mark | MARK_REDIRECTED);
}

/// Whether `to_uplink` sees a packet that `route_out` redirected; clears the mark bit so it
/// never leaks into the kernel's own use of the mark.
#[inline(always)]
pub fn take_redirected_mark(ctx: &TcContext) -> bool {
    // SAFETY: reading a field of the context the kernel passed in.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & MARK_REDIRECTED == 0 {
        return false;
    }
    ctx.set_mark(mark & !MARK_REDIRECTED);
    true
}
