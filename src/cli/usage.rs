//! `pricebeast usage report`: a month's usage per key, read straight from the ledger the config
//! names (the SQLite file, or PostgreSQL for a fleet), as `GET /admin/reports/usage` answers it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::Subcommand;

use crate::clock::{Month, Now};
use crate::config::Config;
use crate::counters::Counters;
use crate::usage::ledger::report::{month_csv, month_json};
use crate::usage::ledger::service::month_report;
use crate::usage::ledger::{Ledger, StoreKind};

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Print every key's usage for a month (JSON, or CSV with --csv).
    Report {
        /// The month, YYYY-MM (default: this one, UTC).
        #[arg(long, value_name = "YYYY-MM")]
        month: Option<String>,
        /// Only this key (its name).
        #[arg(long, value_name = "NAME")]
        key: Option<String>,
        /// CSV with a header row instead of JSON.
        #[arg(long)]
        csv: bool,
        /// The configuration whose usage.store (and keys.file, which a relative SQLite path is
        /// beside) to read.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// The keys file (default: keys.file of the config); a relative usage.db is beside it.
        #[arg(long, value_name = "FILE")]
        keys_file: Option<PathBuf>,
    },
}

pub fn run(command: UsageCommand) -> anyhow::Result<()> {
    let UsageCommand::Report { month, key, csv, config, keys_file } = command;
    let mut config = Config::load(config.as_deref())?;
    if let Some(file) = keys_file {
        config.keys.file = file;
    }
    let month = match month.as_deref() {
        None => Month::of_unix_ms(Now::read().unix_ms),
        Some(text) => Month::parse(text).with_context(|| format!("--month {text:?}: must be YYYY-MM"))?,
    };
    match StoreKind::parse(&config.usage.store).map_err(anyhow::Error::msg)? {
        StoreKind::Memory => bail!("usage.store is \"memory\": this configuration keeps no ledger to report from"),
        StoreKind::Sqlite(path) => {
            let keys_dir = config.keys.file.parent().map(PathBuf::from).unwrap_or_default();
            let file = if path.is_absolute() { path } else { keys_dir.join(path) };
            if !file.is_file() {
                bail!("no usage ledger at {} (the server creates it on its first start)", file.display());
            }
        }
        StoreKind::Postgres(_) => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let text = runtime.block_on(async {
        let ledger = Ledger::open(&config, &config.node_name(), Arc::new(Counters::new(0))).await?;
        let keys = month_report(&ledger, month, key.as_deref()).await?;
        anyhow::Ok(if csv { month_csv(&keys) } else { month_json(month, &keys) + "\n" })
    })?;
    print!("{text}");
    Ok(())
}
