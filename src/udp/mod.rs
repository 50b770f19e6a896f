//! The partner UDP path: the datagram format (`codec`) and the decision (`handler`).

pub mod codec;
pub mod handler;
