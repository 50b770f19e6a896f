//! The durable usage ledger. The shards count in memory (`usage::MonthlyUsage`); every
//! `usage.flush_ms` the control plane drains what they counted since the last drain into batches
//! (`drain`), hands them through a bounded queue to the writer thread, which commits each to the
//! node's SQLite journal in one transaction (`sqlite`), idempotently by batch id. With PostgreSQL
//! configured the journal is also the outbox: the shipper (`postgres`) sends its batches in order
//! and removes each once PostgreSQL has it, so an outage delays the fleet ledger and loses
//! nothing. Reports (`report`) read whichever store is the ledger of record.

pub mod batch;
pub mod drain;
pub mod postgres;
pub mod report;
pub mod service;
pub mod sqlite;

pub use batch::{Batch, Row};
pub use service::{Ledger, LedgerError, StoreKind};
