//! The process's log output: a tracing subscriber on stderr whose filter a profile switch can
//! replace at runtime (`log_level`), as text or as JSON lines (`log.format`).

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogFormat;

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the subscriber with `level` (`RUST_LOG` wins when set), writing `format`. Once per
/// process.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let installed = match format {
        LogFormat::Text => {
            let output = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal());
            tracing_subscriber::registry().with(filter).with(output).try_init()
        }
        // One object per line, fields at the top level, for a log shipper (journald's JSON
        // export, Vector, Loki, CloudWatch).
        LogFormat::Json => {
            let output = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(std::io::stderr);
            tracing_subscriber::registry().with(filter).with(output).try_init()
        }
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the filter. Without a subscriber from [`init`] (tests, tools) there is nothing to
/// change and this succeeds.
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("log_level {level:?}: {e}"))?;
    match FILTER.get() {
        Some(handle) => handle.reload(filter).map_err(|e| format!("log_level {level:?}: {e}")),
        None => Ok(()),
    }
}
