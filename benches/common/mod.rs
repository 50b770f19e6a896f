//! The state a shard serves from, built the way `server::run` builds it, for the HTTP and UDP
//! benches: a real keys file read through `KeyStore`, a book written through `PriceBook::write`.
//!
//! Lives in a folder so cargo does not take it for a bench target of its own.

use std::sync::Arc;

use tempfile::TempDir;

use pricebeast::book::{Decimal, PriceBook};
use pricebeast::clock::{Now, SecondCache};
use pricebeast::config::Config;
use pricebeast::counters::Counters;
use pricebeast::keys::file::{KeyRecord, KeysFile, Tier};
use pricebeast::keys::{secret, KeyStore};
use pricebeast::state::Context;
use pricebeast::state::Shared;

/// A fixed partner key, so every run hashes the same bytes: `pb_` and 32 hex digits, like
/// `pricebeast keys new` makes.
pub const PARTNER_KEY: &str = "pb_0123456789abcdef0123456789abcdef";

/// Ten symbols, so `/v1/prices` can ask for ten that are all served.
pub const SYMBOLS: [&str; 10] =
    ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "AVAX-USD", "LTC-USD", "AAPL", "MSFT"];

/// The simulator's default venue count.
pub const VENUES: [&str; 3] = ["coinbase", "kraken", "okx"];

/// A fixed instant: the shards read the clock once per batch, so a fixed `now` is what one
/// request sees, and it keeps every price fresh for the whole run.
pub const NOW_UNIX_MS: u64 = 1_795_413_600_000;

pub struct Fixture {
    pub shared: Shared,
    pub second: SecondCache,
    pub now: Now,
    // Held so the keys file outlives the store that may reload it.
    _keys_dir: TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let keys_dir = tempfile::tempdir().expect("a temp dir for the keys file");
        let keys_path = keys_dir.path().join("keys.toml");
        let record = KeyRecord {
            name: "bench-partner".into(),
            tier: Tier::Partner,
            sha256: hex::encode(secret::hash(PARTNER_KEY.as_bytes())),
            qps: None,
            burst: None,
            monthly_cap: None,
            created_unix_s: 0,
            revoked: false,
            stress: false,
        };
        KeysFile { keys: vec![record] }.save(&keys_path).expect("the keys file is writable");
        let keys = KeyStore::open(&keys_path).expect("the keys file just written parses");

        let config = Config::default();
        let book = PriceBook::new(&SYMBOLS, &VENUES, config.book.symbols_max, config.book.stale_after_ms)
            .expect("ten valid symbols and three distinct venues");
        let index = book.symbols();
        for (row, name) in SYMBOLS.iter().enumerate() {
            let id = index.lookup(name.as_bytes()).expect("interned above");
            for (column, venue) in VENUES.iter().enumerate() {
                let venue = book.venue(venue).expect("configured above");
                // Distinct prices per venue, so the median really sorts.
                let mantissa = 9_712_345 + (row as i64) * 1_000 + (column as i64) * 7 - 5;
                let price = Decimal::new(mantissa, -2).expect("exponent -2 is in range");
                book.write(id, venue, price, NOW_UNIX_MS - 20, NOW_UNIX_MS - 10);
            }
        }
        drop(index);

        let counters = Arc::new(Counters::new(1));
        let shared = Shared::new(Arc::new(config), Arc::new(book), keys, counters);
        let now = Now::at(1_000_000_000, NOW_UNIX_MS);
        Self { shared, second: SecondCache::new(now), now, _keys_dir: keys_dir }
    }

    /// What shard 0 passes the handlers.
    pub fn context(&self) -> Context<'_> {
        Context {
            shared: &self.shared,
            counters: self.shared.counters.shard(0),
            second: &self.second,
            now: self.now,
            shedding: false,
        }
    }
}
