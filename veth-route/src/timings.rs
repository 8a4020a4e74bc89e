//! Wall-clock time per stage of one verb, logged at `logLevel: debug` when the verb ends:
//! where ADD's and DEL's milliseconds go (`cargo xtask bench` times only whole processes).

use std::time::{Duration, Instant};

/// The stages of one verb so far; logs them (and the total) when dropped.
pub struct Stages {
    what: String,
    start: Instant,
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Stages {
    /// Start timing `what` (e.g. "ADD <container id>").
    pub fn start(what: impl Into<String>) -> Self {
        let now = Instant::now();
        Self { what: what.into(), start: now, last: now, done: Vec::new() }
    }

    /// The stage `name` ended now: it took the time since the previous one ended.
    pub fn end(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now - self.last));
        self.last = now;
    }

    /// The stages and total, as logged.
    fn render(&self) -> String {
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
        let stages: Vec<String> = self.done.iter().map(|(name, d)| format!("{name} {}", ms(*d))).collect();
        format!("{} timings (ms): {}; total {}", self.what, stages.join(", "), ms(self.last - self.start))
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        if log::log_enabled!(log::Level::Debug) {
            log::debug!("{}", self.render());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_add_up_to_the_total() {
        let mut s = Stages::start("ADD c1");
        s.end("veth");
        s.end("ipam");
        let line = s.render();
        assert!(line.starts_with("ADD c1 timings (ms): veth "), "{line}");
        assert!(line.contains(", ipam ") && line.contains("; total "), "{line}");
        assert_eq!(s.done.iter().map(|(_, d)| *d).sum::<Duration>(), s.last - s.start);
    }
}
