//! Test bed: namespaces, a local OpenStack, and a CNI runner for tests, the demo and benchmarks.

pub mod openstack;
