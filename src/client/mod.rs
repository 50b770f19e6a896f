//! Clients of pricebeast's own protocols, for `pricebeast query`, the stress client and tests.

pub mod http;
pub mod stream;
pub mod tls;
pub mod udp;
