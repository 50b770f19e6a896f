//! HTTPS on the shards. rustls runs each handshake (`handshake`); once it is done the
//! connection's traffic keys come out of rustls (its kernel-connection API, built for kTLS) and
//! the records are sealed and opened in place in the shard's own buffers (`record`, `session`),
//! so a request over TLS allocates nothing, as over plain HTTP. The certificate (`certs`) is
//! swapped whole on reload; connections keep the one they were made with.

pub mod certs;
pub mod handshake;
pub mod record;
pub mod session;
