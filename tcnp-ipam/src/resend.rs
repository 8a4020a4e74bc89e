//! Idempotent Neutron writes (the port's tags) whose answer was lost are sent again. A
//! second copy of such a write does no harm, while failing the CNI operation for it would
//! make the runtime tear the pod down and start over: a 504 from a proxy to the marking
//! write of a node's first ADD came back as code 11 in the reliability bench.

use std::future::Future;

/// Sends of one write, the first included.
const ATTEMPTS: u32 = 3;

/// Runs `write` until it is answered (or fails for a known reason), at most [`ATTEMPTS`]
/// times; `what` names it in the log. Only for writes that may be applied twice.
pub async fn idempotent<T, F, Fut>(what: &str, mut write: F) -> openstack::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = openstack::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match write().await {
            Err(e) if e.outcome_unknown() && attempt < ATTEMPTS => {
                log::warn!("{what}: {e}; sending it again (idempotent)");
                attempt += 1;
            }
            other => return other,
        }
    }
}
