//! The fleet's ledger in PostgreSQL: every node writes the same tables, each batch upserted in one
//! statement (UNNEST) and recorded by id in the same transaction, so a batch shipped twice (a
//! retry after a commit whose answer was lost) counts once. A small pool of connections, opened
//! on demand, with a deadline on every connect and statement; `db_open`, `db_in_use` and
//! `db_wait_count` report it.

use std::sync::Arc;
#[allow(clippy::disallowed_types)] // The pool's idle list, on the control plane only: no shard touches it.
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_postgres::{Client, IsolationLevel, NoTls, Transaction};

use crate::counters::{Counters, Gauge};
use crate::usage::ledger::batch::Batch;
use crate::usage::ledger::sqlite::{Applied, Counts};

/// The schema, one step per version, each run under an advisory lock so that nodes starting at
/// once migrate it once.
const MIGRATIONS: &[&str] = &["CREATE TABLE usage_hourly (
        key_id   TEXT   NOT NULL,
        hour     BIGINT NOT NULL,
        tier     TEXT   NOT NULL,
        http     BIGINT NOT NULL DEFAULT 0,
        udp      BIGINT NOT NULL DEFAULT 0,
        sessions BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, hour)
    );
    CREATE INDEX usage_hourly_by_hour ON usage_hourly (hour);
    CREATE TABLE flushes (
        node       TEXT        NOT NULL,
        seq        BIGINT      NOT NULL,
        rows       INTEGER     NOT NULL,
        requests   BIGINT      NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (node, seq)
    );"];

/// An arbitrary constant for `pg_advisory_xact_lock`: the schema's migrations.
const MIGRATION_LOCK: i64 = 0x7072_6963_6562;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("PostgreSQL did not answer within {0} ms")]
    Timeout(u64),
    #[error("the PostgreSQL schema has version {0}, newer than this build's")]
    NewerSchema(i32),
}

pub struct Fleet {
    config: tokio_postgres::Config,
    #[allow(clippy::disallowed_types)] // See the import.
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
    timeout_ms: u64,
    counters: Arc<Counters>,
}

/// A connection taken from the pool; back to it when dropped (unless it broke).
struct Pooled<'f> {
    fleet: &'f Fleet,
    client: Option<Client>,
    _permit: tokio::sync::SemaphorePermit<'f>,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let gauges = self.fleet.counters.control();
        gauges.gauge_add(Gauge::DbInUse, -1);
        match self.client.take() {
            Some(client) if !client.is_closed() => {
                if let Ok(mut idle) = self.fleet.idle.lock() {
                    idle.push(client);
                    return;
                }
                gauges.gauge_add(Gauge::DbOpen, -1);
            }
            _ => gauges.gauge_add(Gauge::DbOpen, -1),
        }
    }
}

impl Pooled<'_> {
    fn client(&mut self) -> &mut Client {
        // Some from creation until drop.
        self.client.as_mut().expect("a pooled connection holds its client until dropped")
    }
}

impl Fleet {
    /// A pool for `url` (not connected yet: the first statement connects).
    #[allow(clippy::disallowed_types)] // See the import.
    pub fn new(url: &str, max_open: usize, timeout_ms: u64, counters: Arc<Counters>) -> Result<Self, FleetError> {
        let mut config: tokio_postgres::Config = url.parse()?;
        config.connect_timeout(Duration::from_millis(timeout_ms));
        config.application_name("pricebeast");
        Ok(Self { config, idle: Mutex::new(Vec::new()), permits: Semaphore::new(max_open), timeout_ms, counters })
    }

    async fn deadline<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, FleetError>>,
    ) -> Result<T, FleetError> {
        tokio::time::timeout(Duration::from_millis(self.timeout_ms), work)
            .await
            .unwrap_or(Err(FleetError::Timeout(self.timeout_ms)))
    }

    async fn take(&self) -> Result<Pooled<'_>, FleetError> {
        let gauges = self.counters.control();
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                gauges.gauge_add(Gauge::DbWaitCount, 1);
                self.deadline(async { self.permits.acquire().await.map_err(|_| FleetError::Timeout(0)) }).await?
            }
        };
        // An idle connection may have been closed since (PostgreSQL restarted, a proxy timed
        // it out): forget those rather than fail the statement on them.
        let reused = loop {
            match self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
                Some(client) if client.is_closed() => gauges.gauge_add(Gauge::DbOpen, -1),
                other => break other,
            }
        };
        let client = match reused {
            Some(client) => client,
            None => {
                let (client, connection) = self.deadline(async { Ok(self.config.connect(NoTls).await?) }).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("PostgreSQL connection ended: {e}");
                    }
                });
                gauges.gauge_add(Gauge::DbOpen, 1);
                client
            }
        };
        gauges.gauge_add(Gauge::DbInUse, 1);
        Ok(Pooled { fleet: self, client: Some(client), _permit: permit })
    }

    /// Brings the schema up to date.
    pub async fn migrate(&self) -> Result<(), FleetError> {
        let mut pooled = self.take().await?;
        self.deadline(async {
            let tx = pooled.client().transaction().await?;
            // CREATE TABLE IF NOT EXISTS would log a NOTICE on every start.
            tx.batch_execute("SET LOCAL client_min_messages = warning").await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS pricebeast_schema (version INTEGER NOT NULL)").await?;
            let version: i32 =
                tx.query_opt("SELECT version FROM pricebeast_schema", &[]).await?.map_or(0, |row| row.get(0));
            if version > MIGRATIONS.len() as i32 {
                return Err(FleetError::NewerSchema(version));
            }
            for step in MIGRATIONS.iter().skip(version as usize) {
                tx.batch_execute(step).await?;
            }
            tx.execute("DELETE FROM pricebeast_schema", &[]).await?;
            tx.execute("INSERT INTO pricebeast_schema (version) VALUES ($1)", &[&(MIGRATIONS.len() as i32)]).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Applies `batch` in one transaction unless its id is already there.
    pub async fn apply(&self, batch: &Batch) -> Result<Applied, FleetError> {
        let mut pooled = self.take().await?;
        self.deadline(async {
            let tx = pooled.client().transaction().await?;
            let node: &str = &batch.node;
            let (seq, rows, requests) = (to_i64(batch.seq), batch.rows.len() as i32, to_i64(batch.requests()));
            let inserted = tx
                .execute(
                    "INSERT INTO flushes (node, seq, rows, requests) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&node, &seq, &rows, &requests],
                )
                .await?;
            if inserted == 0 {
                return Ok(Applied::Duplicate);
            }
            let keys: Vec<&str> = batch.rows.iter().map(|r| r.key_id.as_str()).collect();
            let hours: Vec<i64> = batch.rows.iter().map(|r| r.hour_s).collect();
            let tiers: Vec<&str> = batch.rows.iter().map(|r| r.tier.as_str()).collect();
            let column = |i: usize| -> Vec<i64> { batch.rows.iter().map(|r| to_i64(r.counts[i])).collect() };
            let (http, udp, sessions) = (column(0), column(1), column(2));
            tx.execute(
                "INSERT INTO usage_hourly (key_id, hour, tier, http, udp, sessions)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
                 ON CONFLICT (key_id, hour) DO UPDATE SET tier = EXCLUDED.tier,
                   http = usage_hourly.http + EXCLUDED.http, udp = usage_hourly.udp + EXCLUDED.udp,
                   sessions = usage_hourly.sessions + EXCLUDED.sessions",
                &[&keys, &hours, &tiers, &http, &udp, &sessions],
            )
            .await?;
            tx.commit().await?;
            Ok(Applied::New)
        })
        .await
    }

    /// Every key's requests with an hour in [from_s, to_s), by key, and which of `pending` (ids of
    /// batches still in a node's outbox) PostgreSQL already has, both read in one snapshot: a
    /// batch shipped whose outbox row was not removed yet (a crash between the two) must be
    /// counted from here only.
    pub async fn totals(
        &self,
        from_s: i64,
        to_s: i64,
        pending: &[(String, u64)],
    ) -> Result<(Vec<(String, String, Counts)>, Vec<(String, u64)>), FleetError> {
        let mut pooled = self.take().await?;
        self.deadline(async {
            let tx = snapshot(pooled.client()).await?;
            let rows = tx
                .query(
                    "SELECT key_id, MAX(tier), SUM(http)::bigint, SUM(udp)::bigint, SUM(sessions)::bigint FROM usage_hourly
                     WHERE hour >= $1 AND hour < $2 GROUP BY key_id ORDER BY key_id",
                    &[&from_s, &to_s],
                )
                .await?;
            let rows = rows.iter().map(|r| (r.get(0), r.get(1), counts(r.get(2), r.get(3), r.get(4)))).collect();
            let applied = applied(&tx, pending).await?;
            tx.commit().await?;
            Ok((rows, applied))
        })
        .await
    }

    /// One key's hourly rows in [from_s, to_s), oldest first, and which of `pending` PostgreSQL
    /// already has (as [`Fleet::totals`]).
    pub async fn hours(
        &self,
        key_id: &str,
        from_s: i64,
        to_s: i64,
        pending: &[(String, u64)],
    ) -> Result<(Vec<(i64, Counts)>, Vec<(String, u64)>), FleetError> {
        let mut pooled = self.take().await?;
        self.deadline(async {
            let tx = snapshot(pooled.client()).await?;
            let rows = tx
                .query(
                    "SELECT hour, http, udp, sessions FROM usage_hourly WHERE key_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour",
                    &[&key_id, &from_s, &to_s],
                )
                .await?;
            let rows = rows.iter().map(|r| (r.get(0), counts(r.get(1), r.get(2), r.get(3)))).collect();
            let applied = applied(&tx, pending).await?;
            tx.commit().await?;
            Ok((rows, applied))
        })
        .await
    }

    /// The sequence number `node`'s next batch must take to be new here: one past the highest
    /// PostgreSQL has from it (0 when none). A node whose journal was lost (a new disk, the same
    /// name) would otherwise number from 0 again and see its batches dropped as duplicates.
    pub async fn next_seq(&self, node: &str) -> Result<u64, FleetError> {
        let mut pooled = self.take().await?;
        self.deadline(async {
            let row = pooled.client().query_one("SELECT MAX(seq) FROM flushes WHERE node = $1", &[&node]).await?;
            let last: Option<i64> = row.get(0);
            Ok(last.map_or(0, |s| u64::try_from(s).unwrap_or(0) + 1))
        })
        .await
    }

    /// Forgets batch ids older than the journal keeps its own.
    pub async fn prune_flushes(&self) -> Result<u64, FleetError> {
        let mut pooled = self.take().await?;
        let days = (crate::usage::ledger::sqlite::FLUSH_IDS_KEEP_MS / 86_400_000) as i32;
        self.deadline(async {
            Ok(pooled
                .client()
                .execute("DELETE FROM flushes WHERE applied_at < now() - make_interval(days => $1)", &[&days])
                .await?)
        })
        .await
    }
}

/// A read-only transaction whose statements all see one snapshot.
async fn snapshot(client: &mut Client) -> Result<Transaction<'_>, tokio_postgres::Error> {
    client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await
}

/// Which of the batch ids `pending` are in `flushes`.
async fn applied(tx: &Transaction<'_>, pending: &[(String, u64)]) -> Result<Vec<(String, u64)>, tokio_postgres::Error> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let nodes: Vec<&str> = pending.iter().map(|(node, _)| node.as_str()).collect();
    let seqs: Vec<i64> = pending.iter().map(|(_, seq)| to_i64(*seq)).collect();
    let rows = tx
        .query(
            "SELECT f.node, f.seq FROM flushes f
             JOIN UNNEST($1::text[], $2::bigint[]) AS p (node, seq) ON f.node = p.node AND f.seq = p.seq",
            &[&nodes, &seqs],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0))).collect())
}

fn counts(http: i64, udp: i64, sessions: i64) -> Counts {
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Counts { http: n(http), udp: n(udp), sessions: n(sessions) }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
