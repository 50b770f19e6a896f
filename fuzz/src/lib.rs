//! The fixed server state the `http_respond` and `udp_decode` targets answer from: built once per
//! fuzzing process, the way `server::run` builds it (a keys file read by `KeyStore`, a book
//! written through `PriceBook::write`), small enough that the fuzzer reaches every branch.
//!
//! The keys and symbols here are also spelled in `make_seeds.py`, so the seed corpus carries
//! them: a fuzzer that has to guess a 35-byte key never gets past authentication.

use std::sync::{Arc, OnceLock};

use tempfile::TempDir;

use pricebeast::book::{Decimal, PriceBook};
use pricebeast::clock::{Now, SecondCache};
use pricebeast::config::Config;
use pricebeast::counters::Counters;
use pricebeast::state::Context;
use pricebeast::keys::file::{KeyRecord, KeysFile, Tier};
use pricebeast::keys::{secret, KeyStore};
use pricebeast::state::Shared;

/// Never limited, only counted.
pub const PARTNER_KEY: &str = "pb_fuzz_partner_0000000000000000000";
/// Two requests of burst at the fixed instant, then rate limited for the rest of the process.
pub const PUBLIC_RATE_KEY: &str = "pb_fuzz_public_rate_000000000000000";
/// A large burst but a monthly cap of 3: the fourth billable request is over quota.
pub const PUBLIC_QUOTA_KEY: &str = "pb_fuzz_public_quota_00000000000000";
pub const REVOKED_KEY: &str = "pb_fuzz_revoked_0000000000000000000";

// Every key must fit the UDP key field (16..=64 bytes), or the UDP target never authenticates.
const _: () = {
    let keys = [PARTNER_KEY, PUBLIC_RATE_KEY, PUBLIC_QUOTA_KEY, REVOKED_KEY];
    let mut i = 0;
    while i < keys.len() {
        assert!(keys[i].len() >= 16 && keys[i].len() <= 64);
        i += 1;
    }
};

/// Every venue of the fuzzing book.
pub const VENUES: [&str; 3] = ["coinbase", "kraken", "okx"];

/// The fixed instant every request is answered at (2026-11-23T06:00:00Z).
pub const NOW_UNIX_MS: u64 = 1_795_413_600_000;
const STALE_AFTER_MS: u64 = 5_000;

/// The longest symbol the protocol allows, so the largest bodies get built.
pub const LONG_SYMBOL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

pub struct Fixture {
    pub shared: Shared,
    pub second: SecondCache,
    pub now: Now,
    // Held so the keys file outlives the store that may reload it.
    _keys_dir: TempDir,
}

impl Fixture {
    /// What a shard passes the handlers.
    pub fn context(&self) -> Context<'_> {
        Context { shared: &self.shared, counters: self.shared.counters.shard(0), second: &self.second, now: self.now, shedding: false }
    }
}

/// The process's fixture. The key states (rate limiter, monthly usage) it holds move as inputs
/// run, as they do in a server; a crash that depends on them reproduces from the crash input
/// after the same sequence, not always alone.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

fn build() -> Fixture {
    let keys_dir = tempfile::tempdir().expect("a temp dir for the keys file");
    let keys_path = keys_dir.path().join("keys.toml");
    let record = |name: &str, tier, key: &str, limits: Option<(u32, u32, u64)>, revoked| KeyRecord {
        name: name.into(),
        tier,
        sha256: hex::encode(secret::hash(key.as_bytes())),
        qps: limits.map(|l| l.0),
        burst: limits.map(|l| l.1),
        monthly_cap: limits.map(|l| l.2),
        created_unix_s: 0,
        revoked,
        stress: false,
    };
    let keys = vec![
        record("partner", Tier::Partner, PARTNER_KEY, None, false),
        record("public-rate", Tier::Public, PUBLIC_RATE_KEY, Some((1, 2, 1_000_000)), false),
        record("public-quota", Tier::Public, PUBLIC_QUOTA_KEY, Some((1_000, 1_000_000, 3)), false),
        record("revoked", Tier::Partner, REVOKED_KEY, None, true),
    ];
    KeysFile { keys }.save(&keys_path).expect("the keys file is writable");
    let keys = KeyStore::open(&keys_path).expect("the keys file just written parses");

    let symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "STALE-USD", "NEVER-USD", "EXTREME", "SPREAD", LONG_SYMBOL];
    let book = PriceBook::new(&symbols, &VENUES, 16, STALE_AFTER_MS).expect("valid symbols and distinct venues");
    let fresh_ms = NOW_UNIX_MS - 10;
    let stale_ms = NOW_UNIX_MS - STALE_AFTER_MS - 1;
    let price = |m: i64, e: i8| Decimal::new(m, e).expect("exponent in range");
    // (symbol, venue column, price, received at): NEVER-USD is never written.
    let writes = [
        ("BTC-USD", 0, price(9_712_345, -2), fresh_ms),
        ("BTC-USD", 1, price(9_712_340, -2), fresh_ms),
        ("BTC-USD", 2, price(97_125, 0), fresh_ms),
        ("ETH-USD", 0, price(345_678, -2), fresh_ms),
        ("ETH-USD", 1, price(3_456_800, -3), fresh_ms),
        ("SOL-USD", 0, price(24_050, -2), fresh_ms),
        ("SOL-USD", 1, price(1, 0), stale_ms),
        ("STALE-USD", 0, price(1, 0), stale_ms),
        // The widest prices a Decimal holds: the longest JSON and the median's overflow paths.
        ("EXTREME", 0, price(i64::MAX, 18), fresh_ms),
        ("EXTREME", 1, price(i64::MIN, -18), fresh_ms),
        ("EXTREME", 2, price(-1, 0), fresh_ms),
        // Two venues whose mean does not fit: the midpoint's fallback.
        ("SPREAD", 0, price(i64::MAX, 18), fresh_ms),
        ("SPREAD", 1, price(i64::MIN, -18), fresh_ms),
        (LONG_SYMBOL, 0, price(i64::MIN, 18), fresh_ms),
        (LONG_SYMBOL, 1, price(i64::MIN, 18), fresh_ms),
        (LONG_SYMBOL, 2, price(i64::MAX, -18), fresh_ms),
    ];
    {
        let index = book.symbols();
        for (symbol, column, price, recv_ms) in writes {
            let id = index.lookup(symbol.as_bytes()).expect("interned above");
            let venue = book.venue(VENUES[column]).expect("configured above");
            book.write(id, venue, price, recv_ms - 5, recv_ms);
        }
    }

    let counters = Arc::new(Counters::new(1));
    let shared = Shared::new(Arc::new(Config::default()), Arc::new(book), keys, counters);
    let now = Now::at(1_000_000_000, NOW_UNIX_MS);
    Fixture { shared, second: SecondCache::new(now), now, _keys_dir: keys_dir }
}
