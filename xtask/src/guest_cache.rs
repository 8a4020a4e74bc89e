//! Inside a guest: the programs the tests start hundreds of times, and the libraries they
//! load, copied into a tmpfs and bind-mounted over the originals.
//!
//! vng's initramfs mounts the root file system over 9p without a page cache (no `cache=`
//! option; a virtio 9p channel takes one mount only, so a cached second mount is not to
//! be had), and every exec read its program and libraries again through emulated virtio.
//! Measured under TCG on 6.12: the static plugin took about 470 ms to start from there and
//! 52 ms from a tmpfs; `ip` about 150 ms. The mounts live in the guest's own mount
//! namespace: the host's files are not touched.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::process::{output, run, Result};

/// What the test bed and the plugin run, by name on PATH (nsenter runs every command in a
/// namespace; iptables is one multi-call binary behind its names).
const PROGRAMS: &[&str] = &[
    "ip",
    "nsenter",
    "iptables",
    "iptables-restore",
    "ip6tables",
    "ip6tables-restore",
    "bpftool",
    "ss",
    "sysctl",
    "tc",
    "iperf3",
    "sockperf",
    "qperf",
    "socat",
];

/// Directories copied whole: the reference CNI plugins, and the iptables extensions that
/// iptables loads on demand.
const DIRS: &[&str] = &["/usr/lib/cni", "/usr/lib/x86_64-linux-gnu/xtables"];

/// The tmpfs.
const ROOT: &str = "/run/veth-route-hot";

/// Copy [`PROGRAMS`], `extra` (the plugin under test), their libraries and [`DIRS`] into a
/// tmpfs and mount each copy over its original. Missing programs are skipped (the tests
/// say what they lack).
pub fn cache(extra: &[&Path]) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(ROOT)?;
    mount(OsStr::new("veth-route-hot"), Path::new(ROOT), Some("tmpfs"), 0)?;
    let mut programs: BTreeSet<PathBuf> = PROGRAMS.iter().filter_map(|p| on_path(p)).collect();
    programs.extend(extra.iter().filter_map(|p| p.canonicalize().ok()));
    let mut files = programs.clone();
    files.extend(libraries(&programs));
    for (i, file) in files.iter().enumerate() {
        let copy = Path::new(ROOT).join(format!("{i}"));
        std::fs::copy(file, &copy).map_err(|e| format!("copying {} into {ROOT}: {e}", file.display()))?;
        bind(&copy, file)?;
    }
    let mut dirs = 0;
    for (i, dir) in DIRS.iter().map(Path::new).filter(|d| d.is_dir()).enumerate() {
        let copy = Path::new(ROOT).join(format!("dir{i}"));
        run(Command::new("cp").arg("-a").arg(dir).arg(&copy))?;
        bind(&copy, dir)?;
        dirs += 1;
    }
    println!("hot files: {} files and {dirs} directories in RAM ({} s)", files.len(), started.elapsed().as_secs());
    Ok(())
}

/// `name` resolved on PATH, symlinks followed (the copy goes over the real file).
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).and_then(|p| p.canonicalize().ok())
}

/// The shared libraries `programs` load, the dynamic loader included, from one `ldd` run
/// (each exec costs a lot here); none for static programs.
fn libraries(programs: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let Ok(listing) = output(Command::new("ldd").args(programs).stderr(Stdio::null())) else { return Vec::new() };
    parse_ldd(&listing).into_iter().filter_map(|p| p.canonicalize().ok()).collect()
}

/// Mount `copy` over `original` (a bind mount, guest-local).
fn bind(copy: &Path, original: &Path) -> Result<()> {
    mount(copy.as_os_str(), original, None, libc::MS_BIND)
}

/// mount(2) of `source` on `target`: of type `fstype`, or with `fstype` None a bind mount.
/// A syscall rather than `mount` runs: each exec costs a lot here, and there are dozens.
fn mount(source: &OsStr, target: &Path, fstype: Option<&str>, flags: libc::c_ulong) -> Result<()> {
    let cstr = |s: &[u8]| CString::new(s).map_err(|_| format!("NUL in mount argument {}", String::from_utf8_lossy(s)));
    let (src, dst) = (cstr(source.as_bytes())?, cstr(target.as_os_str().as_bytes())?);
    let fstype = fstype.map(|f| cstr(f.as_bytes())).transpose()?;
    // SAFETY: every pointer is null or points to a NUL-terminated string that lives until
    // the call returns; the kernel copies them and ignores the null type of a bind mount.
    let rc = unsafe {
        libc::mount(src.as_ptr(), dst.as_ptr(), fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()), flags, std::ptr::null())
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!("mount {} on {}: {err}", source.to_string_lossy(), target.display()).into());
    }
    Ok(())
}

/// The paths in `ldd` output: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`; `linux-vdso.so.1 (0x...)` has none.
fn parse_ldd(listing: &str) -> Vec<PathBuf> {
    listing
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=> ").map_or(l, |(_, p)| p);
            path.split_whitespace().next().filter(|p| p.starts_with('/')).map(PathBuf::from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_listings_give_the_library_paths() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f8b)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f8c)\n";
        assert_eq!(
            parse_ldd(listing),
            vec![PathBuf::from("/lib/x86_64-linux-gnu/libbpf.so.1"), PathBuf::from("/lib64/ld-linux-x86-64.so.2")]
        );
        assert_eq!(parse_ldd("\tnot a dynamic executable\n"), Vec::<PathBuf>::new());
    }
}
