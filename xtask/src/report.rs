//! Reading a kernel's results directory into a verdict, and the final summary.
//!
//! The verdict comes from the status files, never from the console: a job passed only if it
//! exited 0, a kernel passed only if every planned job did and the guest reached `done`.
//! From each test log come the libtest counts, the failed tests and the
//! `veth-route-test: not applicable:` lines, so a test that did not apply is listed, not
//! silently counted as passed.

use std::path::{Path, PathBuf};

use crate::guest_runner::{CAPABILITIES, DONE};
use crate::plan::Plan;

/// Printed by `testbed::kernel::not_applicable` (tests/src/kernel.rs); keep in step.
pub const NOT_APPLICABLE_MARKER: &str = "veth-route-test: not applicable:";

/// One job's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobReport {
    /// Job (test target) name.
    pub name: String,
    /// Exit code; None when the guest died before the job ended.
    pub exit: Option<i32>,
    /// Wall-clock seconds in the guest.
    pub seconds: u64,
    /// Tests passed.
    pub passed: usize,
    /// Tests failed (by name).
    pub failed: Vec<String>,
    /// Not-applicable lines (the text after the marker).
    pub not_applicable: Vec<String>,
    /// The log has libtest's `test result:` line (a benchmark has none).
    pub libtest: bool,
}

impl JobReport {
    /// Exited 0.
    pub fn ok(&self) -> bool {
        self.exit == Some(0)
    }
}

/// One kernel's result.
#[derive(Debug, Clone)]
pub struct KernelReport {
    /// `host`, or the guest kernel's release.
    pub label: String,
    /// The capabilities line, if the run got that far.
    pub capabilities: Option<String>,
    /// Per job, in plan order.
    pub jobs: Vec<JobReport>,
    /// Why the run as a whole is broken (guest died, timed out, could not start).
    pub problem: Option<String>,
    /// What else the summary must say (a first boot that died, and the second that ran on).
    pub notes: Vec<String>,
    /// Wall-clock seconds including boot.
    pub seconds: u64,
    /// Where the logs are.
    pub dir: PathBuf,
}

impl KernelReport {
    /// Every job passed and nothing went wrong around them.
    pub fn ok(&self) -> bool {
        self.problem.is_none() && self.jobs.iter().all(JobReport::ok)
    }

    /// A kernel that never ran its plan (e.g. the package could not be fetched).
    pub fn broken(label: String, problem: String, dir: PathBuf) -> KernelReport {
        KernelReport { label, capabilities: None, jobs: Vec::new(), problem: Some(problem), notes: Vec::new(), seconds: 0, dir }
    }

    /// Read `dir` after the run of `plan`.
    pub fn read(label: String, plan: &Plan, dir: &Path, seconds: u64) -> KernelReport {
        let capabilities = std::fs::read_to_string(dir.join(CAPABILITIES)).ok().and_then(|s| s.lines().nth(1).map(str::to_string));
        let jobs: Vec<JobReport> = plan.jobs.iter().map(|j| read_job(dir, &j.name)).collect();
        let problem = (!dir.join(DONE).exists()).then(|| {
            let unfinished: Vec<&str> = jobs.iter().filter(|j| j.exit.is_none()).map(|j| j.name.as_str()).collect();
            format!(
                "the guest stopped before finishing (kernel panic, OOM or timeout; see console.log); not run to the end: {}",
                unfinished.join(", ")
            )
        });
        let problem = problem.or_else(|| nothing_ran(&jobs));
        KernelReport { label, capabilities, jobs, problem, notes: Vec::new(), seconds, dir: dir.to_path_buf() }
    }

    /// The failure sections of the failed jobs' logs, for printing right after the run.
    pub fn failure_details(&self) -> String {
        let mut s = String::new();
        if self.problem.is_some() {
            let console = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
            let lines: Vec<&str> = console.lines().collect();
            s +=
                &format!("---- last lines of the console of {} ----\n{}\n", self.label, lines[lines.len().saturating_sub(40)..].join("\n"));
        }
        for job in self.jobs.iter().filter(|j| j.exit.is_some_and(|c| c != 0)) {
            let log = std::fs::read_to_string(self.dir.join(format!("{}.log", job.name))).unwrap_or_default();
            s +=
                &format!("---- {} on {} ({}.log) ----\n{}\n", job.name, self.label, self.dir.join(&job.name).display(), failure_part(&log));
        }
        s
    }

    /// The summary block.
    pub fn summary(&self) -> String {
        let passed: usize = self.jobs.iter().map(|j| j.passed).sum();
        let failed: usize = self.jobs.iter().map(|j| j.failed.len()).sum();
        let na: usize = self.jobs.iter().map(|j| j.not_applicable.len()).sum();
        let counts = if self.jobs.iter().any(|j| j.libtest) {
            format!("{passed} passed, {failed} failed, {na} not applicable  ")
        } else {
            String::new()
        };
        let mut s = format!("{:<28} {:<6}  {counts}({} s)\n", self.label, if self.ok() { "ok" } else { "FAILED" }, self.seconds);
        if let Some(c) = &self.capabilities {
            s += &format!("    {c}\n");
        }
        if let Some(p) = &self.problem {
            s += &format!("    {p}\n");
        }
        for n in &self.notes {
            s += &format!("    note: {n}\n");
        }
        for job in &self.jobs {
            match job.exit {
                Some(0) => {}
                Some(code) if job.failed.is_empty() => {
                    s += &format!("    {}: exit {code} with no failed test (crashed? see its log)\n", job.name)
                }
                Some(_) => s += &format!("    {} failed: {}\n", job.name, job.failed.join(", ")),
                None => {}
            }
            for line in &job.not_applicable {
                s += &format!("    not applicable: {line}\n");
            }
        }
        s += &format!("    logs: {}\n", self.dir.display());
        s
    }
}

fn read_job(dir: &Path, name: &str) -> JobReport {
    let status = std::fs::read_to_string(dir.join(format!("{name}.status"))).unwrap_or_default();
    let mut words = status.split_whitespace();
    let mut report = JobReport { name: name.to_string(), ..JobReport::default() };
    while let (Some(key), Some(value)) = (words.next(), words.next()) {
        match key {
            "exit" => report.exit = value.parse().ok(),
            "seconds" => report.seconds = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    parse_log(&log, &mut report);
    report
}

/// A run of test executables in which no test ran at all is not a pass: a filter that names
/// a test target instead of tests (`-- plugin_seed`) matches nothing, and every job exits 0.
fn nothing_ran(jobs: &[JobReport]) -> Option<String> {
    let ran: usize = jobs.iter().map(|j| j.passed + j.failed.len()).sum();
    (jobs.iter().any(|j| j.libtest) && ran == 0)
        .then(|| "no test ran: the filter matched no test name (filters name tests, not test targets)".to_string())
}

/// libtest's closing lines: `test result: ... N passed; M failed; ...` for the counts and
/// the last `failures:` list for the names (robust even when a plugin's own stderr breaks
/// up the `test x ... ok` lines), plus the not-applicable markers.
fn parse_log(log: &str, report: &mut JobReport) {
    let lines: Vec<&str> = log.lines().collect();
    for line in &lines {
        if let Some(counts) = line.strip_prefix("test result: ") {
            report.libtest = true;
            for part in counts.split(['.', ';']) {
                if let Some(n) = part.trim().strip_suffix(" passed") {
                    report.passed += n.trim().parse::<usize>().unwrap_or(0);
                }
            }
        }
        if let Some((_, text)) = line.split_once(NOT_APPLICABLE_MARKER) {
            let text = format!("{}: {}", report.name, text.trim());
            if !report.not_applicable.contains(&text) {
                report.not_applicable.push(text);
            }
        }
    }
    if let Some(start) = lines.iter().rposition(|l| *l == "failures:") {
        report.failed = lines[start + 1..].iter().take_while(|l| l.starts_with("    ")).map(|l| l.trim().to_string()).collect();
    }
}

/// From libtest's `failures:` section on (the panics and the list), or the whole log when a
/// program died without one.
fn failure_part(log: &str) -> &str {
    log.find("\nfailures:\n").map(|i| &log[i + 1..]).unwrap_or(log).trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\nrunning 3 tests\ntest a ... ok\ntest b ... FAILED\ntest c ... ok\n\nsuccesses:\n\n---- c stdout ----\nveth-route-test: not applicable: c: no dummy (kernel 6.18)\n\nfailures:\n\n---- b stdout ----\nthread 'b' panicked\n\nfailures:\n    b\n\ntest result: FAILED. 2 passed; 1 failed;\n";

    #[test]
    fn log_counts_failures_and_markers() {
        let mut r = JobReport { name: "t".into(), ..JobReport::default() };
        parse_log(LOG, &mut r);
        assert_eq!(r.passed, 2);
        assert_eq!(r.failed, vec!["b".to_string()]);
        assert_eq!(r.not_applicable, vec!["t: c: no dummy (kernel 6.18)".to_string()]);
        assert!(failure_part(LOG).starts_with("failures:\n\n---- b stdout"));
    }

    #[test]
    fn a_run_in_which_no_test_ran_is_a_problem() {
        let mut empty = JobReport { name: "plugin_seed".into(), exit: Some(0), ..JobReport::default() };
        parse_log("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out;\n", &mut empty);
        assert!(empty.libtest && empty.ok());
        assert!(nothing_ran(std::slice::from_ref(&empty)).is_some());
        let mut some = JobReport { name: "fastpath_traffic".into(), exit: Some(0), ..JobReport::default() };
        parse_log(LOG, &mut some);
        assert_eq!(nothing_ran(&[empty, some]), None);
    }
}
