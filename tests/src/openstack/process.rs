//! Service processes: each in its own process group, with a reaper that kills the groups
//! and removes the run directory when the test process dies without running `Drop`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use super::HarnessError;

/// A free TCP port on 127.0.0.1 (the listener is closed right away; ports are not reused quickly).
pub fn free_port() -> Result<u16, HarnessError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `cmd` in a new process group (session) with output appended to `log`.
pub fn spawn_group(cmd: &mut Command, log: &Path) -> Result<Child, HarnessError> {
    let out = File::options().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    // SAFETY: setsid is async-signal-safe and touches no parent state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn()?;
    Ok(child)
}

/// Sends `sig` to the process group `pgid` (ignores groups already gone).
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall on a process group we created.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// Whether any process of group `pgid` is still alive.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// Stops a process group: SIGTERM (uwsgi runs with --die-on-term), then SIGKILL after
/// `grace`. `leader`, when we are its parent, is waited for so it leaves no zombie.
pub fn stop_group(pgid: i32, mut leader: Option<&mut Child>, grace: Duration) {
    kill_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        let gone = match leader.as_deref_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => !group_alive(pgid),
        };
        if gone {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_group(pgid, libc::SIGKILL);
    if let Some(child) = leader {
        let _ = child.wait();
    }
}

/// A `sh` process that, when our end of its stdin closes (normal exit, panic=abort,
/// SIGKILL), kills the registered process groups and removes the run directory.
pub struct Reaper {
    stdin: ChildStdin,
    child: Child,
}

const REAPER_SH: &str = r#"trap '' INT HUP
pgs=""
while read -r cmd arg; do
  case "$cmd" in
    pg) pgs="$pgs $arg" ;;
    done) exit 0 ;;
  esac
done
for p in $pgs; do kill -TERM "-$p" 2>/dev/null; done
sleep 3
for p in $pgs; do kill -KILL "-$p" 2>/dev/null; done
rm -rf -- "$1"
"#;

impl Reaper {
    /// Starts a reaper responsible for `dir`.
    pub fn start(dir: &Path) -> Result<Self, HarnessError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(REAPER_SH).arg("reaper").arg(dir).stdin(Stdio::piped()).stdout(Stdio::null());
        // Its own session: a Ctrl-C to the test's process group must not kill it first.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().ok_or("reaper has no stdin")?;
        Ok(Self { stdin, child })
    }

    /// Registers a process group to kill.
    pub fn watch(&mut self, pgid: i32) -> Result<(), HarnessError> {
        writeln!(self.stdin, "pg {pgid}")?;
        Ok(())
    }

    /// Cleanup happened in-process: let the reaper exit without doing anything.
    pub fn dismiss(mut self) {
        let _ = writeln!(self.stdin, "done");
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

/// Waits until `GET path` on 127.0.0.1:`port` answers with a 2xx/3xx status, failing early
/// if `child` exits. Returns an error that includes the end of `log`.
pub fn wait_http(port: u16, path: &str, child: &mut Child, log: &Path, timeout: Duration) -> Result<(), HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(format!("service on port {port} exited ({status}) during startup:\n{}", tail(log)).into());
        }
        if http_ok(port, path) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("service on port {port} not ready after {timeout:?}:\n{}", tail(log)).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    matches!(&head[..10], [b'H', b'T', b'T', b'P', b'/', _, _, _, b' ', b'2' | b'3'])
}

/// The last lines of a log file, for error messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}
