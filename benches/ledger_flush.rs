//! The usage ledger's write side with 10,000 active keys: one drain of every key's counts into
//! batches, and one flush window (drain + commit of every batch to the SQLite journal, WAL with
//! full sync, the default `usage.batch_max` of 1,000 rows per transaction). Each key has
//! admitted 100 requests over HTTP and UDP since the last window, so one window carries
//! 1,000,000 counted requests: the throughput line says how many counted requests per second the
//! flusher sustains end to end (target: at least 1,000,000/s, far beyond what the shards admit).
//!
//! With `PRICEBEAST_BENCH_POSTGRES` set to a PostgreSQL URL (scripts/bench-ledger.sh starts a
//! throwaway server and sets it), the same window is also shipped into PostgreSQL as the outbox
//! ships it: batch by batch, one UNNEST upsert and one batch id each.
//!
//! `cargo bench --bench ledger_flush`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use pricebeast::clock::Month;
use pricebeast::counters::Counters;
use pricebeast::keys::file::ParsedKey;
use pricebeast::keys::{secret, KeyTable, Tier};
use pricebeast::usage::ledger::drain::Drainer;
use pricebeast::usage::ledger::postgres::Fleet;
use pricebeast::usage::ledger::sqlite::Journal;
use pricebeast::usage::Channel;

const KEYS: usize = 10_000;
const PER_KEY: u64 = 100;
const BATCH_MAX: usize = 1_000;

fn table() -> Arc<KeyTable> {
    let keys = (0..KEYS)
        .map(|i| {
            let name = format!("key-{i:05}");
            ParsedKey {
                hash: secret::hash(name.as_bytes()),
                name,
                tier: Tier::Partner,
                limits: None,
                revoked: false,
                stress: false,
            }
        })
        .collect();
    Arc::new(KeyTable::build(keys, &KeyTable::default()))
}

/// What the shards would have counted in one window, added without the admission path.
fn count(table: &KeyTable) {
    for entry in table.entries() {
        for i in 0..PER_KEY {
            let channel = if i % 4 == 0 { Channel::Udp } else { Channel::Http };
            let _ = entry.state.usage.consume(Month(24_323), None, channel);
        }
    }
}

fn ledger_flush(c: &mut Criterion) {
    let table = table();
    let mut group = c.benchmark_group("ledger_flush");
    group.sample_size(20);
    group.throughput(Throughput::Elements(KEYS as u64 * PER_KEY));

    let mut drainer = Drainer::new("bench".into(), 0, BATCH_MAX);
    group.bench_function("drain/10000_keys", |b| {
        b.iter_batched(|| count(&table), |()| drainer.drain(&table, 0, |_batch| Ok(())), BatchSize::PerIteration)
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let mut journal = Journal::open(&dir.path().join("usage.db")).expect("journal");
    let mut drainer = Drainer::new("bench".into(), 0, BATCH_MAX);
    let mut hour = 0;
    group.bench_function("window_into_sqlite/10000_keys", |b| {
        b.iter_batched(
            || count(&table),
            |()| {
                // A new hour each window, so every row is an insert as in a window's first flush;
                // later windows of the same hour are updates of the same rows.
                hour += 3600;
                drainer.drain(&table, hour, |batch| {
                    journal.apply(&batch, false, 1).expect("committed");
                    Ok(())
                })
            },
            BatchSize::PerIteration,
        )
    });
    if let Ok(url) = std::env::var("PRICEBEAST_BENCH_POSTGRES") {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let fleet = Fleet::new(&url, 4, 10_000, Arc::new(Counters::new(0))).expect("a PostgreSQL URL");
        runtime.block_on(fleet.migrate()).expect("PostgreSQL reachable and migrated");
        let mut drainer = Drainer::new("bench-pg".into(), next_seq(&runtime, &fleet), BATCH_MAX);
        let mut hour = 0;
        group.bench_function("window_into_postgres/10000_keys", |b| {
            b.iter_batched(
                || {
                    count(&table);
                    hour += 3600;
                    let mut batches = Vec::new();
                    drainer.drain(&table, hour, |batch| {
                        batches.push(batch);
                        Ok(())
                    });
                    batches
                },
                |batches| {
                    runtime.block_on(async {
                        for batch in &batches {
                            fleet.apply(batch).await.expect("shipped");
                        }
                    })
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn next_seq(runtime: &tokio::runtime::Runtime, fleet: &Fleet) -> u64 {
    runtime.block_on(fleet.next_seq("bench-pg")).expect("PostgreSQL reachable")
}

criterion_group!(benches, ledger_flush);
criterion_main!(benches);
