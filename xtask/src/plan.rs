//! What a guest is asked to run: written by the host into the guest's shared results
//! directory, read by `xtask guest-run` inside the guest.
//!
//! A file rather than a command line because vng hands `--exec` to a shell: test-name
//! filters and paths would need quoting twice. One item per line, `key value`:
//!
//! ```text
//! prepare yes            # mount bpffs and load the datapath's modules first (guests only)
//! cwd /work/main/tests   # where each job runs (cargo runs integration tests in the package dir)
//! env VETH_ROUTE_BIN=/work/main/target/debug/veth-route
//! job plugin_seed /work/main/target/debug/deps/plugin_seed-0123abcd
//! arg --show-output      # for the job above
//! ```

use std::path::{Path, PathBuf};

use crate::process::Result;

/// The plan's file name inside the results directory.
pub const FILE: &str = "plan";

/// The variable naming the plugin the test bed drives (set in a plan's env; read back in
/// the guest, which keeps that binary in RAM).
pub const PLUGIN_VAR: &str = "VETH_ROUTE_BIN";

/// One program to run, with its arguments; its output lands in `<name>.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Short name (the test target), also the log's name.
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Everything the guest side needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Mount bpffs and modprobe the datapath's modules (a guest is a bare kernel; the host
    /// is left as it is).
    pub prepare: bool,
    /// Working directory of the jobs.
    pub cwd: PathBuf,
    /// Environment added to every job.
    pub env: Vec<(String, String)>,
    /// The jobs, run one after the other.
    pub jobs: Vec<Job>,
}

impl Plan {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = format!("prepare {}\ncwd {}\n", if self.prepare { "yes" } else { "no" }, self.cwd.display());
        for (k, v) in &self.env {
            s += &format!("env {k}={v}\n");
        }
        for job in &self.jobs {
            s += &format!("job {} {}\n", job.name, job.program.display());
            for a in &job.args {
                s += &format!("arg {a}\n");
            }
        }
        s
    }

    /// Parse the file's text.
    pub fn parse(text: &str) -> Result<Plan> {
        let mut plan = Plan::default();
        for (n, line) in text.lines().enumerate() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "prepare" => plan.prepare = value == "yes",
                "cwd" => plan.cwd = PathBuf::from(value),
                "env" => {
                    let (k, v) = value.split_once('=').ok_or_else(|| format!("plan line {}: env without `=`", n + 1))?;
                    plan.env.push((k.to_string(), v.to_string()));
                }
                "job" => {
                    let (name, program) =
                        value.split_once(' ').ok_or_else(|| format!("plan line {}: job needs a name and a program", n + 1))?;
                    plan.jobs.push(Job { name: name.to_string(), program: PathBuf::from(program), args: Vec::new() });
                }
                "arg" => {
                    plan.jobs.last_mut().ok_or_else(|| format!("plan line {}: arg before any job", n + 1))?.args.push(value.to_string())
                }
                "" => {}
                other => return Err(format!("plan line {}: unknown key {other:?}", n + 1).into()),
            }
        }
        Ok(plan)
    }

    /// Write it into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join(FILE), self.render())?;
        Ok(())
    }

    /// Read it from `dir`.
    pub fn read(dir: &Path) -> Result<Plan> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Plan::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_spaces_in_arguments() {
        let plan = Plan {
            prepare: true,
            cwd: "/w/tests".into(),
            env: vec![("VETH_ROUTE_BIN".into(), "/w/target/debug/veth-route".into())],
            jobs: vec![Job {
                name: "plugin_seed".into(),
                program: "/w/t/plugin_seed-1".into(),
                args: vec!["--show-output".into(), "a filter".into()],
            }],
        };
        assert_eq!(Plan::parse(&plan.render()).unwrap(), plan);
    }

    #[test]
    fn arg_before_job_is_an_error() {
        assert!(Plan::parse("arg x\n").is_err());
    }
}
