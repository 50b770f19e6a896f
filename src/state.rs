//! What every shard and the control plane share: the book, the keys, the counters, the config.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::book::PriceBook;
use crate::clock::{Now, SecondCache};
use crate::config::Config;
use crate::counters::{CounterBlock, Counters};
use crate::feeds::stats::VenueStats;
use crate::keys::KeyStore;
use crate::stream::sessions::SessionTable;

/// Shared state. Everything here is read lock-free on the hot path.
pub struct Shared {
    pub config: Arc<Config>,
    pub book: Arc<PriceBook>,
    pub keys: KeyStore,
    pub counters: Arc<Counters>,
    /// Streaming sessions created on any shard, redeemed on any shard.
    pub sessions: SessionTable,
    pub node: String,
    /// Each exchange feed's state, for operators (empty with the simulator).
    pub feeds: Vec<(String, Arc<VenueStats>)>,
    /// The usage ledger (absent only in tests that build a bare `Shared`).
    pub ledger: Option<Arc<crate::usage::ledger::Ledger>>,
    /// Where a shard hands a usage report request to the control plane; absent without a ledger.
    pub reports: Option<tokio::sync::mpsc::Sender<crate::usage::ledger::service::ReportJob>>,
    /// Where a shard hands a book miss to the control plane's lookups (Redis, REST); absent
    /// when there is nowhere to look.
    pub misses: Option<crate::fallback::Misses>,
    /// The HTTPS listener's certificate; absent when `server.https` is off.
    pub tls: Option<Arc<crate::tls::certs::Certs>>,
    /// The profile in force, and what the shards read of it.
    pub tuning: Arc<crate::profile::live::Tuning>,
    /// Each shard's governor readings, for operators.
    pub governors: crate::governor::Readings,
    /// Where each HTTP request's line goes when `log.access` is on.
    pub access_log: Option<crate::access_log::AccessLog>,
    /// The browser origins `http.cors_origins` allows.
    pub cors: crate::http::cors::Policy,
    /// Each shard's last heartbeat, which feeds the service manager's watchdog.
    pub heartbeats: Arc<crate::notify::Heartbeats>,
    /// Unix ms when the process started serving.
    pub started_ms: u64,
    draining: AtomicBool,
}

impl Shared {
    pub fn new(config: Arc<Config>, book: Arc<PriceBook>, keys: KeyStore, counters: Arc<Counters>) -> Self {
        let node = config.node_name();
        let sessions = SessionTable::new(config.stream.sessions_pending_max, config.stream.session_ttl_s * 1000);
        let cors = crate::http::cors::Policy::new(&config.http.cors_origins);
        Self {
            tuning: Arc::new(crate::profile::live::Tuning::fixed(&config)),
            governors: crate::governor::Readings::new(counters.shards()),
            heartbeats: Arc::new(crate::notify::Heartbeats::new(counters.shards())),
            sessions,
            feeds: Vec::new(),
            tls: None,
            config,
            book,
            keys,
            counters,
            node,
            ledger: None,
            reports: None,
            misses: None,
            cors,
            access_log: None,
            started_ms: crate::clock::Now::read().unix_ms,
            draining: AtomicBool::new(false),
        }
    }

    /// True once shutdown has begun: shards stop accepting and close connections after their
    /// current request.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Background faults by component (kept beside the counters, which every service holds).
    pub fn faults(&self) -> &crate::faults::Faults {
        self.counters.faults()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// What a request's decision sees of the world: the shared state, the shard's own counter block,
/// this second's cached date and month, one clock reading for a whole batch of requests, and
/// whether the shard's governor sheds public requests now.
/// Built by a shard (or a test, bench or fuzz target) around a pure core.
pub struct Context<'a> {
    pub shared: &'a Shared,
    pub counters: &'a CounterBlock,
    pub second: &'a SecondCache,
    pub now: Now,
    pub shedding: bool,
}
