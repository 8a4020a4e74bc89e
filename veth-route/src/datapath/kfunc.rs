//! Resolve the conntrack kfuncs in the running kernel and patch their placeholder calls.
//!
//! aya 0.14 cannot relocate kfunc calls, so the programs carry raw
//! `BPF_PSEUDO_KFUNC_CALL` instructions whose `imm` is a placeholder (see
//! `veth_route_common::kfunc`); here `imm` becomes the kfunc's BTF id in vmlinux.

use aya_obj::btf::{Btf, BtfKind};
use veth_route_common::kfunc::{call_insn, CT_LOOKUP_PLACEHOLDER, CT_RELEASE_PLACEHOLDER};

use super::DatapathError;

/// The kfuncs the programs call, by placeholder.
const KFUNCS: [(&str, i32); 2] =
    [("bpf_skb_ct_lookup", CT_LOOKUP_PLACEHOLDER), ("bpf_ct_release", CT_RELEASE_PLACEHOLDER)];

/// A copy of `object` with every placeholder kfunc call pointing at the kernel's BTF id.
pub fn patch_kfunc_calls(object: &[u8]) -> Result<Vec<u8>, DatapathError> {
    let btf = Btf::from_sys_fs().map_err(|e| {
        DatapathError::Unavailable(format!("kernel BTF (/sys/kernel/btf/vmlinux) unreadable: {e}"))
    })?;
    let mut patched = object.to_vec();
    for (name, placeholder) in KFUNCS {
        let id = btf.id_by_type_name_kind(name, BtfKind::Func).map_err(|_| {
            DatapathError::Unavailable(format!("kernel has no kfunc {name} (needs nf_conntrack with BPF support)"))
        })?;
        let count = replace_call_imm(&mut patched, placeholder, id);
        if count == 0 {
            return Err(DatapathError::Other(format!("eBPF object has no call to {name}: stale build?")));
        }
    }
    Ok(patched)
}

/// Rewrite `imm` of each 8-byte-aligned placeholder call instruction; returns how many.
fn replace_call_imm(object: &mut [u8], placeholder: i32, id: u32) -> usize {
    let needle = call_insn(placeholder);
    let mut count = 0;
    // Instructions are 8-byte aligned inside 8-byte aligned sections of the ELF file.
    for insn in object.chunks_exact_mut(8) {
        if insn == needle {
            insn[4..].copy_from_slice(&id.to_le_bytes());
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_only_aligned_placeholder_calls() {
        let mut obj = vec![0u8; 32];
        obj[8..16].copy_from_slice(&call_insn(CT_LOOKUP_PLACEHOLDER));
        obj[20..28].copy_from_slice(&call_insn(CT_LOOKUP_PLACEHOLDER)); // misaligned: not code
        assert_eq!(replace_call_imm(&mut obj, CT_LOOKUP_PLACEHOLDER, 4242), 1);
        assert_eq!(&obj[12..16], &4242u32.to_le_bytes());
        assert_eq!(obj[20..28], call_insn(CT_LOOKUP_PLACEHOLDER));
    }
}
