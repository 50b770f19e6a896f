//! Several nodes sharing one Redis (`cluster.redis_url`): the connection (`redis`) and the
//! fleet's stats (`stats`: each node's snapshot published, every live one read in one round
//! trip). Only the control plane talks to Redis; the shards' hot path does not change.

pub mod redis;
pub mod stats;
