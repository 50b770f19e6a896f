//! Several nodes sharing one Redis (`cluster.redis_url`): the connection (`redis`), the fleet's
//! stats (`stats`: each node's snapshot published, every live one read in one round trip) and
//! the public keys' monthly caps counted across the fleet (`caps`). Only the control plane talks
//! to Redis; the shards read what it leaves in the book and the keys' atomics.

pub mod caps;
pub mod redis;
pub mod stats;
