//! An older Debian userland for the static-binary test: Debian 11 (bullseye, glibc 2.31,
//! older than the 2.34 a dynamic build here needs), bootstrapped once with `debootstrap
//! --variant=minbase` and kept as a tarball in `$VETH_ROUTE_CACHE/userland/`, which the
//! test unpacks into a temporary directory of its own and enters with chroot.

use std::path::PathBuf;
use std::process::Command;

use crate::process::{run, Result};

/// The suite and where it is served. bullseye's LTS ended in August 2026; the Debian
/// mirror still served it in December 2026, and the archive is where it moves next.
const SUITE: &str = "bullseye";
const MIRRORS: &[&str] = &["http://deb.debian.org/debian", "http://archive.debian.org/debian"];

/// The cached tarball (the test bed's `tests/tests/static_binaries.rs` reads this path).
pub fn tarball() -> PathBuf {
    crate::kernels::cache_dir().join("userland").join(format!("debian-11-{SUITE}-minbase.tar"))
}

/// Bootstrap and pack the userland unless the tarball is there. The tarball is renamed
/// into place last, so its presence means the whole step completed.
pub fn prepare() -> Result<()> {
    let tar = tarball();
    if tar.is_file() {
        return Ok(());
    }
    let dir = tar.parent().expect("the tarball has a directory").to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let scratch = dir.join(format!(".bootstrap-{}", std::process::id()));
    let result = bootstrap_and_pack(&scratch, &tar);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn bootstrap_and_pack(scratch: &std::path::Path, tar: &std::path::Path) -> Result<()> {
    let root = scratch.join("root");
    let mut failures = Vec::new();
    for mirror in MIRRORS {
        eprintln!("userland: debootstrap {SUITE} from {mirror} (about a minute)");
        let _ = std::fs::remove_dir_all(&root);
        match run(Command::new("debootstrap").args(["--variant=minbase", SUITE]).arg(&root).arg(mirror)) {
            Ok(()) => {
                let partial = scratch.join("userland.tar");
                run(Command::new("tar").arg("-C").arg(&root).args(["-cf"]).arg(&partial).arg("."))?;
                std::fs::rename(&partial, tar)?;
                return Ok(());
            }
            Err(e) => failures.push(format!("{mirror}: {e}")),
        }
    }
    Err(format!("no mirror serves Debian {SUITE}: {}", failures.join("; ")).into())
}
