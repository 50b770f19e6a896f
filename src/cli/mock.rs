//! `pricebeast mock-exchange`: plays the six venues' recorded feeds on local ports, so the real
//! feed clients can be run and watched with no internet (`config/mock-exchanges.toml`).

use std::net::SocketAddr;

use anyhow::{bail, Context as _};

use crate::feeds;
use crate::mock_exchange::{MockExchange, MockOptions};

#[derive(Debug, clap::Args)]
pub struct MockArgs {
    /// Venues to play, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub venues: Vec<String>,
    /// Address of the first venue; the i-th venue of coinbase, gemini, kraken, gateio, bybit, okx
    /// listens on this port + i (the ports config/mock-exchanges.toml expects).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9500")]
    pub listen: SocketAddr,
    /// Re-send the recorded tickers this often, so the prices stay fresh.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub repeat_ms: u64,
    /// Venue symbols to refuse, comma-separated, each in the venue's own refusal (`XBT/EUR`).
    #[arg(long, value_delimiter = ',', value_name = "SYMBOLS")]
    pub refuse: Vec<String>,
}

pub fn run(args: MockArgs) -> anyhow::Result<()> {
    let all: Vec<&'static str> = feeds::venues().iter().map(|v| v.name()).collect();
    for name in &args.venues {
        if !all.contains(&name.as_str()) {
            bail!("--venues: unknown venue {name:?}; known: {}", all.join(", "));
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut running = Vec::new();
        for (i, name) in all.iter().enumerate() {
            if !args.venues.is_empty() && !args.venues.iter().any(|v| v == name) {
                continue;
            }
            let script = feeds::mock_script(name).with_context(|| format!("no mock script for {name}"))?;
            let port = args.listen.port().checked_add(i as u16).context("--listen port too high")?;
            let addr = SocketAddr::new(args.listen.ip(), port);
            let options = MockOptions { repeat_ms: Some(args.repeat_ms.max(1)), heartbeat_ms: None };
            let mock =
                MockExchange::start(script, options, addr).await.with_context(|| format!("{name}: binding {addr}"))?;
            let refuse: Vec<&str> = args.refuse.iter().map(String::as_str).collect();
            mock.control().refuse(&refuse);
            println!("{name} {}", mock.url());
            running.push(mock);
        }
        tokio::signal::ctrl_c().await?;
        drop(running);
        Ok(())
    })
}
