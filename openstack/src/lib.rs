//! Minimal Keystone v3 and Neutron v2.0 clients.
