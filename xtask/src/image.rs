//! `cargo xtask image`: the node image of `deploy/Containerfile`, built with podman.
//!
//! The image is `FROM scratch`, so everything it holds is staged first into
//! `target/image/` (the build context): the static release binaries, the install script,
//! Debian's static busybox as its shell and the system CA bundle. No registry is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{run, workspace_root, Result};

/// The tag the manifests in deploy/ name.
pub const DEFAULT_TAG: &str = "ghcr.io/veth-route/veth-route:0.1.0";

/// What the context holds, from where (the binaries come from [`crate::suite::static_dir`]).
const STAGED: &[(&str, &str)] = &[("busybox", "/bin/busybox"), ("ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt")];

/// Build the static binaries, stage the context and `podman build` it as `tag`. podman's
/// own configuration applies (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF: the tests point
/// those at storage of their own).
pub fn image(tag: &str) -> Result<()> {
    crate::suite::build(true)?;
    let context = stage()?;
    run(Command::new("podman")
        .args(["build", "--pull=never", "-f"])
        .arg(workspace_root().join("deploy/Containerfile"))
        .args(["-t", tag])
        .arg(&context))?;
    eprintln!("image: {tag}");
    Ok(())
}

fn stage() -> Result<PathBuf> {
    let context = workspace_root().join("target/image");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context)?;
    let bins = crate::suite::static_dir();
    for name in crate::suite::NODE_BINARIES {
        copy(&bins.join(name), &context.join(name))?;
    }
    copy(&workspace_root().join("deploy/install-cni"), &context.join("install-cni"))?;
    for (name, from) in STAGED {
        copy(Path::new(from), &context.join(name)).map_err(|e| format!("{e} (`cargo xtask setup` installs busybox-static)"))?;
    }
    Ok(context)
}

/// Copy with the mode (std::fs::copy keeps permissions: the script stays executable).
fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).map_err(|e| format!("staging {}: {e}", from.display()))?;
    Ok(())
}
