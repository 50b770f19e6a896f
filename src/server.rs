//! `pricebeast serve`: builds the shared state from a parsed config, binds every socket, starts the
//! shards and the feed, then runs the control plane's services (`control::Services`: admin, stats
//! sampling, key reloads, the usage ledger, reports) until SIGTERM or SIGINT, and drains: the
//! shards first, then the services, so the ledger's last drain sees every count.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::admin::{self, metrics::Metrics, AdminState};
use crate::book::PriceBook;
use crate::clock::{Month, Now};
use crate::config::{Config, FeedKind};
use crate::control::{self, Services};
use crate::counters::stats::{Sample, StatsWindow};
use crate::counters::Counters;
use crate::feeds::start;
use crate::keys::KeyStore;
use crate::shard::{self, listeners};
use crate::state::Shared;
use crate::usage::ledger::service::{self, ReportJob};
use crate::usage::ledger::{Ledger, StoreKind};

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
        .with_shards(shards)
        .with_fallback_hold(config.fallback.hold_ms)
        .with_outlier_bound(config.book.outlier_bound()),
    );
    let keys = KeyStore::open(&config.keys.file)?;
    let key_count = keys.table().len();
    if !config.keys.file.exists() {
        // A typo in the path must not look like "no keys yet" without a word.
        tracing::warn!(file = %config.keys.file.display(), "no keys file yet: every keyed request is refused until `pricebeast keys new` writes it");
    }
    let counters = Arc::new(Counters::new(shards));
    let (profiles, built_in) = crate::profile::Profiles::load(&config.profiles.file)?;
    if built_in {
        tracing::info!(file = %config.profiles.file.display(), "no profiles file: using the built-in profiles");
    }
    let tuning = crate::profile::live::Tuning::new(&config, profiles, &config.profiles.active)
        .context("profiles.active (or --profile)")?;
    let mut state = Shared::new(Arc::clone(&config), Arc::clone(&book), keys, Arc::clone(&counters));
    state.tuning = Arc::new(tuning);
    control::profile::apply_keys(&state, &state.tuning.active());
    tracing::info!(mode = %state.tuning.active().name, "profile in force");
    state.feeds = start::venue_stats(&config.feed, &layout);
    // The month's counts go into the keys before any shard can admit a request, so a cap holds
    // across a restart.
    let ledger = runtime.block_on(open_ledger(&config, &state, &counters))?;
    let (report_tx, report_rx) = tokio::sync::mpsc::channel(config.usage.report_queue_max);
    if ledger.kind() != &StoreKind::Memory {
        state.reports = Some(report_tx);
    }
    state.ledger = Some(Arc::clone(&ledger));
    // Misses go to the control plane only when there is somewhere to look them up.
    let rest = crate::fallback::service::RestSource::from_config(&config);
    let (miss_tx, miss_rx) = tokio::sync::mpsc::channel(config.fallback.queue_max);
    if !config.cluster.redis_url.is_empty() || !rest.is_empty() {
        state.misses = Some(miss_tx);
    }
    if config.server.https.is_some() {
        let certs = crate::tls::certs::Certs::open(&config.tls.cert_file, &config.tls.key_file)
            .context("loading the HTTPS certificate ([tls] cert_file, key_file)")?;
        let identity = certs.current();
        tracing::info!(
            subject = %identity.subject,
            not_after = %crate::clock::rfc3339(identity.not_after_unix_s),
            "HTTPS certificate loaded"
        );
        state.tls = Some(Arc::new(certs));
    }
    state.access_log = crate::access_log::AccessLog::start(&config.log, Arc::clone(&counters))?;
    if !config.log.access.is_empty() {
        tracing::info!(to = %config.log.access, "access log on");
    }
    let shared = Arc::new(state);

    let server = &config.server;
    let listen = listeners::Listen { http: server.http, https: server.https, udp: server.udp };
    let bound = listeners::bind(listen, shards, server.listen_backlog, config.udp.socket_buffer_bytes)?;
    let mut wake_tcp = Vec::new();
    let mut wake_udp = Vec::new();
    for sockets in &bound.shards {
        for listener in sockets.http.iter().chain(&sockets.https) {
            wake_tcp.push(listener.try_clone()?);
        }
        wake_udp.push(sockets.udp.try_clone()?);
    }
    let addrs = Addrs { http: bound.http_addr, https: bound.https_addr, udp: bound.udp_addr };

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
    let handles = shard::start(&shared, bound.shards, exits)?;
    for handle in &handles {
        tracing::info!(shard = handle.index, driver = handle.driver.as_str(), "shard serving");
    }

    let plane = ControlPlane {
        shared: Arc::clone(&shared),
        token,
        addrs,
        key_count,
        shards: handles,
        wake: (wake_tcp, wake_udp),
        ledger,
        reports: report_rx,
        misses: (rest, miss_rx),
    };
    let result = runtime.block_on(control_plane(plane, signals, exited));
    runtime.block_on(feed.stop());
    tracing::info!("stopped");
    result
}

/// Opens the usage ledger and loads the month's counts into the keys.
async fn open_ledger(config: &Config, state: &Shared, counters: &Arc<Counters>) -> anyhow::Result<Arc<Ledger>> {
    let ledger = Ledger::open(config, &state.node, Arc::clone(counters)).await?;
    let month = Month::of_unix_ms(Now::read().unix_ms);
    let restored = ledger.restore(&state.keys.current(), month).await?;
    match ledger.journal_path() {
        Some(path) => tracing::info!(
            store = ledger.kind().label(),
            journal = %path.display(),
            month = month.label(),
            keys = restored.keys,
            requests = restored.requests,
            "usage ledger open; this month's counts loaded"
        ),
        None => tracing::warn!("usage.store = \"memory\": usage is counted in process only and forgotten at exit"),
    }
    Ok(Arc::new(ledger))
}

/// The signals the control plane answers, registered before anything binds.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

/// The shards' bound addresses, for the listening line.
struct Addrs {
    http: Option<std::net::SocketAddr>,
    https: Option<std::net::SocketAddr>,
    udp: std::net::SocketAddr,
}

/// A listener's address for the listening line; `off` when it is not served.
fn shown(addr: Option<std::net::SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_owned(), |a| a.to_string())
}

/// What the control plane runs and, at shutdown, stops in order.
struct ControlPlane {
    shared: Arc<Shared>,
    token: Option<String>,
    addrs: Addrs,
    key_count: usize,
    shards: Vec<shard::ShardHandle>,
    /// Clones of the shards' sockets, shut to wake them at shutdown.
    wake: (Vec<std::net::TcpListener>, Vec<std::net::UdpSocket>),
    ledger: Arc<Ledger>,
    reports: tokio::sync::mpsc::Receiver<ReportJob>,
    /// The REST venues to look misses up in, and the shards' misses.
    misses: (Vec<crate::fallback::service::RestSource>, tokio::sync::mpsc::Receiver<crate::fallback::MissJob>),
}

async fn control_plane(
    plane: ControlPlane,
    mut signals: Signals,
    mut exited: tokio::sync::mpsc::Receiver<usize>,
) -> anyhow::Result<()> {
    let ControlPlane { shared, token, addrs, key_count, shards, wake, ledger, reports, misses } = plane;
    let config = Arc::clone(&shared.config);
    let stats = Arc::new(StatsWindow::new(Sample { at_ms: Now::read().unix_ms, snapshot: shared.counters.snapshot() }));
    let metrics = Metrics::new(Arc::clone(&shared.counters), shared.feeds.clone(), shared.tls.clone())?
        .with_tuning(Arc::clone(&shared))?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin.addr)
        .await
        .with_context(|| format!("binding admin {}", config.admin.addr))?;
    let admin_addr = admin_listener.local_addr()?;
    let cluster = if config.cluster.redis_url.is_empty() {
        None
    } else {
        let redis = crate::cluster::redis::Redis::new(
            &config.cluster,
            Arc::clone(&shared.counters),
            Arc::clone(&shared.tuning),
        )
        .context("cluster.redis_url")?;
        Some(Arc::new(redis))
    };
    let admin_state = Arc::new(AdminState {
        shared: Arc::clone(&shared),
        stats: Arc::clone(&stats),
        metrics,
        token,
        cluster: cluster.clone(),
    });

    let mut services = Services::new();
    if shared.misses.is_some() {
        let (rest, jobs) = misses;
        let lookups = crate::fallback::service::Lookups::new(Arc::clone(&shared), cluster.clone(), rest);
        let lookups = Arc::new(lookups);
        services.spawn("price-lookups", move |stop| crate::fallback::service::run(lookups, jobs, stop));
    }
    if let Some(redis) = cluster {
        let connecting = Arc::clone(&redis);
        services.spawn("redis-connect", move |stop| async move { connecting.connect(stop).await });
        let publishing = Arc::clone(&admin_state);
        let syncing = Arc::clone(&redis);
        services.spawn("cluster-stats", move |stop| crate::cluster::stats::publish(redis, publishing, stop));
        // A PostgreSQL ledger restored the whole fleet's month; the others restored this node's.
        let own_ledger = !matches!(ledger.kind(), crate::usage::ledger::service::StoreKind::Postgres(_));
        let caps = crate::cluster::caps::Caps::new(shared.node.clone(), own_ledger);
        let sharing = Arc::clone(&shared);
        let publishing = Arc::clone(&syncing);
        services.spawn("cluster-caps", move |stop| crate::cluster::caps::run(syncing, sharing, caps, stop));
        let sharing = Arc::clone(&shared);
        services.spawn("cluster-prices", move |stop| crate::fallback::cache::publish(publishing, sharing, stop));
    }
    services.spawn("admin", move |mut stop| async move {
        let app = admin::router(admin_state);
        let served = axum::serve(admin_listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!("admin listener: {e}");
        }
    });
    services.spawn("stats", |stop| control::stats::sample(Arc::clone(&shared), stats, stop));
    if config.keys.poll_ms > 0 {
        services.spawn("keys-poll", |stop| control::keys::poll(Arc::clone(&shared), stop));
    }
    if shared.tls.is_some() && config.tls.reload_poll_ms > 0 {
        services.spawn("tls-poll", |stop| control::tls::poll(Arc::clone(&shared), stop));
    }
    let running = ledger.start()?;
    let deadline = Duration::from_millis(config.server.shutdown_deadline_ms);
    let tables = service::tables(Arc::clone(&shared));
    services.spawn("usage-ledger", |stop| {
        service::run(Arc::clone(&ledger), running, tables, Arc::clone(&shared.tuning), stop, deadline)
    });
    let counters = Arc::clone(&shared.counters);
    services.spawn("usage-reports", |mut stop| async move {
        tokio::select! {
            _ = service::serve_reports(ledger, reports, counters) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    });

    tracing::info!(
        shards = shards.len(),
        keys = key_count,
        "listening http={} https={} udp={} admin={admin_addr}",
        shown(addrs.http),
        shown(addrs.https),
        addrs.udp
    );
    control::profile::apply_log_level(&shared.tuning.active());
    let ready = format!(
        "READY=1\nSTATUS=serving http={} https={} udp={} admin={admin_addr}",
        shown(addrs.http),
        shown(addrs.https),
        addrs.udp
    );
    let notifier = crate::notify::Notifier::from_env().map(Arc::new);
    if let Some(notifier) = &notifier {
        notifier.send(&ready);
        if let Some(every) = notifier.watchdog() {
            tracing::info!(every_ms = every.as_millis() as u64, "watchdog on: fed while every shard beats");
            let probe = Duration::from_millis(config.governor.probe_ms);
            let draining = Arc::clone(&shared);
            let feeding =
                Arc::clone(notifier).feed_watchdog(Arc::clone(&shared.heartbeats), probe, move || draining.draining());
            tokio::spawn(feeding);
        }
    }
    let notify = |message: &str| notifier.iter().for_each(|n| n.send(message));

    let mut outcome = Ok(());
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = signals.interrupt.recv() => { tracing::info!("SIGINT: draining"); break; }
            _ = signals.hangup.recv() => {
                notify("RELOADING=1\nSTATUS=reloading keys and certificate");
                let _ = control::keys::reload(&shared, "SIGHUP");
                let _ = control::tls::reload(&shared, "SIGHUP");
                notify(&ready);
            }
            Some(shard) = exited.recv() => {
                tracing::error!(shard, "shard stopped unexpectedly: draining the others and exiting");
                outcome = Err(anyhow::anyhow!("shard {shard} stopped unexpectedly"));
                break;
            }
        }
    }
    // The shards first: once they have stopped nothing counts any more, so the services' stop
    // (the ledger's last drain among them) sees every count.
    let started = tokio::time::Instant::now();
    notify("STOPPING=1\nSTATUS=draining");
    shared.start_draining();
    listeners::shut_down_read(&wake.0, &wake.1);
    let joined = tokio::task::spawn_blocking(move || {
        for handle in shards {
            let _ = handle.thread.join();
        }
    });
    if tokio::time::timeout(deadline, joined).await.is_err() {
        tracing::warn!("shards did not stop before the shutdown deadline");
    }
    services.stop(deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(500))).await;
    outcome
}
