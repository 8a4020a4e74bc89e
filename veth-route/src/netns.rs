//! Network namespaces and one invocation's netlink connections.
//!
//! A netlink socket belongs to the namespace of the thread that created it, and
//! `/proc/sys/net` shows the namespace of the thread that opens it. So whatever must happen
//! inside the pod's namespace starts on a fresh thread that first `setns()`es into it; the
//! thread ends with the work, so no other code ever runs in the wrong namespace. For
//! netlink that work is only creating the socket: [`Netlink`] then drives it from the
//! invocation's one runtime, beside the host's connection, and every step borrows the two
//! instead of opening its own (as netavark does).

use std::fs::File;
use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use rtnetlink::Handle;
use tokio::runtime::Runtime;

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

    /// Run `f` inside this namespace, on a throwaway thread.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::Netns { path: self.path.clone(), source: std::io::Error::from_raw_os_error(e as i32) })?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Io { op: "netns worker thread".into(), source: std::io::Error::other("panicked") }))
        })
    }
}

/// One invocation's netlink: a current-thread runtime with one rtnetlink connection in the
/// calling thread's namespace (the host's) and, when asked, one in the pod's.
pub struct Netlink {
    rt: Runtime,
    host: Handle,
    pod: Option<Handle>,
}

impl Netlink {
    /// Open the host connection and, with `pod`, the pod's.
    pub fn open(pod: Option<&NetNs>) -> Result<Netlink> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(Error::io("start netlink runtime"))?;
        let host = {
            let _in_rt = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::io("open netlink socket"))?;
            rt.spawn(conn);
            handle
        };
        let pod = match pod {
            Some(ns) => {
                let rt_handle = rt.handle().clone();
                let (conn, handle) = ns.enter(|| {
                    // The socket registers with the invocation's runtime, from this thread.
                    let _in_rt = rt_handle.enter();
                    let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::io("open netlink socket in the pod"))?;
                    Ok((conn, handle))
                })?;
                rt.spawn(conn);
                Some(handle)
            }
            None => None,
        };
        Ok(Netlink { rt, host, pod })
    }

    /// Run `f` with the host's connection.
    pub fn host<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Handle) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.rt.block_on(f(self.host.clone()))
    }

    /// Run `f` with the pod's connection.
    pub fn pod<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Handle) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let pod = self.pod.clone().ok_or_else(|| Error::Io {
            op: "pod netlink".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "opened without the pod's namespace"),
        })?;
        self.rt.block_on(f(pod))
    }

    /// Run a future that opens its own sockets (proxy neighbours) on this runtime.
    pub fn block_on<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        self.rt.block_on(fut)
    }
}

/// Run `f` with a one-off connection in the calling thread's namespace (operator commands
/// and other single calls outside a verb's [`Netlink`]).
pub fn with_netlink<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    Netlink::open(None)?.host(f)
}
