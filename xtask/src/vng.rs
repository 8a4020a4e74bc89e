//! Booting a kernel with virtme-ng (`vng`): qemu with this machine's root file system shared
//! read-only over 9p (writable overlays on /etc, /tmp, /var ...), running one command inside.
//!
//! Settings that are facts of these machines (docs: shared kernels notes):
//! - `--disable-kvm`: /dev/kvm exists but guests hang with it; TCG boots 6.1 in ~15 s.
//! - `--force-9p`: virtiofsd is not there; vng would otherwise wait for it before falling back.
//! - `--verbose`: without it the command's output does not come back at all. It also turns
//!   the kernel log up to debug; `loglevel=4` turns it back to warnings, which keeps the
//!   console readable and the serial port (slow under TCG) quiet.
//! - `mitigations=off`: retpolines and friends cost far more under TCG than on hardware
//!   (a loop of 20 `ip -V` took 4.0 s with them, 2.3 s without); a throwaway test guest
//!   has nothing to protect.
//! - One guest at a time: with two cores, two TCG guests only slow each other down.
//! - `nice -n 19`: whatever runs beside a guest goes first (see `Boot::run`).

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::kernels::{cache_dir, GuestKernel};
use crate::process::{output, run, Result};

/// virtme-ng, pinned: its command line and guest init change between releases.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// Guest size: the tests run a few network namespaces, iperf3 and the plugin.
const MEMORY: &str = "4G";
const CPUS: &str = "2";

/// Beyond this a guest is taken as hung and killed. The datapath list takes 7-14 min on a
/// quiet machine; under `nice` beside a busy host the 6.1 guest has taken 22 min.
pub const TIMEOUT: Duration = Duration::from_secs(35 * 60);

fn venv_dir() -> PathBuf {
    cache_dir().join("vng-venv")
}

/// Create or repair the venv holding the pinned virtme-ng; a quick no-op when it matches.
pub fn install_venv() -> Result<()> {
    let venv = venv_dir();
    let pip = venv.join("bin/pip");
    if pip.exists() {
        let have = output(Command::new(&pip).args(["freeze", "--disable-pip-version-check"]))?;
        if have.lines().any(|l| l.trim() == VIRTME_NG) {
            return Ok(());
        }
        eprintln!("setup: {} lacks {VIRTME_NG}; updating it", venv.display());
    } else {
        eprintln!("setup: creating the virtme-ng venv in {}", venv.display());
        std::fs::create_dir_all(cache_dir())?;
        run(Command::new(crate::openstack::python()).args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&pip).args(["install", "-q", "--disable-pip-version-check", VIRTME_NG]))
}

/// One boot: `kernel` runs `command` with `shared` mounted read-write at the same path.
pub struct Boot<'a> {
    /// The kernel.
    pub kernel: &'a GuestKernel,
    /// The directory shared read-write (results, plan).
    pub shared: &'a Path,
    /// Program and arguments run inside (as root, in the shared file system).
    pub command: Vec<OsString>,
    /// Prefix of the console lines echoed here.
    pub label: &'a str,
}

/// How a boot ended, as far as the host can tell (the command's own result is in `shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// vng returned (whatever its exit code says).
    Returned,
    /// Killed after [`TIMEOUT`].
    TimedOut,
}

impl Boot<'_> {
    /// Boot, echo the console (without kernel messages below warnings, which `loglevel`
    /// already drops) prefixed with the label, keep all of it in `shared/console.log`.
    pub fn run(&self) -> Result<Ended> {
        // Lowest priority: a guest is batch work, and `cargo xtask test` runs the host
        // suite beside it, whose timeouts assume the CPU it asks for.
        let mut cmd = Command::new("nice");
        // `timeout` signals its whole process group, so qemu goes with vng.
        cmd.args(["-n", "19", "timeout", "--kill-after=30"]).arg(format!("{}", TIMEOUT.as_secs()));
        cmd.arg(venv_dir().join("bin/vng"));
        cmd.arg("--run").arg(&self.kernel.image);
        cmd.args(["--disable-kvm", "--force-9p", "--verbose", "--memory", MEMORY, "--cpus", CPUS]);
        cmd.args(["--append", "loglevel=4 mitigations=off"]);
        cmd.arg("--rwdir").arg(self.shared);
        cmd.arg("--cwd").arg("/");
        cmd.arg("--exec").arg(shell_words(&self.command));
        // vng finds virtme-run and its helpers on PATH.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![venv_dir().join("bin")];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs)?);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start vng: {e}"))?;
        let console =
            Arc::new(Console { log: Mutex::new(File::create(self.shared.join("console.log"))?), started: AtomicBool::new(false) });
        let echo = |stream: Box<dyn Read + Send>| {
            let console = Arc::clone(&console);
            let label = self.label.to_string();
            std::thread::spawn(move || console.copy(stream, &label))
        };
        let out = echo(Box::new(child.stdout.take().expect("piped")));
        let err = echo(Box::new(child.stderr.take().expect("piped")));
        let status = child.wait()?;
        let _ = out.join();
        let _ = err.join();
        // 124: `timeout` fired; 137: it had to SIGKILL after the grace period.
        Ok(if matches!(status.code(), Some(124) | Some(137)) { Ended::TimedOut } else { Ended::Returned })
    }
}

/// The console of one boot: everything goes to the log; a person sees the guest's own lines
/// and, once the command has started, the kernel's warnings. The boot's messages before
/// that are replayed by the early console whatever `loglevel` says, and stay in the log.
struct Console {
    log: Mutex<File>,
    started: AtomicBool,
}

impl Console {
    fn copy(&self, stream: Box<dyn Read + Send>, label: &str) {
        for line in BufReader::new(stream).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\r');
            if let Ok(mut f) = self.log.lock() {
                let _ = writeln!(f, "{text}");
            }
            let kernel = is_kernel_message(text);
            if !kernel && !is_boot_noise(text) {
                self.started.store(true, Ordering::Relaxed);
            }
            if !is_boot_noise(text) && (!kernel || self.started.load(Ordering::Relaxed)) {
                println!("{label} | {text}");
            }
        }
    }
}

/// `[   12.345678] ...`
fn is_kernel_message(line: &str) -> bool {
    line.strip_prefix('[').and_then(|r| r.split_once(']')).is_some_and(|(t, _)| {
        let t = t.trim();
        t.contains('.') && t.bytes().all(|c| c.is_ascii_digit() || c == b'.')
    })
}

/// The decompressor's and vng's own lines that say nothing about the run.
fn is_boot_noise(line: &str) -> bool {
    line.trim().is_empty()
        || ["Probing EDD", "Memory KASLR", "Poking KASLR", "virtme: waiting for virtiofsd", "virtme-run: failed to start virtiofsd"]
            .iter()
            .any(|p| line.starts_with(p))
}

/// vng hands `--exec` to a shell: quote every word.
fn shell_words(words: &[OsString]) -> String {
    words.iter().map(|w| format!("'{}'", w.to_string_lossy().replace('\'', "'\\''"))).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_messages_are_told_apart() {
        assert!(is_kernel_message("[   13.030801] reboot: Power down"));
        assert!(!is_kernel_message("[1] FUNC 'x'"));
        assert!(!is_kernel_message("running plugin_seed ..."));
    }

    #[test]
    fn exec_words_are_quoted() {
        assert_eq!(shell_words(&["/x/xtask".into(), "it's".into()]), "'/x/xtask' 'it'\\''s'");
    }
}
