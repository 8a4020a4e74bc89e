//! Test bed: namespaces, a local OpenStack, and a CNI runner for tests, the demo and benchmarks.

pub mod bench;
pub mod cni_runner;
pub mod dual_stack;
pub mod elf;
pub mod fastpath_support;
pub mod kernel;
pub mod mutate;
pub mod netns;
pub mod openstack;
pub mod patience;
pub mod podman;
pub mod probe;
pub mod vm;

/// FNV-1a, 64 bit: a hash that stays the same across builds and machines, for names the
/// next command must find again and for checksums compared across processes.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
