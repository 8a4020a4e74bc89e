//! vrouter-route-controller: keeps a Neutron router's static routes in step with the pod
//! addresses on the VM ports that tcnp-ipam manages.

pub mod aggregate;
pub mod cloud;
pub mod desired;
pub mod ledger;
pub mod model;
pub mod plan;
pub mod reconcile;
