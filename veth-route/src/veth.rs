//! Creating the veth pair: the host end in the VM namespace, the peer directly in the
//! pod's namespace under CNI_IFNAME (one atomic netlink request, no temporary names).

use std::os::fd::AsRawFd;

use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::error::{errno, Error, Result};
use crate::netns::NetNs;

/// Create `host_name` here and its peer `pod_name` inside `pod_ns`, both with `mtu`.
pub async fn create_pair(h: &Handle, host_name: &str, pod_name: &str, mtu: Option<u32>, pod_ns: &NetNs) -> Result<()> {
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(pod_name.to_string()).setns_by_fd(pod_ns.file().as_raw_fd());
    let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(host_name.to_string());
    if let Some(mtu) = mtu {
        peer = peer.mtu(mtu);
        host = host.mtu(mtu);
    }
    let msg = host.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build()))).build();
    h.link().add(msg).execute().await.map_err(|e| {
        if errno(&e) == Some(libc::EEXIST) {
            Error::Cni(cni::CniError::new(
                cni::ErrorCode::Other(crate::error::CODE_KERNEL),
                format!("cannot create veth {host_name}/{pod_name}: a link with one of these names already exists"),
            ))
        } else {
            Error::netlink(format!("create veth pair {host_name}/{pod_name}"))(e)
        }
    })
}

/// Set the host end's alias (ownership tag for GC) and bring it up.
pub async fn tag_and_up(h: &Handle, index: u32, alias: &str) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index).alias(alias).up().build();
    h.link().change(msg).execute().await.map_err(Error::netlink("tag and bring up host veth"))
}
