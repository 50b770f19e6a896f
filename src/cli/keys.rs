//! `pricebeast keys`: make, list and revoke keys. The key itself is printed once, on stdout, and
//! never stored; the file keeps its SHA-256.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Subcommand;

use crate::config::Config;
use crate::keys::file::{valid_name, KeyRecord, KeysFile, Tier};
use crate::keys::secret;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key; prints it on stdout (its only output).
    New {
        #[arg(long, value_enum)]
        tier: TierArg,
        /// A unique name: 1 to 64 letters, digits, '-', '_' or '.' (as in `acme.prod`)
        #[arg(long)]
        name: String,
        /// Requests per second (public keys; default keys.public_qps).
        #[arg(long)]
        qps: Option<u32>,
        /// Burst allowance (public keys; default keys.public_burst).
        #[arg(long)]
        burst: Option<u32>,
        /// Requests per calendar month (public keys; default keys.public_monthly_cap).
        #[arg(long)]
        monthly_cap: Option<u64>,
        /// A load test's key (public only): its QPS and burst follow the active profile's
        /// stress_qps and stress_burst (config/profiles.toml) while one sets them.
        #[arg(long)]
        stress: bool,
        #[command(flatten)]
        file: FileArgs,
    },
    /// List keys: name, tier, limits, state.
    List {
        #[command(flatten)]
        file: FileArgs,
    },
    /// Revoke a key by name; a running server stops accepting it within keys.poll_ms.
    Revoke {
        name: String,
        #[command(flatten)]
        file: FileArgs,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TierArg {
    Public,
    Partner,
}

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// The keys file (default: keys.file of the config).
    #[arg(long, value_name = "FILE")]
    keys_file: Option<PathBuf>,
    /// The configuration whose keys.file and defaults to use.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

impl FileArgs {
    fn resolve(&self) -> anyhow::Result<(PathBuf, Config)> {
        let config = Config::load(self.config.as_deref())?;
        let path = self.keys_file.clone().unwrap_or_else(|| config.keys.file.clone());
        Ok((path, config))
    }
}

pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New { tier, name, qps, burst, monthly_cap, stress, file } => {
            let (path, config) = file.resolve()?;
            if !valid_name(&name) {
                bail!("--name {name:?}: use 1 to 64 of A-Z a-z 0-9 - _ .");
            }
            let mut keys = KeysFile::load(&path)?;
            keys.parse(&path)?;
            if keys.keys.iter().any(|k| k.name == name) {
                bail!("{}: a key named {name:?} exists already", path.display());
            }
            let tier = match tier {
                TierArg::Public => Tier::Public,
                TierArg::Partner => Tier::Partner,
            };
            let limits = match tier {
                Tier::Public => {
                    let qps = qps.unwrap_or(config.keys.public_qps);
                    let burst = burst.unwrap_or(config.keys.public_burst);
                    let cap = monthly_cap.unwrap_or(config.keys.public_monthly_cap);
                    if qps == 0 || burst == 0 || cap == 0 {
                        bail!("--qps, --burst and --monthly-cap must be at least 1");
                    }
                    (Some(qps), Some(burst), Some(cap))
                }
                Tier::Partner => {
                    if stress {
                        bail!("--stress marks public keys: a partner key has no limits for a profile to change");
                    }
                    if qps.is_some() || burst.is_some() || monthly_cap.is_some() {
                        bail!("partner keys are never limited: drop --qps, --burst and --monthly-cap");
                    }
                    (None, None, None)
                }
            };
            let key = secret::generate().context("reading the OS's randomness")?;
            let created_unix_s = crate::clock::Now::read().unix_ms / 1000;
            keys.keys.push(KeyRecord {
                name,
                tier,
                sha256: hex::encode(secret::hash(key.as_bytes())),
                qps: limits.0,
                burst: limits.1,
                monthly_cap: limits.2,
                created_unix_s,
                revoked: false,
                stress,
            });
            keys.save(&path)?;
            println!("{key}");
            Ok(())
        }
        KeysCommand::List { file } => {
            let (path, _) = file.resolve()?;
            if !path.exists() {
                eprintln!("no keys file at {} yet (`pricebeast keys new` makes it)", path.display());
            }
            let keys = KeysFile::load(&path)?;
            keys.parse(&path)?;
            println!("{:<24} {:<8} {:>8} {:>8} {:>14}  state", "name", "tier", "qps", "burst", "monthly_cap");
            let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            for k in &keys.keys {
                println!(
                    "{:<24} {:<8} {:>8} {:>8} {:>14}  {}",
                    k.name,
                    k.tier.as_str(),
                    show(k.qps.map(u64::from)),
                    show(k.burst.map(u64::from)),
                    show(k.monthly_cap),
                    if k.revoked { "revoked" } else { "active" }
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { name, file } => {
            let (path, _) = file.resolve()?;
            let mut keys = KeysFile::load(&path)?;
            keys.parse(&path)?;
            let Some(record) = keys.keys.iter_mut().find(|k| k.name == name) else {
                bail!("{}: no key named {name:?}", path.display());
            };
            if record.revoked {
                eprintln!("{name} was already revoked");
                return Ok(());
            }
            record.revoked = true;
            keys.save(&path)?;
            eprintln!("revoked {name}");
            Ok(())
        }
    }
}
