//! Streaming (docs/protocol.md "Streaming"): a session made over REST, redeemed by a WebSocket
//! upgrade or an event-stream request (`Accept: text/event-stream`) on whichever shard accepts
//! the connection, which then owns the stream. The two differ only in framing (`frames`).
//!
//! - [`sessions`]: the node-wide table of pending sessions (lock-free, bounded).
//! - [`symbols`]: the symbol lists clients send (session bodies and symbol changes).
//! - [`handshake`]: which upgrade requests are accepted, and the 101.
//! - [`client`]: what a client sends on an open stream, through tungstenite's protocol core.
//! - [`upgrade`]: whether a request to open a stream (either kind) is accepted: a grant, or why not.
//! - [`grant`]: what an accepted stream hands the shard: the session, the key's stream slot, the
//!   framing.
//! - [`frames`]: the price frames, WebSocket or event, written into a stream's own buffer.
//! - [`fanout`]: a shard's streams and its tick: which symbols moved, who gets a frame, who is
//!   too slow to take one (conflation).
//!
//! The sockets themselves are the shard's (`shard::stream`).

pub mod client;
pub mod fanout;
pub mod frames;
pub mod grant;
pub mod handshake;
pub mod sessions;
pub mod symbols;
pub mod upgrade;
