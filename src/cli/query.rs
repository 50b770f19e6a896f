//! `pricebeast query`: one question to a running server, the answer on stdout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::client::tls::{TlsClient, TlsOptions, Trust};
use crate::client::{http, udp::UdpClient};
use crate::udp::codec::UdpStatus;

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Symbols to price (one: /v1/price; several: /v1/prices). Not needed with --usage.
    pub symbols: Vec<String>,
    /// API key (or PRICEBEAST_KEY).
    #[arg(long, env = "PRICEBEAST_KEY", hide_env_values = true)]
    pub key: String,
    /// Server HTTP address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Ask over HTTPS (and stream over wss://, or events over HTTPS) at this address instead of
    /// plain HTTP.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["http", "udp"])]
    pub https: Option<String>,
    /// With --https: trust only the certificates in this PEM file (default: the webpki roots).
    #[arg(long, value_name = "FILE", requires = "https")]
    pub ca_file: Option<PathBuf>,
    /// With --https: accept any certificate for any name (encrypted, not authenticated).
    #[arg(long, requires = "https", conflicts_with = "ca_file")]
    pub danger_accept_invalid_certs: bool,
    /// Ask over UDP at this address instead of HTTP.
    #[arg(long, value_name = "HOST:PORT")]
    pub udp: Option<String>,
    /// HTTP: include each venue's price (`sources=1`).
    #[arg(long)]
    pub sources: bool,
    /// HTTP: show this key's usage this month instead of a price.
    #[arg(long)]
    pub usage: bool,
    /// Stream the symbols over WebSocket (a session, then /v1/stream), one frame per line.
    #[arg(long, conflicts_with_all = ["udp", "usage", "sources", "sse"])]
    pub stream: bool,
    /// Stream the symbols as server-sent events, as a browser's EventSource reads them (a session,
    /// then /v1/stream with Accept: text/event-stream), each event's JSON on its own line.
    #[arg(long, conflicts_with_all = ["udp", "usage", "sources"])]
    pub sse: bool,
    /// With --stream or --sse: stop after this many frames (default: until interrupted).
    #[arg(long, value_name = "N")]
    pub frames: Option<u64>,
    /// How long to wait for an answer.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub timeout_ms: u64,
}

pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let (addr, tls) = match &args.https {
        Some(addr) => {
            let trust = Trust::from_flags(args.ca_file.as_deref(), args.danger_accept_invalid_certs);
            (addr.as_str(), Some(TlsClient::new(&TlsOptions::new(trust), addr)?))
        }
        None => (args.http.as_str(), None),
    };
    let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
    if args.frames.is_some() && !args.stream && !args.sse {
        bail!("--frames counts the frames of --stream or --sse");
    }
    if args.stream || args.sse {
        if args.symbols.is_empty() {
            bail!("name at least one symbol to stream");
        }
        let mut left = args.frames;
        let on_frame = |frame: &str| {
            println!("{frame}");
            match left.as_mut() {
                Some(n) => {
                    *n = n.saturating_sub(1);
                    *n > 0
                }
                None => true,
            }
        };
        let open = if args.sse { crate::client::stream::events } else { crate::client::stream::stream };
        return open(addr, tls.as_ref(), &args.key, &args.symbols, timeout, on_frame);
    }
    if let Some(addr) = &args.udp {
        if args.symbols.is_empty() {
            bail!("name at least one symbol");
        }
        let mut client = UdpClient::connect(addr.as_str()).with_context(|| format!("UDP {addr}"))?;
        let mut failed = false;
        for symbol in &args.symbols {
            let answer =
                client.query(args.key.as_bytes(), symbol.as_bytes(), timeout).with_context(|| format!("UDP {addr}"))?;
            failed |= answer.status != UdpStatus::Ok;
            let line = serde_json::json!({
                "symbol": answer.symbol,
                "status": answer.status.as_str(),
                "price": answer.price.to_string(),
                "ts": answer.ts_ms,
                "sources": answer.sources,
            });
            println!("{line}");
        }
        if failed {
            std::process::exit(1);
        }
        return Ok(());
    }
    let target = match (args.usage, args.symbols.as_slice()) {
        (true, _) => "/v1/usage".to_owned(),
        (false, []) => bail!("name at least one symbol, or --usage"),
        (false, [one]) => format!("/v1/price?symbol={one}{}", if args.sources { "&sources=1" } else { "" }),
        (false, many) => format!("/v1/prices?symbols={}", many.join(",")),
    };
    let response = http::request_over(addr, tls.as_ref(), "GET", &target, &[("X-API-Key", &args.key)], &[], timeout)
        .with_context(|| format!("{scheme} {addr}"))?;
    println!("{}", response.text());
    if !(200..300).contains(&response.status) {
        eprintln!("HTTP {}", response.status);
        std::process::exit(1);
    }
    Ok(())
}
