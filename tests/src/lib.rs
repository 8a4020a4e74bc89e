//! Test bed: namespaces, a local OpenStack, and a CNI runner for tests, the demo and benchmarks.

pub mod bench;
pub mod cni_runner;
pub mod elf;
pub mod fastpath_support;
pub mod kernel;
pub mod mutate;
pub mod netns;
pub mod openstack;
pub mod podman;
pub mod probe;
pub mod vm;
