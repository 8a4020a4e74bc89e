//! Names derived from the attachment identity, so DEL and GC need no stored state.

/// Prefix of host-side veth names.
const HOST_VETH_PREFIX: &str = "veth";
/// Prefix of masquerade chains (distinct from the reference plugins' `CNI-` + sha512).
pub const MASQ_CHAIN_PREFIX: &str = "CNI-VR-";
/// Prefix of the ownership tag on host veths and masquerade rules.
const TAG_PREFIX: &str = "veth-route/";

/// FNV-1a, 64 bit, of `parts` joined by NUL bytes: stable across builds and platforms
/// (unlike `DefaultHasher`), as names found again by a later build must be.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        let separator: &[u8] = if i > 0 { &[0] } else { &[] };
        for b in separator.iter().chain(p.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// The names of one attachment's objects, derived once from its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentNames {
    /// The host end of the veth pair.
    pub host_veth: String,
    /// The ownership tag (host veth alias, masquerade rule comment).
    pub tag: String,
    /// The masquerade chain.
    pub masq_chain: String,
}

impl AttachmentNames {
    /// The names of attachment `container_id`/`ifname` of `network`.
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Self {
        AttachmentNames {
            host_veth: host_veth(container_id, ifname),
            tag: tag(network, container_id, ifname),
            masq_chain: masq_chain(network, container_id, ifname),
        }
    }
}

/// Host-side veth name: `veth` + 8 hex digits of the container ID and ifname (12 chars).
fn host_veth(container_id: &str, ifname: &str) -> String {
    format!("{HOST_VETH_PREFIX}{:08x}", fnv1a(&[container_id.as_bytes(), ifname.as_bytes()]) as u32)
}

/// Masquerade chain of one attachment of one network (23 chars, under iptables' 28).
pub fn masq_chain(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{MASQ_CHAIN_PREFIX}{:016x}", fnv1a(&[network.as_bytes(), container_id.as_bytes(), ifname.as_bytes()]))
}

/// Ownership tag: the host veth's alias and the masquerade rules' comment.
/// Container IDs, ifnames and network names cannot contain '/' or spaces.
pub fn tag(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{TAG_PREFIX}{network}/{container_id}/{ifname}")
}

/// Whether `alias` is a tag of any veth-route network (a host veth of ours).
pub fn is_tag(alias: &str) -> bool {
    alias.starts_with(TAG_PREFIX)
}

/// The (container ID, ifname) of a tag belonging to `network`.
pub fn parse_tag<'a>(tag: &'a str, network: &str) -> Option<(&'a str, &'a str)> {
    let rest = tag.strip_prefix(TAG_PREFIX)?.strip_prefix(network)?.strip_prefix('/')?;
    let (id, ifname) = rest.split_once('/')?;
    (!id.is_empty() && !ifname.is_empty() && !ifname.contains('/')).then_some((id, ifname))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_short() {
        let a = host_veth("abc123", "eth0");
        assert_eq!(a, host_veth("abc123", "eth0"));
        assert_ne!(a, host_veth("abc123", "eth1"));
        assert_ne!(a, host_veth("abc12", "3eth0"));
        assert_eq!(a.len(), 12);
        assert!(masq_chain("cni0", "abc123", "eth0").len() <= 28);
        assert_ne!(masq_chain("cni0", "abc", "eth0"), masq_chain("cni1", "abc", "eth0"));
    }

    #[test]
    fn names_are_those_of_earlier_builds() {
        // DEL and GC of pods set up by earlier builds find their objects by these names
        // (the values of the first implementation, computed independently).
        assert_eq!(host_veth("abc123", "eth0"), "veth2423e986");
        assert_eq!(masq_chain("cni0", "abc123", "eth0"), "CNI-VR-1bf4596c38466a8c");
    }

    #[test]
    fn tags_round_trip() {
        let t = tag("cni0", "abc", "eth0");
        assert_eq!(parse_tag(&t, "cni0"), Some(("abc", "eth0")));
        assert_eq!(parse_tag(&t, "cni"), None);
        assert_eq!(parse_tag("something else", "cni0"), None);
    }
}
