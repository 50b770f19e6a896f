//! The command line: `serve`, `keys`, `usage`, `query`, `mock-exchange`, `stress`, `tls`, `doctor`. Parsing here, work in the modules named.

pub mod doctor;
pub mod keys;
pub mod mock;
pub mod query;
pub mod tls;
pub mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, IoDriver};

#[derive(Debug, Parser)]
#[command(name = "pricebeast", version, about = "Live market prices over HTTP, UDP and WebSocket, from one binary")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the simulator feed and the embedded SQLite usage ledger by default).
    Serve(ServeArgs),
    /// Create, list and revoke API keys in the keys file.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Usage reports from the ledger.
    #[command(subcommand)]
    Usage(usage::UsageCommand),
    /// Ask a running server one question over HTTP, HTTPS or UDP and print the answer.
    Query(query::QueryArgs),
    /// Play the exchanges' recorded feeds on local ports, for running the feed clients offline.
    MockExchange(mock::MockArgs),
    /// Run a load plan against a server and report what the client and the server counted.
    Stress(crate::stress::StressArgs),
    /// Certificates for HTTPS: a self-signed pair for a test.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Check this machine's limits (open files, backlog, UDP buffers, io_uring, ports) against a
    /// config, and say what to change; exits 1 when a check fails.
    Doctor(doctor::DoctorArgs),
}

/// A listener flag's value: an address, or `None` for `""` (off).
#[derive(Clone, Copy, Debug)]
pub struct Listen(pub Option<SocketAddr>);

fn listen_arg(text: &str) -> Result<Listen, String> {
    crate::config::parse_listen(text).map(Listen)
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); without it, the defaults of config/pricebeast.toml.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Public HTTP listen address (server.http); "" turns plain HTTP off.
    #[arg(long, value_name = "ADDR", value_parser = listen_arg)]
    pub http: Option<Listen>,
    /// Public HTTPS listen address (server.https), with [tls]'s certificate; "" is off.
    #[arg(long, value_name = "ADDR", value_parser = listen_arg)]
    pub https: Option<Listen>,
    /// Partner UDP listen address (server.udp).
    #[arg(long, value_name = "ADDR")]
    pub udp: Option<SocketAddr>,
    /// Admin and metrics listen address (admin.addr).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Number of shards; 0 for one per core (server.shards).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// The keys file (keys.file).
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
    /// The shards' io driver (server.io_driver).
    #[arg(long, value_enum, value_name = "DRIVER")]
    pub io_driver: Option<IoDriver>,
    /// The tuning profile in force at start (profiles.active), from profiles.file.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Serve the admin listener on a non-loopback address without a token.
    #[arg(long)]
    pub danger_admin_without_token: bool,
}

impl ServeArgs {
    /// The config file with the flags applied over it.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(Listen(addr)) = self.http {
            config.server.http = addr;
        }
        if let Some(Listen(addr)) = self.https {
            config.server.https = addr;
        }
        if let Some(addr) = self.udp {
            config.server.udp = addr;
        }
        if let Some(addr) = self.admin {
            config.admin.addr = addr;
        }
        if let Some(shards) = self.shards {
            config.server.shards = shards;
        }
        if let Some(file) = &self.keys_file {
            config.keys.file = file.clone();
        }
        if let Some(driver) = self.io_driver {
            config.server.io_driver = driver;
        }
        if let Some(profile) = &self.profile {
            config.profiles.active = profile.clone();
        }
        // The file passed its own check in `load`; what fails now came from a flag.
        config.check("command line")?;
        Ok(config)
    }
}
