//! Clients of pricebeast's own protocols, for `pricebeast query`, the stress client and tests.

pub mod events;
pub mod http;
pub mod response;
pub mod stream;
pub mod tls;
pub mod udp;
