//! Per-CPU counters: every verdict is counted, then turned into a tc action.

use aya_ebpf::bindings::{TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC};
use veth_route_common::{CounterSlot, Counters};

use crate::{flows::Observed, maps::COUNTERS, DropReason, PassReason, Verdict};

/// Count `verdict` in `slot` and return the tc action it stands for. A pass is
/// `TC_ACT_UNSPEC`: TCX then runs the next program and the classic tc filters (e.g. the
/// `bandwidth` plugin's), as cls_bpf does with the next filter; `TC_ACT_OK` would end there.
#[inline(always)]
pub fn record(slot: CounterSlot, verdict: Verdict) -> i32 {
    with_slot(slot, |c| match verdict {
        Verdict::Redirected => c.redirected += 1,
        Verdict::RedirectedOut => c.redirected_out += 1,
        Verdict::Pass(r) => match r {
            PassReason::NotIp => c.pass_not_ip += 1,
            PassReason::Ipv6 => c.pass_ipv6 += 1,
            PassReason::Malformed => c.pass_malformed += 1,
            PassReason::IpOptions => c.pass_ip_options += 1,
            PassReason::Fragment => c.pass_fragment += 1,
            PassReason::Ttl => c.pass_ttl += 1,
            PassReason::NotLocal => c.pass_not_local += 1,
            PassReason::NewFlow => c.pass_new_flow += 1,
            PassReason::KernelFlow => c.pass_kernel_flow += 1,
            PassReason::UntrackedProto => c.pass_untracked_proto += 1,
            PassReason::RedirectFailed => c.pass_redirect_failed += 1,
        },
        Verdict::Drop(r) => match r {
            DropReason::Spoofed => c.drop_spoofed += 1,
            DropReason::Ipv6 => c.drop_ipv6 += 1,
            DropReason::Malformed => c.drop_malformed += 1,
        },
    });
    match verdict {
        Verdict::Redirected | Verdict::RedirectedOut => TC_ACT_REDIRECT as i32,
        Verdict::Pass(_) => TC_ACT_UNSPEC,
        Verdict::Drop(_) => TC_ACT_SHOT as i32,
    }
}

/// Count what an egress program concluded about a flow.
#[inline(always)]
pub fn observed(slot: CounterSlot, what: Observed) {
    match what {
        Observed::Nothing => {}
        Observed::Verified => with_slot(slot, |c| c.flows_verified += 1),
        Observed::Demoted => with_slot(slot, |c| c.flows_demoted += 1),
    }
}

#[inline(always)]
fn with_slot(slot: CounterSlot, f: impl FnOnce(&mut Counters)) {
    if let Some(c) = COUNTERS.get_ptr_mut(slot as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        f(unsafe { &mut *c });
    }
}
