//! How long a test waits for a packet, a connection or a counter before it calls it lost.
//! These waits only turn a broken path into a failure instead of a hang; no test asserts on
//! speed.
//!
//! A TCG guest runs beside the host suite at low priority, and its clock keeps running while
//! the host gives it no CPU: ten guest seconds can pass with the guest barely scheduled.
//! The kernel matrix therefore stretches the waits there by `VETH_ROUTE_PATIENCE`.

use std::sync::OnceLock;
use std::time::Duration;

/// The variable the kernel matrix sets in guests: a whole factor for every wait below.
pub const SCALE_VAR: &str = "VETH_ROUTE_PATIENCE";

/// What a wait lasts on an unloaded machine.
const BASE: Duration = Duration::from_secs(10);

/// The wait for one exchange (a datagram, a connection, a reply, a counter settling).
pub fn io_timeout() -> Duration {
    static TIMEOUT: OnceLock<Duration> = OnceLock::new();
    *TIMEOUT.get_or_init(|| BASE * scale(std::env::var(SCALE_VAR).ok().as_deref()))
}

fn scale(value: Option<&str>) -> u32 {
    value.and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::scale;

    #[test]
    fn scale_is_a_positive_whole_factor_or_one() {
        assert_eq!(scale(None), 1);
        assert_eq!(scale(Some("6")), 6);
        for bad in ["0", "-2", "1.5", "x", ""] {
            assert_eq!(scale(Some(bad)), 1, "{bad:?}");
        }
    }
}
