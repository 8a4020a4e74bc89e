//! Resolve the conntrack kfuncs in the running kernel and patch their placeholder calls.
//!
//! aya 0.14 cannot relocate kfunc calls, so the programs carry raw
//! `BPF_PSEUDO_KFUNC_CALL` instructions whose `imm` is a placeholder (see
//! `veth_route_common::kfunc`); here `imm` becomes the kfunc's BTF id in vmlinux.

use aya_obj::btf::{Btf, BtfKind};
use veth_route_common::kfunc::{call_insn, CT_LOOKUP_PLACEHOLDER, CT_RELEASE_PLACEHOLDER};

/// The kfuncs the programs call, by placeholder.
const KFUNCS: [(&str, i32); 2] = [("bpf_skb_ct_lookup", CT_LOOKUP_PLACEHOLDER), ("bpf_ct_release", CT_RELEASE_PLACEHOLDER)];

/// `mov r0, 0`: what a kfunc call becomes when conntrack cannot be consulted. The lookup
/// then "fails", which the programs treat as NATed (kernel path) — never as safe to redirect.
const MOV_R0_0: [u8; 8] = [0xb7, 0, 0, 0, 0, 0, 0, 0];

/// A copy of `object` whose placeholder kfunc calls point at the kernel's BTF ids, and
/// `Err(reason)` if the kfuncs are unusable here (then the calls are neutralised instead).
///
/// The kfuncs must be in vmlinux BTF: when nf_conntrack is a module its kfuncs live in
/// module BTF, which needs `fd_array` at load time, which aya 0.14 does not pass.
/// `VETH_ROUTE_NO_CT_KFUNCS=1` simulates such a kernel.
pub fn patch_kfunc_calls(object: &[u8]) -> (Vec<u8>, Result<(), String>) {
    let mut patched = object.to_vec();
    match resolve() {
        Ok(ids) => {
            for ((_, placeholder), id) in KFUNCS.iter().zip(ids) {
                replace_insn(&mut patched, *placeholder, Some(id));
            }
            (patched, Ok(()))
        }
        Err(reason) => {
            for (_, placeholder) in KFUNCS {
                replace_insn(&mut patched, placeholder, None);
            }
            (patched, Err(reason))
        }
    }
}

/// BTF ids of [`KFUNCS`] in vmlinux.
fn resolve() -> Result<[u32; 2], String> {
    if std::env::var_os("VETH_ROUTE_NO_CT_KFUNCS").is_some() {
        return Err("conntrack kfuncs disabled by VETH_ROUTE_NO_CT_KFUNCS".into());
    }
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF (/sys/kernel/btf/vmlinux) unreadable: {e}"))?;
    let mut ids = [0u32; 2];
    for (slot, (name, _)) in ids.iter_mut().zip(KFUNCS) {
        *slot = btf
            .id_by_type_name_kind(name, BtfKind::Func)
            .map_err(|_| format!("kfunc {name} not in vmlinux BTF (nf_conntrack missing or built as a module)"))?;
    }
    Ok(ids)
}

/// Replace each placeholder call: `imm` := `id`, or the whole instruction by `mov r0, 0`.
fn replace_insn(object: &mut [u8], placeholder: i32, id: Option<u32>) -> usize {
    let needle = call_insn(placeholder);
    let mut count = 0;
    // Instructions are 8-byte aligned inside 8-byte aligned sections of the ELF file.
    for insn in object.chunks_exact_mut(8) {
        if insn == needle {
            match id {
                Some(id) => insn[4..].copy_from_slice(&id.to_le_bytes()),
                None => insn.copy_from_slice(&MOV_R0_0),
            }
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
        assert_eq!(replace_insn(&mut obj, CT_LOOKUP_PLACEHOLDER, Some(4242)), 1);
        assert_eq!(&obj[12..16], &4242u32.to_le_bytes());
        assert_eq!(obj[20..28], call_insn(CT_LOOKUP_PLACEHOLDER));
    }

    #[test]
    fn neutralises_calls_when_kfuncs_are_unusable() {
        let mut obj = call_insn(CT_RELEASE_PLACEHOLDER).to_vec();
        assert_eq!(replace_insn(&mut obj, CT_RELEASE_PLACEHOLDER, None), 1);
        assert_eq!(obj, MOV_R0_0);
    }
}
