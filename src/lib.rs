//! pricebeast: live market prices over HTTP, UDP and WebSocket, from one binary.
//!
//! ```text
//!  feeds (simulator; exchange WebSockets)      control plane (one tokio thread, control::Services)
//!    │ exact decimals, venue event time          admin + /metrics, stats sampling, key reloads,
//!    ▼                                           usage ledger (drain → writer → store), reports
//!  book: one seqlock cell per (symbol, venue)
//!    │ read lock-free, median of fresh venues
//!    ▼
//!  shards (one thread per core, monoio on io_uring or epoll, pinned):
//!    own SO_REUSEPORT listener + UDP socket + preallocated buffers
//!    bytes → http::request / udp::codec → admission (keys → ratelimit → usage)
//!          → book → http::response / udp::codec → bytes
//!    streams: moved symbols wake the shard → one frame per writable stream (stream::fanout)
//!    │ counters: one padded block per shard, summed on read
//!    │ usage: per-key atomic counts, drained by the ledger every usage.flush_ms
//! ```
//!
//! Modules, in the order data flows through them:
//!
//! - [`feeds`]: where prices come from: the simulator, or one module per exchange (parser,
//!   subscribe, keepalive) run by the supervisor; each writes its venue column via a `BookWriter`.
//! - [`book`]: the price table, exact decimals, interned symbols, the median of fresh venues.
//! - [`shard`]: the per-core threads that own the sockets: the only code that touches them.
//! - [`http`]: the public HTTP path as a pure function from request bytes to response bytes.
//! - [`udp`]: the partner datagram protocol, likewise pure.
//! - [`stream`]: streaming over WebSocket or server-sent events: sessions, the handshake, the
//!   per-shard fan-out that pushes changed prices to each stream (conflating for slow clients),
//!   frames in either framing.
//! - [`admission`]: the key → rate limit → monthly cap decision shared by HTTP and UDP.
//! - [`keys`]: the keys file and the table the shards read; [`ratelimit`]: GCRA per key;
//!   [`usage`]: monthly counts per key, and the durable ledger they are drained into.
//! - [`counters`]: the 24 counters, the gauges and the latency histogram; derived rates.
//! - [`faults`]: errors and recovered faults in background work, by component.
//! - [`admin`]: the admin listener and `/metrics`; [`access_log`]: a line per HTTP request,
//!   written off the shards; [`logging`]: the process's own log lines.
//! - [`control`]: the control plane's background services, started from one list, stopped by one
//!   signal.
//! - [`server`]: `serve`, wiring all of the above; [`config`]: the settings, parsed whole first.
//! - [`client`]: clients of our own protocols; [`cli`]: the command line.
//! - [`stress`]: the load generator (`pricebeast stress`): plans, HTTP/UDP/WebSocket/SSE load loops, HDR
//!   latency, client saturation, reconciliation with the server's counters, reports.
//! - [`mock_exchange`]: a local stand-in for the exchanges' feeds, for tests and offline demos.
//! - [`clock`], [`buf`], [`state`], [`splitmix`], [`alloc`]: time as the hot path sees it, fixed
//!   buffers, shared state and the context of a decision, a seedable generator for repeatable
//!   choices, giving freed memory back.

pub mod access_log;
pub mod admin;
pub mod admission;
pub mod alloc;
pub mod book;
pub mod buf;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod counters;
pub mod fallback;
pub mod faults;
pub mod feeds;
pub mod governor;
pub mod http;
pub mod keys;
pub mod logging;
pub mod mock_exchange;
pub mod notify;
pub mod profile;
pub mod ratelimit;
pub mod server;
pub mod shard;
pub mod splitmix;
pub mod state;
pub mod stream;
pub mod stress;
pub mod tls;
pub mod udp;
pub mod usage;
