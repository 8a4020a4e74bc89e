//! A small logger for plugins: one line per record to a file or stderr, never stdout
//! (stdout carries the CNI result).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

struct Logger {
    sink: Mutex<Sink>,
    prefix: String,
}

enum Sink {
    File(File),
    Stderr,
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!("{} {:<5} {}[{}] {}\n", timestamp(), r.level(), self.prefix, std::process::id(), r.args());
        if let Ok(mut sink) = self.sink.lock() {
            // Losing a log line must never fail the CNI operation.
            let _ = match &mut *sink {
                Sink::File(f) => f.write_all(line.as_bytes()),
                Sink::Stderr => std::io::stderr().write_all(line.as_bytes()),
            };
        }
    }

    fn flush(&self) {}
}

/// Install the logger once per process: append to `file` (mode 0600) or write to stderr.
/// Falls back to stderr when the file cannot be opened, and says so.
pub fn init(prefix: &str, file: Option<&Path>, level: LevelFilter) {
    let mut fallback = None;
    let sink = match file {
        Some(p) => match open_private(p) {
            Ok(f) => Sink::File(f),
            Err(e) => {
                fallback = Some(format!("cannot open log file {}: {e}; logging to stderr", p.display()));
                Sink::Stderr
            }
        },
        None => Sink::Stderr,
    };
    let logger = Box::leak(Box::new(Logger { sink: Mutex::new(sink), prefix: prefix.to_string() }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
    if let Some(msg) = fallback {
        log::warn!("{msg}");
    }
}

/// Open `path` for appending as a private regular file. A symlink at the path is refused
/// (O_NOFOLLOW), so nobody can point the root-run plugin's log at another file, and a file
/// that already exists with looser permissions is brought back to 0600: logs name pods,
/// addresses and networks.
fn open_private(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.permissions().mode() & 0o777 != 0o600 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// Parse a `logLevel` value (`off`, `error`, `warn`, `info`, `debug`, `trace`).
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    s.parse().ok()
}

/// UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` without a date crate.
fn timestamp() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, now.subsec_millis())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_log_file_is_private_and_never_a_symlink() {
        let dir = std::env::temp_dir().join(format!("cni-logging-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let loose = dir.join("loose.log");
        std::fs::write(&loose, "old\n").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::open_private(&loose).unwrap();
        assert_eq!(std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777, 0o600);
        let fresh = dir.join("fresh.log");
        super::open_private(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
        let target = dir.join("target");
        std::fs::write(&target, "").unwrap();
        let link = dir.join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(super::open_private(&link).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert!(super::open_private(&dir).is_err(), "a directory is not a log file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn levels() {
        assert_eq!(super::parse_level("debug"), Some(log::LevelFilter::Debug));
        assert_eq!(super::parse_level("loud"), None);
        assert_eq!(super::timestamp().len(), 24);
    }
}
