//! The node's SQLite journal: the ledger itself when the store is SQLite, and the outbox in front
//! of PostgreSQL when it is not. WAL with full sync, so a committed batch survives a power loss;
//! one transaction per batch; the batch id recorded in `flushes` in the same transaction, so a
//! retried batch is never applied twice.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};

use crate::usage::ledger::batch::{Batch, Row};
use crate::usage::CHANNELS;

/// The schema, one step per version; `PRAGMA user_version` says how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: hourly rows per key, the batch ids applied, the outbox for PostgreSQL.
    "CREATE TABLE usage_hourly (
        key_id   TEXT    NOT NULL,
        hour     INTEGER NOT NULL,  -- unix seconds of the hour's start (UTC)
        tier     TEXT    NOT NULL,
        http     INTEGER NOT NULL DEFAULT 0,
        udp      INTEGER NOT NULL DEFAULT 0,
        sessions INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, hour)
    ) WITHOUT ROWID;
    CREATE INDEX usage_hourly_by_hour ON usage_hourly (hour);
    CREATE TABLE flushes (
        node       TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        rows       INTEGER NOT NULL,
        requests   INTEGER NOT NULL,
        applied_ms INTEGER NOT NULL,
        PRIMARY KEY (node, seq)
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        node TEXT    NOT NULL,
        seq  INTEGER NOT NULL,
        rows TEXT    NOT NULL,  -- the batch's rows, JSON
        PRIMARY KEY (node, seq)
    ) WITHOUT ROWID;",
    // 2: the journal's own random id, part of every batch id it makes, so two journals under one
    // node name (a node rebuilt with a new disk, two nodes left with the same host name) never
    // make the same id and have one's batches taken for the other's.
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (name, value) VALUES ('journal_id', lower(hex(randomblob(6))));",
];

/// Batch ids are kept this long: far beyond any retry of a batch still in a node's memory.
pub const FLUSH_IDS_KEEP_MS: u64 = 30 * 86_400_000;

/// What applying a batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    New,
    /// The batch id was already there: nothing was added.
    Duplicate,
}

/// One key's counts in one bucket, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub http: u64,
    pub udp: u64,
    pub sessions: u64,
}

impl Counts {
    pub fn requests(&self) -> u64 {
        self.http + self.udp + self.sessions
    }

    pub fn add(&mut self, other: &Counts) {
        self.http += other.http;
        self.udp += other.udp;
        self.sessions += other.sessions;
    }
}

pub struct Journal {
    conn: Connection,
}

impl Journal {
    /// Opens (creating) the journal and brings its schema up to date.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut journal = Self { conn };
        journal.migrate()?;
        Ok(journal)
    }

    /// Opens an existing journal for reading only (reports, the command line).
    pub fn open_read_only(path: &Path) -> rusqlite::Result<Self> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Self { conn })
    }

    fn migrate(&mut self) -> rusqlite::Result<()> {
        let version: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "the usage database has schema version {version}, newer than this build's {}",
                MIGRATIONS.len()
            )));
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "usage journal schema migrated");
        }
        Ok(())
    }

    /// The journal's random id (made when it was created).
    pub fn journal_id(&self) -> rusqlite::Result<String> {
        self.conn.query_row("SELECT value FROM meta WHERE name = 'journal_id'", [], |r| r.get(0))
    }

    /// The sequence number `node`'s next batch takes: one past any it has applied or queued.
    pub fn next_seq(&self, node: &str) -> rusqlite::Result<u64> {
        let last: Option<i64> = self.conn.query_row(
            "SELECT MAX(seq) FROM (SELECT seq FROM flushes WHERE node = ?1 UNION ALL SELECT seq FROM outbox WHERE node = ?1)",
            params![node],
            |r| r.get(0),
        )?;
        Ok(last.map_or(0, |s| u64::try_from(s).unwrap_or(0) + 1))
    }

    /// Applies `batch` in one transaction, unless its id was applied before; with `outbox`, also
    /// queues it for PostgreSQL in the same transaction.
    pub fn apply(&mut self, batch: &Batch, outbox: bool, now_ms: u64) -> rusqlite::Result<Applied> {
        let tx = self.conn.transaction()?;
        let seq = to_i64(batch.seq);
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO flushes (node, seq, rows, requests, applied_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&*batch.node, seq, batch.rows.len() as i64, to_i64(batch.requests()), to_i64(now_ms)],
        )?;
        if inserted == 0 {
            return Ok(Applied::Duplicate);
        }
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO usage_hourly (key_id, hour, tier, http, udp, sessions) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (key_id, hour) DO UPDATE SET tier = excluded.tier,
                   http = http + excluded.http, udp = udp + excluded.udp, sessions = sessions + excluded.sessions",
            )?;
            for row in &batch.rows {
                let [http, udp, sessions] = row.counts.map(to_i64);
                upsert.execute(params![row.key_id, row.hour_s, row.tier, http, udp, sessions])?;
            }
        }
        if outbox {
            let rows =
                serde_json::to_string(&batch.rows).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
            tx.execute("INSERT INTO outbox (node, seq, rows) VALUES (?1, ?2, ?3)", params![&*batch.node, seq, rows])?;
        }
        tx.commit()?;
        Ok(Applied::New)
    }

    /// Forgets batch ids older than [`FLUSH_IDS_KEEP_MS`].
    pub fn prune_flushes(&self, now_ms: u64) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM flushes WHERE applied_ms < ?1",
            params![to_i64(now_ms.saturating_sub(FLUSH_IDS_KEEP_MS))],
        )
    }

    /// The oldest batches waiting for PostgreSQL, in the order they were made.
    pub fn outbox(&self, limit: usize) -> rusqlite::Result<Vec<Batch>> {
        let mut stmt = self.conn.prepare_cached("SELECT node, seq, rows FROM outbox ORDER BY seq LIMIT ?1")?;
        let batches = stmt.query_map(params![limit as i64], |r| {
            let (node, seq, rows): (String, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            Ok((node, seq, rows))
        })?;
        let mut out = Vec::new();
        for batch in batches {
            let (node, seq, rows) = batch?;
            let rows: Vec<Row> = serde_json::from_str(&rows)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into()))?;
            out.push(Batch { node: node.into(), seq: u64::try_from(seq).unwrap_or(0), rows });
        }
        Ok(out)
    }

    /// Batches still waiting for PostgreSQL, and the requests they hold.
    pub fn outbox_len(&self) -> rusqlite::Result<u64> {
        let n: i64 = self.conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Removes a batch PostgreSQL has.
    pub fn shipped(&self, node: &str, seq: u64) -> rusqlite::Result<()> {
        self.conn.execute("DELETE FROM outbox WHERE node = ?1 AND seq = ?2", params![node, to_i64(seq)])?;
        Ok(())
    }

    /// Every key's requests with an hour in [from_s, to_s).
    pub fn totals(&self, from_s: i64, to_s: i64) -> rusqlite::Result<Vec<(String, String, Counts)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key_id, MAX(tier), SUM(http), SUM(udp), SUM(sessions) FROM usage_hourly
             WHERE hour >= ?1 AND hour < ?2 GROUP BY key_id ORDER BY key_id",
        )?;
        let rows = stmt.query_map(params![from_s, to_s], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, counts(r, 2)?))
        })?;
        rows.collect()
    }

    /// One key's rows with an hour in [from_s, to_s), oldest first.
    pub fn hours(&self, key_id: &str, from_s: i64, to_s: i64) -> rusqlite::Result<Vec<(i64, Counts)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT hour, http, udp, sessions FROM usage_hourly WHERE key_id = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY hour",
        )?;
        let rows = stmt.query_map(params![key_id, from_s, to_s], |r| Ok((r.get::<_, i64>(0)?, counts(r, 1)?)))?;
        rows.collect()
    }
}

fn counts(r: &rusqlite::Row<'_>, from: usize) -> rusqlite::Result<Counts> {
    let get = |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(r.get::<_, i64>(from + i)?).unwrap_or(0)) };
    Ok(Counts { http: get(0)?, udp: get(1)?, sessions: get(2)? })
}

/// SQLite integers are signed 64-bit; a count never comes near the limit.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const _: () = assert!(CHANNELS == 3);

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, rows: &[(&str, i64, [u64; 3])]) -> Batch {
        Batch {
            node: "n1".into(),
            seq,
            rows: rows
                .iter()
                .map(|(k, h, c)| Row { key_id: (*k).into(), tier: "public".into(), hour_s: *h, counts: *c })
                .collect(),
        }
    }

    #[test]
    fn a_batch_applied_twice_counts_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut journal = Journal::open(&dir.path().join("usage.db")).expect("opened");
        let b = batch(0, &[("alice", 3600, [5, 1, 0])]);
        assert_eq!(journal.apply(&b, false, 1).expect("applied"), Applied::New);
        assert_eq!(journal.apply(&b, false, 2).expect("applied"), Applied::Duplicate);
        let totals = journal.totals(0, 7200).expect("read");
        assert_eq!(totals, vec![("alice".into(), "public".into(), Counts { http: 5, udp: 1, sessions: 0 })]);
        assert_eq!(journal.next_seq("n1").expect("seq"), 1);
        assert_eq!(journal.next_seq("n2").expect("seq"), 0);
    }

    #[test]
    fn rows_add_up_by_key_and_hour() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut journal = Journal::open(&dir.path().join("usage.db")).expect("opened");
        journal.apply(&batch(0, &[("a", 0, [1, 0, 0]), ("b", 0, [0, 2, 0])]), false, 1).expect("applied");
        journal.apply(&batch(1, &[("a", 0, [1, 0, 1]), ("a", 3600, [4, 0, 0])]), false, 1).expect("applied");
        assert_eq!(
            journal.hours("a", 0, 7200).expect("read"),
            vec![(0, Counts { http: 2, udp: 0, sessions: 1 }), (3600, Counts { http: 4, udp: 0, sessions: 0 })]
        );
        let totals = journal.totals(0, 3600).expect("read");
        assert_eq!(totals.iter().map(|t| t.2.requests()).collect::<Vec<_>>(), [3, 2]);
    }

    #[test]
    fn the_outbox_keeps_batches_in_order_until_shipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("usage.db");
        let mut journal = Journal::open(&path).expect("opened");
        for seq in 0..3 {
            journal.apply(&batch(seq, &[("a", 0, [seq + 1, 0, 0])]), true, 1).expect("applied");
        }
        let waiting = journal.outbox(10).expect("read");
        assert_eq!(waiting.iter().map(|b| b.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(waiting[2].rows[0].counts, [3, 0, 0]);
        journal.shipped("n1", 0).expect("removed");
        drop(journal);
        // Reopened (a restart): what was not shipped is still there, and numbering goes on.
        let journal = Journal::open(&path).expect("reopened");
        assert_eq!(journal.outbox_len().expect("count"), 2);
        assert_eq!(journal.next_seq("n1").expect("seq"), 3);
        let id = journal.journal_id().expect("an id");
        assert_eq!(id.len(), 12);
        let other = Journal::open(&dir.path().join("other.db")).expect("another journal");
        assert_ne!(other.journal_id().expect("an id"), id, "each journal has its own id");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("usage.db");
        drop(Journal::open(&path).expect("opened"));
        let conn = Connection::open(&path).expect("raw open");
        conn.pragma_update(None, "user_version", 99).expect("set");
        drop(conn);
        let err = Journal::open(&path).err().expect("refused").to_string();
        assert!(err.contains("newer than this build"), "{err}");
    }
}
