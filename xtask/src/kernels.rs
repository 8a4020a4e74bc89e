//! Which kernels the kernel matrix boots, and getting each one ready on this machine.
//!
//! A kernel is named on the command line as `host` (the running kernel, no guest), a short
//! version (`6.1`, `6.12`: the newest Debian 12 `linux-image-*-amd64-unsigned` package of
//! that line in apt), a package name, or a `.deb` file. Packages are fetched with
//! `apt-get download` into `$VETH_ROUTE_CACHE/kernels` and unpacked once: the image is kept
//! in the cache, the modules go to `/lib/modules/<release>` and are `depmod`-ed. A second run
//! finds both and downloads nothing.
//!
//! Why `/lib/modules` and not the cache: the guest sees this machine's root file system, but
//! virtme-ng mounts tmpfs over `/var/cache` (and `/var/tmp`, `/var/log`) inside it, so modules
//! kept there are invisible to `modprobe` in the guest. vng looks for `lib/modules` next to
//! the image first and falls back to the root's `/lib/modules`, so the cached image must not
//! sit below a `lib/modules` of its own either.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{output, run, Result};

/// The kernels `cargo xtask test` runs the datapath tests on, besides the host suite: what
/// OpenStack VMs on Debian 12 boot (6.1), and the backports/security kernel (6.12, the first
/// Debian kernel with TCX).
pub const DEFAULT_GUESTS: &[&str] = &["6.1", "6.12"];

/// A kernel of the matrix, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// The running kernel: the tests run directly on this machine, no guest.
    Host,
    /// A Debian kernel package (already resolved to its full name).
    Package(String),
    /// A kernel `.deb` file given by path.
    DebFile(PathBuf),
}

impl KernelChoice {
    /// Parse a `--kernel` value. Short versions are resolved against apt here, so a typo
    /// fails before anything is built.
    pub fn parse(spec: &str) -> Result<KernelChoice> {
        if spec == "host" {
            return Ok(KernelChoice::Host);
        }
        if spec.ends_with(".deb") || spec.contains('/') {
            let path = std::fs::canonicalize(spec).map_err(|e| format!("kernel package {spec}: {e}"))?;
            return Ok(KernelChoice::DebFile(path));
        }
        if spec.starts_with("linux-image-") {
            return Ok(KernelChoice::Package(spec.to_string()));
        }
        if is_short_version(spec) {
            return Ok(KernelChoice::Package(newest_package(spec)?));
        }
        Err(format!(
            "--kernel {spec}: expected `host`, a version such as 6.1 or 6.12, a package name \
             (linux-image-...-amd64-unsigned) or a path to a kernel .deb"
        )
        .into())
    }

    /// How reports name it before the release is known.
    pub fn label(&self) -> String {
        match self {
            KernelChoice::Host => "host".into(),
            KernelChoice::Package(name) => name.clone(),
            KernelChoice::DebFile(path) => path.display().to_string(),
        }
    }
}

/// A Debian kernel unpacked and ready to boot.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    /// `uname -r` inside the guest, e.g. `6.1.0-57-amd64`.
    pub release: String,
    /// The compressed image vng boots.
    pub image: PathBuf,
}

/// Root of cached, machine-local things (same variable as the OpenStack venv).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("VETH_ROUTE_CACHE").map(PathBuf::from).unwrap_or_else(|| "/var/cache/veth-route".into())
}

fn kernels_dir() -> PathBuf {
    cache_dir().join("kernels")
}

/// Download (if needed) and unpack (if needed) the kernel of `choice`.
pub fn prepare(choice: &KernelChoice) -> Result<GuestKernel> {
    let deb = match choice {
        KernelChoice::Host => return Err("the host kernel needs no guest".into()),
        KernelChoice::Package(name) => download(name)?,
        KernelChoice::DebFile(path) => path.clone(),
    };
    install(&deb)
}

/// Fetch and unpack the kernels `cargo xtask test` boots by default.
pub fn prepare_defaults() -> Result<()> {
    for spec in DEFAULT_GUESTS {
        let kernel = prepare(&KernelChoice::parse(spec)?)?;
        eprintln!("kernels: {spec} is {} ({})", kernel.release, kernel.image.display());
    }
    Ok(())
}

/// `6.1`, `6.12`: digits, one dot, digits.
fn is_short_version(spec: &str) -> bool {
    let mut parts = spec.split('.');
    let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else { return false };
    [a, b].iter().all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// The sort key of a generic amd64 kernel package of the `short` line, or None for other
/// flavours (`cloud`, `rt`), other lines and signed or meta packages. Debian 12 spells the
/// 6.1 line `linux-image-6.1.0-<abi>-amd64-unsigned` and the 6.12 line
/// `linux-image-6.12.<n>+deb12-amd64-unsigned`.
fn package_key(name: &str, short: &str) -> Option<Vec<u32>> {
    let version = name.strip_prefix("linux-image-")?.strip_suffix("-amd64-unsigned")?;
    let rest = version.strip_prefix(short)?.strip_prefix('.')?;
    let rest = match rest.split_once("+deb") {
        Some((numbers, suite)) if suite.bytes().all(|c| c.is_ascii_digit()) => numbers,
        Some(_) => return None,
        None => rest,
    };
    if rest.is_empty() || !rest.bytes().all(|c| c.is_ascii_digit() || c == b'.' || c == b'-') {
        return None;
    }
    Some(rest.split(['.', '-']).map(|n| n.parse().unwrap_or(0)).collect())
}

/// The newest generic amd64 kernel package of the `short` line that apt knows.
fn newest_package(short: &str) -> Result<String> {
    let pick = |listing: &str| {
        listing.lines().filter_map(|l| l.split_whitespace().next()).filter_map(|n| Some((package_key(n, short)?, n.to_string()))).max()
    };
    let search =
        || output(Command::new("apt-cache").args(["search", "--names-only", &format!("^linux-image-{}[.-]", short.replace('.', "\\."))]));
    if let Some((_, name)) = pick(&search()?) {
        return Ok(name);
    }
    // A fresh machine may have no package lists yet (or old ones); refresh once and retry.
    eprintln!("kernels: no linux-image-{short}* package in apt's lists; running apt-get update");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    pick(&search()?).map(|(_, name)| name).ok_or_else(|| {
        format!("no Debian package linux-image-{short}.*-amd64-unsigned in apt (bookworm has 6.1 in main and 6.12 in bookworm-security)")
            .into()
    })
}

/// The version apt would download for `package`.
fn candidate_version(package: &str) -> Result<String> {
    let policy = output(Command::new("apt-cache").args(["policy", package]))?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:").map(str::trim))
        .filter(|v| *v != "(none)")
        .map(str::to_string)
        .ok_or_else(|| format!("apt has no installable version of {package}").into())
}

/// `apt-get download` the package into the cache unless the candidate's .deb is there;
/// older .debs of the same package are removed so the cache does not grow per update.
fn download(package: &str) -> Result<PathBuf> {
    let version = candidate_version(package)?;
    let dir = kernels_dir();
    std::fs::create_dir_all(&dir)?;
    // apt spells an epoch's colon as %3a in file names.
    let file = dir.join(format!("{package}_{}_amd64.deb", version.replace(':', "%3a")));
    if !file.is_file() {
        eprintln!("kernels: downloading {package} {version}");
        // The cache is root's; apt's sandbox user could not write there.
        let fetched = run(Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
            .arg(format!("{package}={version}"))
            .current_dir(&dir));
        if fetched.is_err() || !file.is_file() {
            // Offline, or the archive moved on: an older build of the same package still
            // tests the same kernel line, and is better than no guest.
            if let Some(older) = cached_debs(&dir, package)?.pop() {
                eprintln!("kernels: cannot download {package} {version}; using the cached {}", older.display());
                return Ok(older);
            }
            fetched?;
            return Err(format!("apt-get download {package} did not produce {}", file.display()).into());
        }
    }
    for older in cached_debs(&dir, package)?.into_iter().filter(|p| *p != file) {
        std::fs::remove_file(&older)?;
    }
    Ok(file)
}

/// The cached .debs of `package`, sorted by name.
fn cached_debs(dir: &Path, package: &str) -> Result<Vec<PathBuf>> {
    let prefix = format!("{package}_");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb")))
        .collect();
    debs.sort();
    Ok(debs)
}

/// Unpack `deb` unless done before: the image into `kernels/boot/<deb name>/`, the modules
/// into `/lib/modules/<release>` with a fresh `depmod`. The image is moved in last, so its
/// presence means the whole step completed.
fn install(deb: &Path) -> Result<GuestKernel> {
    let stem = deb.file_stem().and_then(|s| s.to_str()).ok_or_else(|| format!("odd package file name {}", deb.display()))?;
    let boot = kernels_dir().join("boot").join(stem);
    if let Some(kernel) = installed(&boot)? {
        return Ok(kernel);
    }
    eprintln!("kernels: unpacking {}", deb.display());
    let scratch = std::env::temp_dir().join(format!("veth-route-kernel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = unpack(deb, &scratch, &boot);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// The kernel in `boot` if a previous run completed it and its modules are still there.
fn installed(boot: &Path) -> Result<Option<GuestKernel>> {
    let Ok(entries) = std::fs::read_dir(boot) else { return Ok(None) };
    for entry in entries {
        let image = entry?.path();
        let Some(release) = image.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("vmlinuz-")) else { continue };
        if modules_dir(release).join("modules.dep.bin").is_file() {
            return Ok(Some(GuestKernel { release: release.to_string(), image }));
        }
    }
    Ok(None)
}

fn modules_dir(release: &str) -> PathBuf {
    Path::new("/lib/modules").join(release)
}

fn unpack(deb: &Path, scratch: &Path, boot: &Path) -> Result<GuestKernel> {
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(scratch))?;
    let image = std::fs::read_dir(scratch.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .ok_or_else(|| format!("{} holds no boot/vmlinuz-*: not a kernel image package", deb.display()))?;
    let name = image.file_name().and_then(|n| n.to_str()).expect("matched above").to_string();
    let release = name.strip_prefix("vmlinuz-").expect("matched above").to_string();
    // Newer packages ship usr/lib/modules; bookworm's ship lib/modules.
    let shipped = [scratch.join("lib/modules").join(&release), scratch.join("usr/lib/modules").join(&release)]
        .into_iter()
        .find(|p| p.is_dir())
        .ok_or_else(|| format!("{} ships no modules for {release}", deb.display()))?;
    // /lib may be a symlink to usr/lib, and /lib/modules may not exist on a machine that
    // never had a kernel package: create it, or `cp` would land one level too high.
    std::fs::create_dir_all("/lib/modules")?;
    let target = modules_dir(&release);
    let _ = std::fs::remove_dir_all(&target);
    run(Command::new("cp").arg("-a").arg(&shipped).arg(&target))?;
    run(Command::new("depmod").arg(&release))?;
    std::fs::create_dir_all(boot)?;
    let partial = boot.join(format!(".{name}.partial"));
    std::fs::copy(&image, &partial)?;
    let kept = boot.join(&name);
    std::fs::rename(&partial, &kept)?;
    forget_other_builds(boot, &name)?;
    Ok(GuestKernel { release, image: kept })
}

/// Another package build with the same release (a rebuild keeps the ABI name) had its
/// modules overwritten just now: drop its image, so it is unpacked again if ever asked for.
fn forget_other_builds(boot: &Path, image_name: &str) -> Result<()> {
    let Some(parent) = boot.parent() else { return Ok(()) };
    for entry in std::fs::read_dir(parent)? {
        let dir = entry?.path();
        if dir != boot && dir.join(image_name).exists() {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_versions() {
        assert!(is_short_version("6.1"));
        assert!(is_short_version("6.12"));
        assert!(!is_short_version("6"));
        assert!(!is_short_version("6.1.0"));
        assert!(!is_short_version("host"));
    }

    #[test]
    fn package_keys_pick_the_generic_flavour_of_one_line() {
        assert_eq!(package_key("linux-image-6.1.0-57-amd64-unsigned", "6.1"), Some(vec![0, 57]));
        assert_eq!(package_key("linux-image-6.12.117+deb12-amd64-unsigned", "6.12"), Some(vec![117]));
        assert_eq!(package_key("linux-image-6.1.0-57-cloud-amd64-unsigned", "6.1"), None);
        assert_eq!(package_key("linux-image-6.12.117+deb12-rt-amd64-unsigned", "6.12"), None);
        assert_eq!(package_key("linux-image-6.12.117+deb12-amd64-unsigned", "6.1"), None);
        assert_eq!(package_key("linux-image-6.1.0-57-amd64", "6.1"), None);
        assert!(package_key("linux-image-6.1.0-57-amd64-unsigned", "6.1") > package_key("linux-image-6.1.0-9-amd64-unsigned", "6.1"));
    }
}
