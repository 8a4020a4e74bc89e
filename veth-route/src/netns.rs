//! Running netlink work inside a network namespace.
//!
//! A netlink socket belongs to the namespace of the thread that created it, and
//! `/proc/sys/net` shows the namespace of the thread that opens it. So pod-side work
//! runs on a fresh thread that first `setns()`es into the pod's namespace and only then
//! opens its own rtnetlink connection; the thread ends with the work, so no other code
//! ever runs in the wrong namespace.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use rtnetlink::Handle;

use crate::error::{Error, Result};

/// An open network namespace (keeps it alive while open).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Open the namespace at `path` (e.g. `/var/run/netns/x` or `/proc/<pid>/ns/net`).
    pub fn open(path: &Path) -> Result<NetNs> {
        let file = File::open(path).map_err(|source| Error::Netns { path: path.to_path_buf(), source })?;
        Ok(NetNs { file, path: path.to_path_buf() })
    }

    /// The namespace file, e.g. to move a link into it.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` with a netlink handle opened inside this namespace, on a dedicated thread.
    pub fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce(Handle) -> Fut + Send,
        Fut: Future<Output = Result<T>>,
    {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::Netns { path: self.path.clone(), source: std::io::Error::from_raw_os_error(e as i32) })?;
                with_netlink(f)
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Io { op: "netns worker thread".into(), source: std::io::Error::other("panicked") }))
        })
    }
}

/// Run `f` with a netlink handle in the calling thread's namespace.
pub fn with_netlink<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(Error::io("start netlink runtime"))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::io("open netlink socket"))?;
        tokio::spawn(conn);
        f(handle).await
    })
}

/// Run a future that opens its own sockets, on a current-thread runtime.
pub fn block_on<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(Error::io("start runtime"))?.block_on(fut)
}
