//! The ledger at work on the control plane: opened (and its month loaded into the keys) before the
//! shards serve; then the drain every `usage.flush_ms`, the writer thread that commits batches
//! to the journal, the shipper that sends the journal's outbox to PostgreSQL, and the report
//! queries. One service task runs the drain and the shipper and, at shutdown (after the shards
//! have stopped counting), drains and writes everything that is left.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::clock::{Month, Now};
use crate::config::{Config, UsageConfig};
use crate::counters::{Counter, Counters, Gauge};
use crate::keys::KeyTable;
use crate::usage::ledger::batch::{hour_start_s, next_drain_ms, Batch};
use crate::usage::ledger::drain::{Drainer, Stopped};
use crate::usage::ledger::postgres::{Fleet, FleetError};
use crate::usage::ledger::report::{self, KeyTotal, Span};
use crate::usage::ledger::sqlite::{Counts, Journal};

/// Where usage is written (`usage.store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreKind {
    pub fn parse(store: &str) -> Result<Self, String> {
        if store == "memory" {
            return Ok(Self::Memory);
        }
        if let Some(path) = store.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err("sqlite: needs a path, as in sqlite:usage.db".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if store.starts_with("postgres://") || store.starts_with("postgresql://") {
            return match store.parse::<tokio_postgres::Config>() {
                Ok(_) => Ok(Self::Postgres(store.to_owned())),
                Err(e) => Err(format!("not a PostgreSQL URL: {e}")),
            };
        }
        Err("must be sqlite:PATH, postgres://USER@HOST/DB or memory".into())
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("usage journal {path}: {source}")]
    Journal { path: String, source: rusqlite::Error },
    #[error("usage store: {0}")]
    Fleet(#[from] FleetError),
    #[error("usage store: {0}")]
    Config(String),
    #[error("usage store: {0}")]
    Task(String),
    #[error("this server keeps usage in memory only (usage.store = \"memory\"): there is no ledger to report from")]
    NoLedger,
}

/// A report request handed over by a shard.
pub struct ReportJob {
    pub key_id: String,
    pub span: Span,
    pub reply: oneshot::Sender<ReportAnswer>,
}

/// What the shard writes back: 200 with the JSON body, or the store's failure.
#[derive(Debug)]
pub enum ReportAnswer {
    Ok(String),
    Failed(String),
}

/// The ledger, opened.
pub struct Ledger {
    kind: StoreKind,
    node: Arc<str>,
    config: UsageConfig,
    counters: Arc<Counters>,
    /// The journal's path, written by the writer thread only.
    journal_path: Option<PathBuf>,
    /// A second connection to the journal: outbox reads and SQLite reports.
    reader: Option<Arc<tokio::sync::Mutex<Journal>>>,
    fleet: Option<Arc<Fleet>>,
    next_seq: u64,
}

/// `path`, or beside the keys file when relative.
fn beside(keys_file: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    match keys_file.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.join(path),
        None => path.to_owned(),
    }
}

fn journal_error(path: &Path) -> impl FnOnce(rusqlite::Error) -> LedgerError + '_ {
    move |source| LedgerError::Journal { path: path.display().to_string(), source }
}

impl Ledger {
    /// Opens the store the config names: creates and migrates the journal, and for PostgreSQL
    /// tries its schema (a node starts even when PostgreSQL is down; batches then wait).
    pub async fn open(config: &Config, node: &str, counters: Arc<Counters>) -> Result<Self, LedgerError> {
        let usage = config.usage.clone();
        let kind = StoreKind::parse(&usage.store).map_err(LedgerError::Config)?;
        let journal_path = match &kind {
            StoreKind::Memory => None,
            StoreKind::Sqlite(path) => Some(beside(&config.keys.file, path)),
            StoreKind::Postgres(_) => Some(beside(&config.keys.file, &usage.journal)),
        };
        let mut next_seq = 0;
        let mut reader = None;
        // Batch ids are (node/journal id, seq): unique even where two journals share a node name.
        let mut node = node.to_owned();
        if let Some(path) = &journal_path {
            let journal = Journal::open(path).map_err(journal_error(path))?;
            node = format!("{node}/{}", journal.journal_id().map_err(journal_error(path))?);
            next_seq = journal.next_seq(&node).map_err(journal_error(path))?;
            reader = Some(Arc::new(tokio::sync::Mutex::new(journal)));
            counters.control().gauge_add(Gauge::DbOpen, 2);
        }
        let fleet = match &kind {
            StoreKind::Postgres(url) => {
                let fleet = Arc::new(Fleet::new(url, usage.db_max_open, usage.db_timeout_ms, Arc::clone(&counters))?);
                match fleet.migrate().await {
                    // Numbered past anything PostgreSQL has from this node, in case the journal
                    // is new while the node's name is not.
                    Ok(()) => match fleet.next_seq(&node).await {
                        Ok(seq) if seq > next_seq => {
                            tracing::warn!(
                                journal_next = next_seq,
                                next_seq = seq,
                                "usage store: PostgreSQL has later batches from this node than its journal; numbering on from PostgreSQL's"
                            );
                            next_seq = seq;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            counters.faults().count(crate::faults::Component::Ledger);
                            tracing::warn!("usage store: reading this node's last batch from PostgreSQL failed ({e})")
                        }
                    },
                    Err(e) => {
                        counters.faults().count(crate::faults::Component::Ledger);
                        tracing::warn!(
                            "usage store: PostgreSQL not ready at start ({e}); batches wait in the journal until it is"
                        )
                    }
                }
                Some(fleet)
            }
            _ => None,
        };
        Ok(Self { kind, node: node.into(), config: usage, counters, journal_path, reader, fleet, next_seq })
    }

    pub fn kind(&self) -> &StoreKind {
        &self.kind
    }

    pub fn journal_path(&self) -> Option<&Path> {
        self.journal_path.as_deref()
    }

    /// Runs a journal query off the runtime's thread.
    async fn journal<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Journal) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let reader = Arc::clone(self.reader.as_ref().ok_or(LedgerError::NoLedger)?);
        let path = self.journal_path.clone().unwrap_or_default();
        let counters = Arc::clone(&self.counters);
        tokio::task::spawn_blocking(move || {
            // A blocking-pool thread: waiting for the lock here blocks no task.
            let journal = reader.blocking_lock();
            counters.control().gauge_add(Gauge::DbInUse, 1);
            let result = query(&journal);
            counters.control().gauge_add(Gauge::DbInUse, -1);
            result.map_err(journal_error(&path))
        })
        .await
        .map_err(|e| LedgerError::Task(e.to_string()))?
    }

    /// Every key's counts with an hour in [from_s, to_s): from PostgreSQL (the fleet's) plus this
    /// node's batches not shipped yet, or from the journal.
    pub async fn totals(&self, from_s: i64, to_s: i64) -> Result<Vec<KeyTotal>, LedgerError> {
        let rows = match &self.fleet {
            Some(fleet) => {
                let (waiting, ids) = self.waiting().await?;
                let (mut rows, applied) = fleet.totals(from_s, to_s, &ids).await?;
                let mut extra: FxHashMap<String, (String, Counts)> = FxHashMap::default();
                for row in unshipped(&waiting, &applied).filter(|r| (from_s..to_s).contains(&r.hour_s)) {
                    let entry =
                        extra.entry(row.key_id.clone()).or_insert_with(|| (row.tier.clone(), Counts::default()));
                    entry.1.add(&Counts { http: row.counts[0], udp: row.counts[1], sessions: row.counts[2] });
                }
                for (key, _, counts) in &mut rows {
                    if let Some((_, more)) = extra.remove(key) {
                        counts.add(&more);
                    }
                }
                rows.extend(extra.into_iter().map(|(k, (t, c))| (k, t, c)));
                rows.sort_by(|a, b| a.0.cmp(&b.0));
                rows
            }
            None => self.journal(move |j| j.totals(from_s, to_s)).await?,
        };
        Ok(rows.into_iter().map(|(key_id, tier, counts)| KeyTotal { key_id, tier, counts }).collect())
    }

    /// One key's hourly rows in [from_s, to_s).
    pub async fn hours(&self, key_id: &str, from_s: i64, to_s: i64) -> Result<Vec<(i64, Counts)>, LedgerError> {
        match &self.fleet {
            Some(fleet) => {
                let (waiting, ids) = self.waiting().await?;
                let (mut hours, applied) = fleet.hours(key_id, from_s, to_s, &ids).await?;
                for row in unshipped(&waiting, &applied) {
                    if row.key_id == key_id && (from_s..to_s).contains(&row.hour_s) {
                        hours.push((
                            row.hour_s,
                            Counts { http: row.counts[0], udp: row.counts[1], sessions: row.counts[2] },
                        ));
                    }
                }
                hours.sort_by_key(|h| h.0);
                Ok(hours)
            }
            None => {
                let key = key_id.to_owned();
                self.journal(move |j| j.hours(&key, from_s, to_s)).await
            }
        }
    }

    /// The outbox, with its batch ids. Read before PostgreSQL is: a batch shipped in between is
    /// then in PostgreSQL's answer and reported there as applied, so it counts once (read the
    /// other way round it would count twice, or not at all once removed from the outbox).
    async fn waiting(&self) -> Result<(Vec<Batch>, Vec<(String, u64)>), LedgerError> {
        let waiting = self.journal(|j| j.outbox(usize::MAX >> 1)).await?;
        let ids = waiting.iter().map(|b| (b.node.to_string(), b.seq)).collect();
        Ok((waiting, ids))
    }

    /// Adds the ledger's count for `month` to every key of `table` not restored yet: all of them
    /// at start (before the shards serve), the new ones after a keys reload. With PostgreSQL
    /// down at start, the node's own journal is the fallback (logged).
    pub async fn restore(&self, table: &KeyTable, month: Month) -> Result<RestoreSummary, LedgerError> {
        let mut summary = RestoreSummary::default();
        if self.kind == StoreKind::Memory {
            return Ok(summary);
        }
        let pending: Vec<_> = table.entries().filter(|e| !e.state.restored.load(Ordering::Relaxed)).collect();
        if pending.is_empty() {
            return Ok(summary);
        }
        let from_s = (month.start_unix_ms() / 1000) as i64;
        let to_s = (Month(month.0 + 1).start_unix_ms() / 1000) as i64;
        let totals = match self.totals(from_s, to_s).await {
            Ok(totals) => totals,
            Err(e) if self.fleet.is_some() => {
                self.counters.faults().count(crate::faults::Component::Ledger);
                tracing::warn!(
                    "usage store: cannot read the month from PostgreSQL ({e}); caps start from this node's own journal"
                );
                let rows = self.journal(move |j| j.totals(from_s, to_s)).await?;
                rows.into_iter().map(|(key_id, tier, counts)| KeyTotal { key_id, tier, counts }).collect()
            }
            Err(e) => return Err(e),
        };
        let by_name: FxHashMap<&str, u64> = totals.iter().map(|t| (t.key_id.as_str(), t.counts.requests())).collect();
        for entry in pending {
            if entry.state.restored.swap(true, Ordering::Relaxed) {
                continue;
            }
            if let Some(&count) = by_name.get(entry.name.as_ref()) {
                entry.state.usage.restore(month, count);
                summary.keys += 1;
                summary.requests += count;
            }
        }
        Ok(summary)
    }

    /// Starts the writer thread; the service task (`run`) does the rest.
    pub fn start(self: &Arc<Self>) -> Result<Running, LedgerError> {
        let (tx, rx) = mpsc::channel(self.config.queue_max);
        let shipped = Arc::new(Notify::new());
        let give_up = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (done_tx, done_rx) = oneshot::channel();
        let writer = match &self.journal_path {
            None => None,
            Some(path) => {
                let journal = Journal::open(path).map_err(journal_error(path))?;
                let work = Writer {
                    journal,
                    outbox: self.fleet.is_some(),
                    counters: Arc::clone(&self.counters),
                    wrote: Arc::clone(&shipped),
                    give_up: Arc::clone(&give_up),
                    written: Arc::clone(&written),
                };
                std::thread::Builder::new()
                    .name("usage-writer".into())
                    .spawn(move || {
                        work.run(rx);
                        let _ = done_tx.send(());
                    })
                    .map_err(|e| LedgerError::Task(format!("starting the usage writer: {e}")))?;
                Some(done_rx)
            }
        };
        Ok(Running { tx, writer, wrote: shipped, give_up, written })
    }
}

/// The rows of the outbox's batches that PostgreSQL does not have yet (`applied` being those it
/// has).
fn unshipped<'b>(
    waiting: &'b [Batch],
    applied: &'b [(String, u64)],
) -> impl Iterator<Item = &'b crate::usage::ledger::Row> {
    let applied: rustc_hash::FxHashSet<(&str, u64)> = applied.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    waiting.iter().filter(move |b| !applied.contains(&(&*b.node, b.seq))).flat_map(|b| &b.rows)
}

/// What `restore` added to the keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    pub keys: u64,
    pub requests: u64,
}

/// The writer thread's side, held by the service task.
pub struct Running {
    tx: mpsc::Sender<Batch>,
    writer: Option<oneshot::Receiver<()>>,
    /// Rung after every batch the writer commits (the shipper's cue).
    wrote: Arc<Notify>,
    give_up: Arc<AtomicBool>,
    /// Requests the writer has committed.
    written: Arc<AtomicU64>,
}

/// The ledger's service: drains every flush window (and ships the outbox to PostgreSQL) until
/// `stop`, the window and the batch size being the active profile's (`tuning`, read at each
/// drain); then, the shards having stopped counting, drains and writes what is left within
/// `deadline`.
pub async fn run(
    ledger: Arc<Ledger>,
    running: Running,
    keys: Arc<dyn Fn() -> Arc<KeyTable> + Send + Sync>,
    tuning: Arc<crate::profile::live::Tuning>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    deadline: Duration,
) {
    let Running { tx, writer, wrote, give_up, written } = running;
    let counters = Arc::clone(&ledger.counters);
    let mut drainer = Drainer::new(Arc::clone(&ledger.node), ledger.next_seq, ledger.config.batch_max);
    let shipper = ledger.fleet.as_ref().map(|_| {
        let (ship_stop_tx, ship_stop) = tokio::sync::watch::channel(false);
        (tokio::spawn(ship(Arc::clone(&ledger), Arc::clone(&wrote), ship_stop)), ship_stop_tx)
    });
    if ledger.kind == StoreKind::Memory {
        // Nothing keeps the counts: the deltas just accumulate on their keys (u64: forever).
        let _ = stop.wait_for(|s| *s).await;
        return;
    }
    let mut pruned_hour = 0;
    let deliver = |batch: Batch| tx.try_send(batch).map_err(|e| e.into_inner());
    let mut switches = tuning.switches();
    loop {
        let now = Now::read().unix_ms;
        let (flush_ms, batch_max) = {
            let active = tuning.settings();
            (active.settings.usage_flush_ms, active.settings.usage_batch_max)
        };
        drainer.set_batch_max(batch_max);
        let due = next_drain_ms(now, flush_ms);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(due.saturating_sub(now))) => {}
            _ = stop.wait_for(|s| *s) => break,
            // A profile switch: the window ends now and the next follows the new settings.
            Ok(()) = switches.changed() => {}
        }
        // The counts belong to the window that ends at `due`, which never spans an hour boundary.
        let drained = drainer.drain(&keys(), hour_start_s(due - 1), deliver);
        counters.control().add(Counter::BgSubmitted, drained.batches);
        counters.control().add(Counter::UsageRowsQueued, drained.rows);
        if hour_start_s(due) != pruned_hour {
            pruned_hour = hour_start_s(due);
            prune(&ledger).await;
        }
    }
    let started = tokio::time::Instant::now();
    let before = written.load(Ordering::Relaxed);
    let (mut batches, mut rows, mut requests) = (0, 0, 0);
    loop {
        let drained = drainer.drain(&keys(), hour_start_s(Now::read().unix_ms), deliver);
        counters.control().add(Counter::BgSubmitted, drained.batches);
        counters.control().add(Counter::UsageRowsQueued, drained.rows);
        (batches, rows, requests) = (batches + drained.batches, rows + drained.rows, requests + drained.requests);
        if drained.stopped == Stopped::Done || started.elapsed() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(tx);
    if let Some(done) = writer {
        let left = deadline.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, done).await.is_err() {
            give_up.store(true, Ordering::Relaxed);
        }
    }
    let flushed = written.load(Ordering::Relaxed) - before;
    let unwritten = unflushed(&keys());
    if unwritten > 0 || give_up.load(Ordering::Relaxed) {
        tracing::error!(
            batches,
            rows,
            requests,
            written = flushed,
            left_on_keys = unwritten,
            "usage ledger: the shutdown deadline passed before every count was written; the rest is lost"
        );
    } else {
        tracing::info!(batches, rows, requests, written = flushed, "usage ledger: every count written at shutdown");
    }
    if let Some((task, ship_stop)) = shipper {
        let _ = ship_stop.send(true);
        let left = deadline.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, task).await.is_err() {
            tracing::warn!("usage ledger: PostgreSQL shipping stopped at the deadline; the journal keeps the rest for the next start");
        }
    }
}

fn unflushed(table: &KeyTable) -> u64 {
    table.entries().map(|e| e.state.usage.unflushed()).sum()
}

async fn prune(ledger: &Ledger) {
    let now_ms = Now::read().unix_ms;
    if let Err(e) = ledger.journal(move |j| j.prune_flushes(now_ms)).await {
        ledger.counters.faults().count(crate::faults::Component::Ledger);
        tracing::warn!("usage journal: pruning old batch ids failed: {e}");
    }
    if let Some(fleet) = &ledger.fleet {
        if let Err(e) = fleet.prune_flushes().await {
            tracing::debug!("usage store: pruning old batch ids in PostgreSQL failed: {e}");
        }
    }
}

/// Sends the journal's outbox to PostgreSQL in order, oldest first; on failure waits (backing off
/// to 5 s) and tries the same batch again. At `stop`, one last pass over what is waiting.
async fn ship(ledger: Arc<Ledger>, wrote: Arc<Notify>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(fleet) = ledger.fleet.clone() else { return };
    let counters = Arc::clone(&ledger.counters);
    let mut backoff = Duration::from_millis(100);
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut migrated = false;
    loop {
        let stopping = *stop.borrow();
        let waiting = match ledger.journal(|j| j.outbox(64)).await {
            Ok(waiting) => waiting,
            Err(e) => {
                counters.faults().count(crate::faults::Component::Ledger);
                tracing::error!("usage journal: reading the outbox failed: {e}");
                Vec::new()
            }
        };
        let mut failed = false;
        if !waiting.is_empty() && !migrated {
            match fleet.migrate().await {
                Ok(()) => migrated = true,
                Err(e) => {
                    counters.control().inc(Counter::BatchFlushErrors);
                    counters.faults().count(crate::faults::Component::Ledger);
                    log_failure(&mut failing_since, &e.to_string());
                    failed = true;
                }
            }
        }
        for batch in &waiting {
            if failed {
                break;
            }
            match fleet.apply(batch).await {
                Ok(_) => {
                    let (node, seq) = (batch.node.to_string(), batch.seq);
                    if let Err(e) = ledger.journal(move |j| j.shipped(&node, seq)).await {
                        counters.faults().count(crate::faults::Component::Ledger);
                        tracing::error!("usage journal: removing a shipped batch failed: {e}");
                    }
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            after_s = since.elapsed().as_secs(),
                            "usage store: PostgreSQL reachable again; shipping the journal's batches"
                        );
                    }
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    counters.control().inc(Counter::BatchFlushErrors);
                    counters.faults().count(crate::faults::Component::Ledger);
                    log_failure(&mut failing_since, &e.to_string());
                    failed = true;
                }
            }
        }
        if stopping && (failed || waiting.is_empty()) {
            return;
        }
        if failed {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else if waiting.is_empty() {
            tokio::select! {
                _ = wrote.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// One line when PostgreSQL starts failing, then one a minute while it goes on.
fn log_failure(since: &mut Option<tokio::time::Instant>, error: &str) {
    match since {
        None => {
            *since = Some(tokio::time::Instant::now());
            tracing::warn!(
                "usage store: PostgreSQL write failed ({error}); batches wait in the journal and are retried"
            );
        }
        Some(at) if at.elapsed() >= Duration::from_secs(60) => {
            tracing::warn!(for_s = at.elapsed().as_secs(), "usage store: PostgreSQL still failing ({error})");
            *at = tokio::time::Instant::now();
        }
        Some(_) => {}
    }
}

/// The writer thread: commits each batch to the journal in one transaction, retrying a failed one
/// (a full disk, a read-only file, a lock) with backoff until it goes in. Batches queue behind it
/// meanwhile, and once the queue is full the counts wait on their keys.
struct Writer {
    journal: Journal,
    outbox: bool,
    counters: Arc<Counters>,
    wrote: Arc<Notify>,
    give_up: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Batch>) {
        let control = self.counters.control();
        let mut last_log: Option<std::time::Instant> = None;
        while let Some(batch) = rx.blocking_recv() {
            let mut backoff = Duration::from_millis(50);
            loop {
                control.gauge_add(Gauge::DbInUse, 1);
                let result = self.journal.apply(&batch, self.outbox, Now::read().unix_ms);
                control.gauge_add(Gauge::DbInUse, -1);
                match result {
                    Ok(_) => {
                        control.inc(Counter::BatchFlushes);
                        control.inc(Counter::BgCompleted);
                        self.written.fetch_add(batch.requests(), Ordering::Relaxed);
                        self.wrote.notify_one();
                        if last_log.take().is_some() {
                            tracing::info!("usage journal: writing again");
                        }
                        break;
                    }
                    Err(e) => {
                        control.inc(Counter::BatchFlushErrors);
                        self.counters.faults().count(crate::faults::Component::Ledger);
                        if last_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                            last_log = Some(std::time::Instant::now());
                            tracing::error!(
                                seq = batch.seq,
                                rows = batch.rows.len(),
                                "usage journal: writing a batch failed, retrying: {e}"
                            );
                        }
                        if self.give_up.load(Ordering::Relaxed) {
                            return;
                        }
                        #[allow(clippy::disallowed_methods)]
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }
}

/// A month's report for the admin route and the command line.
pub async fn month_report(ledger: &Ledger, month: Month, key: Option<&str>) -> Result<Vec<KeyTotal>, LedgerError> {
    let from_s = (month.start_unix_ms() / 1000) as i64;
    let to_s = (Month(month.0 + 1).start_unix_ms() / 1000) as i64;
    let mut totals = ledger.totals(from_s, to_s).await?;
    if let Some(key) = key {
        totals.retain(|t| t.key_id == key);
    }
    Ok(totals)
}

/// Answers the shards' report requests, as many at once as `usage.db_max_open`.
pub async fn serve_reports(ledger: Arc<Ledger>, mut jobs: mpsc::Receiver<ReportJob>, counters: Arc<Counters>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(ledger.config.db_max_open));
    while let Some(job) = jobs.recv().await {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { return };
        let (ledger, counters) = (Arc::clone(&ledger), Arc::clone(&counters));
        tokio::spawn(async move {
            let (from_s, to_s) = job.span.range_s();
            let answer = match ledger.hours(&job.key_id, from_s, to_s).await {
                Ok(hours) => {
                    let buckets = report::bucketize(&job.span, &hours);
                    ReportAnswer::Ok(report::key_json(&job.key_id, job.span.granularity, &buckets))
                }
                Err(e) => {
                    counters.faults().count(crate::faults::Component::Ledger);
                    tracing::warn!(key = job.key_id, "usage report failed: {e}");
                    ReportAnswer::Failed(e.to_string())
                }
            };
            counters.control().inc(Counter::BgCompleted);
            let _ = job.reply.send(answer);
            drop(permit);
        });
    }
}

/// The keys' current table, for the service (a closure so tests can drive it without a server).
pub fn tables(keys: Arc<crate::state::Shared>) -> Arc<dyn Fn() -> Arc<KeyTable> + Send + Sync> {
    Arc::new(move || keys.keys.current())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::ledger::batch::Row;

    #[test]
    fn a_locked_journal_is_retried_until_the_batch_goes_in_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("usage.db");
        let journal = Journal::open(&path).expect("journal");
        // Another process holding the write lock: the writer's first attempt times out (busy).
        let blocker = rusqlite::Connection::open(&path).expect("second connection");
        blocker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        let counters = Arc::new(Counters::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            journal,
            outbox: false,
            counters: Arc::clone(&counters),
            wrote: Arc::new(Notify::new()),
            give_up: Arc::new(AtomicBool::new(false)),
            written: Arc::clone(&written),
        };
        let (tx, rx) = mpsc::channel(4);
        let thread = std::thread::spawn(move || writer.run(rx));
        let row = Row { key_id: "alice".into(), tier: "public".into(), hour_s: 3600, counts: [7, 2, 1] };
        tx.blocking_send(Batch { node: "n1".into(), seq: 0, rows: vec![row] }).expect("queued");
        let waited = std::time::Instant::now();
        while counters.snapshot().get(Counter::BatchFlushErrors) == 0 {
            assert!(waited.elapsed() < Duration::from_secs(20), "the locked write never failed");
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(written.load(Ordering::Relaxed), 0);
        blocker.execute_batch("COMMIT").expect("unlock");
        drop(tx);
        thread.join().expect("writer thread");
        assert_eq!(written.load(Ordering::Relaxed), 10);
        let snapshot = counters.snapshot();
        assert_eq!((snapshot.get(Counter::BatchFlushes), snapshot.get(Counter::BgCompleted)), (1, 1));
        let journal = Journal::open(&path).expect("reopened");
        let totals = journal.totals(0, 7200).expect("read");
        assert_eq!(totals[0].2, Counts { http: 7, udp: 2, sessions: 1 });
    }

    #[test]
    fn store_settings_are_checked() {
        assert_eq!(StoreKind::parse("sqlite:usage.db"), Ok(StoreKind::Sqlite("usage.db".into())));
        assert_eq!(StoreKind::parse("memory"), Ok(StoreKind::Memory));
        assert!(matches!(StoreKind::parse("postgres://pb@127.0.0.1:5432/usage"), Ok(StoreKind::Postgres(_))));
        for bad in ["", "sqlite:", "mysql://x", "usage.db", "postgres://pb@127.0.0.1:notaport/usage"] {
            assert!(StoreKind::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            beside(Path::new("/etc/pricebeast/keys.toml"), Path::new("usage.db")),
            PathBuf::from("/etc/pricebeast/usage.db")
        );
        assert_eq!(beside(Path::new("keys.toml"), Path::new("usage.db")), PathBuf::from("usage.db"));
        assert_eq!(beside(Path::new("/a/keys.toml"), Path::new("/b/u.db")), PathBuf::from("/b/u.db"));
    }
}
