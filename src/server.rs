//! `pricebeast serve`: builds the shared state from a parsed config, binds every socket, starts the
//! shards and the feed, then runs the control plane (admin, stats sampling, key reloads, signals)
//! until SIGTERM or SIGINT, and drains.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::admin::{self, metrics::Metrics, AdminState};
use crate::book::PriceBook;
use crate::clock::Now;
use crate::config::{Config, FeedKind};
use crate::counters::stats::{Sample, StatsWindow};
use crate::counters::Counters;
use crate::feeds::start;
use crate::keys::KeyStore;
use crate::shard::{self, listeners};
use crate::state::Shared;

/// Options of `serve` that are not configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeOptions {
    pub danger_admin_without_token: bool,
}

/// Runs the server until a shutdown signal; returns once it has drained.
pub fn run(config: Config, options: ServeOptions) -> anyhow::Result<()> {
    let token = config.admin_token();
    admin::check_exposure(config.admin.addr, token.as_deref(), options.danger_admin_without_token)?;
    // Signal handlers first: from here on SIGTERM drains and SIGHUP reloads, never the default
    // action that would kill the process mid-start.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let signals = {
        let _context = runtime.enter();
        Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        }
    };
    let config = Arc::new(config);
    let shards = config.shard_count();

    let layout = start::layout(&config.feed);
    let book = Arc::new(
        PriceBook::new(
            &layout.symbols.iter().map(String::as_str).collect::<Vec<_>>(),
            &layout.venues.iter().map(String::as_str).collect::<Vec<_>>(),
            config.book.symbols_max,
            config.book.stale_after_ms,
        )
        .context("building the price book (feed symbols, book.symbols_max)")?
        .with_shards(shards),
    );
    let keys = KeyStore::open(&config.keys.file)?;
    let key_count = keys.table().len();
    if !config.keys.file.exists() {
        // A typo in the path must not look like "no keys yet" without a word.
        tracing::warn!(file = %config.keys.file.display(), "no keys file yet: every keyed request is refused until `pricebeast keys new` writes it");
    }
    let counters = Arc::new(Counters::new(shards));
    let mut state = Shared::new(Arc::clone(&config), Arc::clone(&book), keys, Arc::clone(&counters));
    state.feeds = start::venue_stats(&config.feed, &layout);
    let shared = Arc::new(state);

    let server = &config.server;
    let bound =
        listeners::bind(server.http, server.udp, shards, server.listen_backlog, config.udp.socket_buffer_bytes)?;
    let wake_http = bound.http.iter().map(|l| l.try_clone()).collect::<Result<Vec<_>, _>>()?;
    let wake_udp = bound.udp.iter().map(|s| s.try_clone()).collect::<Result<Vec<_>, _>>()?;
    let (http_addr, udp_addr) = (bound.http_addr, bound.udp_addr);

    let feed = match config.feed.kind {
        FeedKind::Simulator => {
            let running = start::simulator(&config.feed, &book, &counters).context("starting the simulator feed")?;
            let sim = &config.feed.simulator;
            tracing::info!(
                symbols = layout.symbols.len(),
                venues = sim.venues,
                tick_ms = sim.tick_ms,
                "simulator feed running"
            );
            running
        }
        FeedKind::Exchanges => {
            let _context = runtime.enter();
            start::exchanges(&config.feed, &book, &counters, &shared.feeds)
        }
    };

    let (exits, exited) = tokio::sync::mpsc::channel(shards);
    let handles = shard::start(&shared, bound.http, bound.udp, exits)?;
    for handle in &handles {
        tracing::info!(shard = handle.index, driver = handle.driver.as_str(), "shard serving");
    }

    let addrs = Addrs { http: http_addr, udp: udp_addr };
    let result =
        runtime.block_on(control_plane(Arc::clone(&shared), token, addrs, signals, exited, key_count, handles.len()));

    shared.start_draining();
    listeners::shut_down_read(&wake_http, &wake_udp);
    for handle in handles {
        let _ = handle.thread.join();
    }
    runtime.block_on(feed.stop());
    tracing::info!("stopped");
    result
}

/// The signals the control plane answers, registered before anything binds.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

/// The shards' bound addresses, for the listening line.
struct Addrs {
    http: std::net::SocketAddr,
    udp: std::net::SocketAddr,
}

async fn control_plane(
    shared: Arc<Shared>,
    token: Option<String>,
    addrs: Addrs,
    mut signals: Signals,
    mut exited: tokio::sync::mpsc::Receiver<usize>,
    key_count: usize,
    shards: usize,
) -> anyhow::Result<()> {
    let config = Arc::clone(&shared.config);
    let stats = Arc::new(StatsWindow::new(Sample { at_ms: Now::read().unix_ms, snapshot: shared.counters.snapshot() }));
    let metrics = Metrics::new(Arc::clone(&shared.counters), shared.feeds.clone())?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin.addr)
        .await
        .with_context(|| format!("binding admin {}", config.admin.addr))?;
    let admin_addr = admin_listener.local_addr()?;
    let admin_state = Arc::new(AdminState { shared: Arc::clone(&shared), stats: Arc::clone(&stats), metrics, token });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let mut admin_stop = stop_rx.clone();
    let admin_task = tokio::spawn(async move {
        let app = admin::router(admin_state);
        axum::serve(admin_listener, app)
            .with_graceful_shutdown(async move {
                let _ = admin_stop.wait_for(|stop| *stop).await;
            })
            .await
    });

    let sampler = {
        let (shared, stats) = (Arc::clone(&shared), Arc::clone(&stats));
        let every = Duration::from_millis(config.admin.stats_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let now_ms = Now::read().unix_ms;
                // Expired sessions leave the pending gauge within one interval, not at their
                // slot's next reuse.
                shared.sessions.sweep(now_ms, shared.counters.control());
                stats.record(&shared.counters, now_ms);
            }
        })
    };
    let poller = (config.keys.poll_ms > 0).then(|| tokio::spawn(poll_keys_file(Arc::clone(&shared))));

    tracing::info!(shards, keys = key_count, "listening http={} udp={} admin={admin_addr}", addrs.http, addrs.udp);

    let mut outcome = Ok(());
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = signals.interrupt.recv() => { tracing::info!("SIGINT: draining"); break; }
            _ = signals.hangup.recv() => reload_keys(&shared, "SIGHUP"),
            Some(shard) = exited.recv() => {
                tracing::error!(shard, "shard stopped unexpectedly: draining the others and exiting");
                outcome = Err(anyhow::anyhow!("shard {shard} stopped unexpectedly"));
                break;
            }
        }
    }
    let _ = stop_tx.send(true);
    sampler.abort();
    if let Some(poller) = poller {
        poller.abort();
    }
    match tokio::time::timeout(Duration::from_millis(config.server.shutdown_deadline_ms), admin_task).await {
        Ok(Ok(Err(e))) => tracing::warn!("admin listener: {e}"),
        Err(_) => tracing::warn!("admin listener did not stop before the deadline"),
        _ => {}
    }
    outcome
}

fn reload_keys(shared: &Shared, why: &str) {
    match shared.keys.reload() {
        Ok(count) => tracing::info!(keys = count, "keys reloaded ({why})"),
        Err(e) => tracing::warn!("keys reload ({why}) failed, previous keys stay in force: {e}"),
    }
}

/// Reloads the keys file whenever its modification time or size changes, so a revocation applies
/// within `keys.poll_ms` without a signal.
async fn poll_keys_file(shared: Arc<Shared>) {
    let stamp = |shared: &Shared| -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(shared.keys.path()).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut last = stamp(&shared);
    let mut tick = tokio::time::interval(Duration::from_millis(shared.config.keys.poll_ms));
    loop {
        tick.tick().await;
        let now = stamp(&shared);
        if now != last {
            last = now;
            reload_keys(&shared, "keys file changed");
        }
    }
}
