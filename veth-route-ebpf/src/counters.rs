//! Per-CPU counters: every verdict is counted, then turned into a tc action.

use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT};
use veth_route_common::CounterSlot;

use crate::{maps::COUNTERS, DropReason, PassReason, Verdict};

/// Count `verdict` in `slot` and return the tc action it stands for.
#[inline(always)]
pub fn record(slot: CounterSlot, verdict: Verdict) -> i32 {
    if let Some(c) = COUNTERS.get_ptr_mut(slot as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        let c = unsafe { &mut *c };
        match verdict {
            Verdict::Redirected => c.redirected += 1,
            Verdict::RedirectedOut => c.redirected_out += 1,
            Verdict::Pass(r) => match r {
                PassReason::NotIpv4 => c.pass_not_ipv4 += 1,
                PassReason::Malformed => c.pass_malformed += 1,
                PassReason::IpOptions => c.pass_ip_options += 1,
                PassReason::Fragment => c.pass_fragment += 1,
                PassReason::Ttl => c.pass_ttl += 1,
                PassReason::NotLocal => c.pass_not_local += 1,
                PassReason::Nat => c.pass_nat += 1,
                PassReason::Tracked => c.pass_tracked += 1,
                PassReason::NewFlow => c.pass_new_flow += 1,
                PassReason::UntrackedProto => c.pass_untracked_proto += 1,
                PassReason::RedirectFailed => c.pass_redirect_failed += 1,
            },
            Verdict::Drop(DropReason::Spoofed) => c.drop_spoofed += 1,
        }
    }
    match verdict {
        Verdict::Redirected | Verdict::RedirectedOut => TC_ACT_REDIRECT as i32,
        Verdict::Pass(_) => TC_ACT_OK as i32,
        Verdict::Drop(_) => TC_ACT_SHOT as i32,
    }
}
