//! The control loop: cheap change checks, full passes on change or on the resync timer,
//! exponential backoff on Neutron faults, clean stop on SIGTERM/SIGINT.
//!
//! Neutron has no watch API (only notifications on the message bus, which a tenant cannot
//! consume), so "event-driven" here means: every poll interval, list the managed ports'
//! revisions and the routers' revisions (a few hundred bytes); run a full pass only when
//! that digest changed, and unconditionally every resync interval.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use crate::cloud::Cloud;
use crate::reconcile::Reconciler;
use crate::status::Status;

/// Loop timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Between change checks.
    pub poll: Duration,
    /// Between unconditional full passes.
    pub resync: Duration,
    /// First retry delay after a failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

/// Doubling backoff with a little jitter so that many controllers do not retry in step.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { next: min, min, max }
    }

    /// The delay to wait now; the following one is twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = Duration::from_millis(u64::from(std::process::id() ^ Instant::now().elapsed().subsec_nanos()) % 250);
        d + jitter.min(d / 4)
    }

    /// Back to `min` after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Runs until SIGTERM or SIGINT.
pub async fn run<C: Cloud>(cloud: &C, mut rec: Reconciler, status: Arc<Mutex<Status>>, timing: Timing) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut backoff = Backoff::new(timing.min_backoff, timing.max_backoff);
    let mut last_fp: Option<u64> = None;
    let mut routers: Vec<String> = Vec::new();
    let mut last_full: Option<Instant> = None;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        status.lock().expect("status lock").beat();
        let resync_due = last_full.is_none_or(|t| t.elapsed() >= timing.resync);
        let step = async {
            // Taken before the pass: a change during the pass triggers the next one.
            let fp = cloud.fingerprint(&routers).await;
            if let (Ok(fp), false) = (&fp, resync_due) {
                if Some(*fp) == last_fp {
                    return None;
                }
            }
            if resync_due {
                rec.forget_learned_limits();
            }
            let started = Instant::now();
            let result = rec.run(cloud).await;
            Some((result, started.elapsed(), fp.ok()))
        };
        let outcome = tokio::select! {
            _ = term.recv() => { log::info!("SIGTERM during a pass; stopping (ledger tags precede routes, so an interrupted pass is safe)"); break }
            _ = int.recv() => break,
            o = step => o,
        };
        match outcome {
            None => wait = timing.poll,
            Some((Ok(report), took, fp)) => {
                status.lock().expect("status lock").success(&report, took);
                routers = report.router_ids.clone();
                // A digest read before the routers were known misses their revisions.
                last_fp = if fp.is_some() && last_full.is_some() { fp } else { None };
                last_full = Some(Instant::now());
                backoff.reset();
                wait = timing.poll;
            }
            Some((Err(e), took, _)) => {
                status.lock().expect("status lock").failure(&e, took);
                wait = backoff.next_delay();
                log::warn!("reconcile failed, no route changed because of it; retrying in {:.1}s: {e}", wait.as_secs_f64());
                last_fp = None;
            }
        }
    }
    log::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let d: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 8, 8]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 1);
    }
}
