//! vrouter-route-controller: keeps a Neutron router's static routes in step with the pod
//! addresses on the VM ports that tcnp-ipam manages.
//!
//! Pure decisions (`desired`, `aggregate`, `plan`, `ledger`, `managed`) are separate from
//! I/O (`neutron`, `http`) and orchestration (`reconcile`, `daemon`).

pub mod aggregate;
pub mod cloud;
pub mod config;
pub mod daemon;
pub mod desired;
pub mod http;
pub mod ledger;
pub mod managed;
pub mod model;
pub mod neutron;
pub mod plan;
pub mod reconcile;
pub mod status;
pub mod writer;
