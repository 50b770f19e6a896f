//! Configuration: one `Config` made of per-part sections, parsed whole from TOML (plus command-line
//! overrides) before any socket binds. `config/pricebeast.toml` documents every setting and equals
//! `Config::default()`, which a test keeps true.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the server needs to start.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub http: HttpConfig,
    pub udp: UdpConfig,
    pub admin: AdminConfig,
    pub keys: KeysConfig,
    pub book: BookConfig,
    pub feed: FeedConfig,
    pub stream: StreamConfig,
    pub usage: UsageConfig,
    pub tls: TlsConfig,
    pub cluster: ClusterConfig,
    pub fallback: FallbackConfig,
    pub profiles: ProfilesConfig,
    pub governor: GovernorConfig,
    pub log: LogConfig,
}

/// Tuning profiles (`config/profiles.toml`), switched at runtime through `/admin/system-mode`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesConfig {
    /// The profiles file; when it does not exist, the built-in copy of the shipped one.
    pub file: PathBuf,
    /// The profile in force at start (`serve --profile` overrides it).
    pub active: String,
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        Self { file: PathBuf::from("profiles.toml"), active: "fresh-price".into() }
    }
}

/// The governor: each shard measures how late it runs its own timer, and while that runs past
/// `shed_above_us` it sheds public requests so partners keep their latency.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernorConfig {
    /// Whether the governor may shed (a profile's `governor` overrides it).
    pub enabled: bool,
    /// How often each shard measures how late it runs (its lateness).
    pub probe_ms: u64,
    /// A measured delay above this starts shedding public requests.
    pub shed_above_us: u64,
    /// Shedding goes on until no measurement has been above the threshold for this long.
    pub hold_ms: u64,
    /// The `Retry-After` of a shed HTTP request.
    pub retry_after_s: u64,
    /// A connection that had a request shed is not read again for this long.
    pub shed_pause_ms: u64,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        Self { enabled: true, probe_ms: 10, shed_above_us: 1500, hold_ms: 1000, retry_after_s: 1, shed_pause_ms: 100 }
    }
}

/// Listeners and shards.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Plain HTTP; `None` (`""` in the file) turns it off.
    #[serde(deserialize_with = "listen_addr")]
    pub http: Option<SocketAddr>,
    /// HTTPS (and `wss://`) with `[tls]`'s certificate; `None` (`""`, the default) is off.
    #[serde(deserialize_with = "listen_addr")]
    pub https: Option<SocketAddr>,
    pub udp: SocketAddr,
    /// 0: one shard per core.
    pub shards: usize,
    pub io_driver: IoDriver,
    /// Pin shard i to core i.
    pub pin_shards: bool,
    pub listen_backlog: u32,
    pub shutdown_deadline_ms: u64,
    /// This node's name in cluster stats; empty: the host name.
    pub node_name: String,
}

/// A listener's address, or `""` for none.
fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

/// `""` (off) or an address such as `0.0.0.0:8443`; for the file and the command line alike.
pub fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| format!("{text:?} is not an address such as 0.0.0.0:8443 (or \"\" for off)"))
}

/// HTTPS: the certificate the `server.https` listener presents, and the bounds on handshakes.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM: the certificate chain, leaf first. Relative paths are relative to the working directory.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, SEC1 or PKCS#1; ECDSA P-256/P-384, Ed25519 or RSA).
    pub key_file: PathBuf,
    /// How often the two files' modification times are checked for a reload; 0: only on SIGHUP
    /// or `POST /admin/tls/reload`.
    pub reload_poll_ms: u64,
    /// A handshake not finished this long after the connection was accepted is closed.
    pub handshake_timeout_ms: u64,
    /// Handshakes one shard runs at once; a connection beyond them is closed at once.
    pub handshakes_per_shard_max: usize,
}

/// Several nodes sharing one Redis: their stats (`/admin/cluster-stats`). Off without `redis_url`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`; empty: a single node, no Redis.
    pub redis_url: String,
    /// How often this node writes its stats snapshot to Redis.
    pub stats_publish_ms: u64,
    /// How long a snapshot stays readable: a node silent this long is no longer listed.
    pub stats_ttl_s: u64,
    /// A Redis connect (and each reconnect attempt) that takes longer fails.
    pub connect_timeout_ms: u64,
    /// A Redis command answered later than this fails (and counts as Redis being down).
    pub response_timeout_ms: u64,
    /// How often this node writes the prices its venues give it to Redis (the other nodes' L2
    /// cache); 0: never.
    pub price_publish_ms: u64,
    /// How long a price written there stays readable.
    pub price_ttl_ms: u64,
}

/// What a configured symbol with no fresh venue is looked up in: Redis (in cluster mode), then
/// the exchanges' REST tickers.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// The venues whose REST ticker is asked, in order (`coinbase`, `kraken`); each only for the
    /// symbols of its `[feed.exchanges.NAME]`. Empty: no REST fallback.
    pub rest: Vec<String>,
    /// A lookup that has not answered by then is 504 `upstream_timeout`.
    pub deadline_ms: u64,
    /// A looked-up price is served from the book this long before the symbol is looked up again.
    pub hold_ms: u64,
    /// Lookups waiting on the control plane, per node; past it a miss is 503 `overloaded`.
    pub queue_max: usize,
}

/// Which monoio driver the shards run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum IoDriver {
    /// io_uring, or epoll where io_uring is refused.
    Auto,
    #[value(name = "io_uring")]
    IoUring,
    Epoll,
}

/// Limits of the public HTTP path. A connection holds `head_bytes_max + body_bytes_max` of read
/// buffer while it reads (until `buffer_release_ms` of quiet) and a write buffer only while it
/// writes; both come from its shard's pools.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub head_bytes_max: usize,
    pub body_bytes_max: usize,
    pub header_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// A keep-alive connection whose client has sent nothing for this long gives its read
    /// buffer back to the shard's pool, and waits for bytes holding none.
    pub buffer_release_ms: u64,
    pub connections_per_shard_max: usize,
    /// Origins whose pages may call the API from a browser (docs/protocol.md "CORS"): `["*"]`
    /// for any, as public market-data APIs do; `[]` sends no CORS header at all.
    pub cors_origins: Vec<String>,
    /// How long a browser may cache a preflight's answer (`Access-Control-Max-Age`).
    pub cors_max_age_s: u32,
}

/// WebSocket streaming: sessions, the fan-out tick, and the limits that keep one client from
/// costing the others anything.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// How often each shard checks its streams' deadlines (pings, idle timeouts, stalled
    /// writes). Prices do not wait for it: a move wakes the shard (`stream::fanout`).
    pub tick_ms: u64,
    /// The least time between two price frames of one stream: moves inside it are conflated
    /// into the next frame, which waits at most this long. 0: a frame per wake-up.
    pub frame_interval_ms_min: u64,
    /// Bytes of control frames (pongs, error replies) one stream may have waiting for its
    /// socket; a client that sends more than it reads is closed with 1008 at the bound.
    pub control_bytes_max: usize,
    /// How long a created session may wait for its upgrade.
    pub session_ttl_s: u64,
    /// Sessions created but not yet redeemed, node-wide; one more is refused with 503.
    pub sessions_pending_max: usize,
    /// Open streams one shard holds; one more upgrade is refused with 503.
    pub streams_per_shard_max: usize,
    /// Open streams one public key may hold across the node (429 beyond).
    pub public_streams_per_key_max: u32,
    /// Open streams one partner key may hold across the node (429 beyond).
    pub partner_streams_per_key_max: u32,
    /// The server pings a stream that has sent nothing for this long.
    pub ping_interval_ms: u64,
    /// A stream that has sent nothing (not even a pong) for this long is closed.
    pub idle_timeout_ms: u64,
    /// A stream whose socket has not taken a frame for this long is closed (a client that
    /// stopped reading); until then its updates are conflated, never queued.
    pub send_stall_ms: u64,
    /// SO_SNDBUF of a stream's socket: bounds the kernel memory a client that stops reading
    /// can pin. 0: the kernel's default.
    pub send_buffer_bytes: usize,
    /// The largest message a client may send (a symbol change); larger closes with 1009.
    pub message_bytes_max: usize,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    /// SO_RCVBUF and SO_SNDBUF of each shard's socket.
    pub socket_buffer_bytes: usize,
    /// Datagrams taken per recvmmsg and answered per sendmmsg. Costs about 2.3 KiB each per shard.
    pub batch_max: usize,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    /// Bearer token for the admin listener; empty: `PRICEBEAST_ADMIN_TOKEN`, else none (loopback only).
    pub token: String,
    /// How often the counters are sampled for the derived rates.
    pub stats_interval_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    pub file: PathBuf,
    /// How often the keys file's modification time is checked; 0: only on SIGHUP or the admin call.
    pub poll_ms: u64,
    /// Limits given to `pricebeast keys new --tier public` when none are named.
    pub public_qps: u32,
    pub public_burst: u32,
    pub public_monthly_cap: u64,
}

/// The usage ledger (README "Usage ledger").
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// `sqlite:PATH` (a relative PATH is beside the keys file), `postgres://...` for a fleet, or
    /// `memory` (counts in process only, forgotten at exit: for benchmarks).
    pub store: String,
    /// With PostgreSQL: the node's own SQLite journal (its outbox); relative: beside the keys file.
    pub journal: PathBuf,
    /// How often the shards' counts are drained and written; also the most a kill -9 can lose.
    pub flush_ms: u64,
    /// Most rows (one per key and hour) in one batch, that is one transaction.
    pub batch_max: usize,
    /// Batches that may wait for the writer; while it is full, counts wait on their keys.
    pub queue_max: usize,
    /// PostgreSQL connections a node may open (the writer's shipper and the reports share them).
    pub db_max_open: usize,
    /// Report requests from the shards that may wait for the store; past it, 503 `overloaded`.
    pub report_queue_max: usize,
    /// A report the store has not answered by then is answered 504 `upstream_timeout`.
    pub report_timeout_ms: u64,
    /// PostgreSQL connect and statement deadline.
    pub db_timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BookConfig {
    /// A venue's price is no longer used this long after it was received.
    pub stale_after_ms: u64,
    /// Rows the book is sized for at start.
    pub symbols_max: usize,
    /// With three or more fresh venues, a venue further than this many percent from the median
    /// of the others is left out of the served price; 0 turns the rule off. Up to two decimals.
    #[serde(deserialize_with = "percent")]
    pub outlier_pct: f64,
}

/// A percentage written as an integer (`5`) or a decimal (`2.5`): TOML keeps the two apart.
fn percent<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Integer(i64),
        Float(f64),
    }
    Ok(match Number::deserialize(deserializer)? {
        Number::Integer(n) => n as f64,
        Number::Float(x) => x,
    })
}

impl BookConfig {
    /// The outlier rule, in the book's exact terms (basis points).
    pub fn outlier_bound(&self) -> crate::book::OutlierBound {
        crate::book::OutlierBound::from_bps((self.outlier_pct * 100.0).round() as u32)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    pub kind: FeedKind,
    /// First reconnect delay after a feed connection fails; doubles up to `reconnect_max_ms`.
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// How long a symbol a venue refused waits before it is asked for again.
    pub refused_retry_ms: u64,
    pub simulator: SimulatorConfig,
    /// Exchange feeds by venue name (`coinbase`, `gemini`, `kraken`, `gateio`, `bybit`, `okx`).
    pub exchanges: BTreeMap<String, ExchangeConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedKind {
    Simulator,
    Exchanges,
}

/// One exchange feed.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeConfig {
    pub enabled: bool,
    /// The WebSocket URL; empty: the venue's production URL.
    pub url: String,
    /// Our symbol = the venue's spelling of it (`"BTC-USD" = "XBT/USD"`).
    pub symbols: BTreeMap<String, String>,
    /// No message for this long means a dead connection; 0: the venue's own rule.
    pub silence_ms: u64,
    /// How long a subscribe may wait for the venue's ack; 0: the venue's own rule.
    pub ack_deadline_ms: u64,
    /// The REST API's base URL, for `fallback.rest`; empty: the venue's production URL.
    pub rest_url: String,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            url: String::new(),
            symbols: BTreeMap::new(),
            silence_ms: 0,
            ack_deadline_ms: 0,
            rest_url: String::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Simulated venues (`sim-1` ...), each a slightly different price around one random walk.
    pub venues: usize,
    pub tick_ms: u64,
    /// Largest move per tick, in basis points of the price (100 = 1%).
    pub step_bps_max: u32,
    /// 0: a different walk every run; otherwise a repeatable one.
    pub seed: u64,
    pub crypto: Vec<String>,
    /// Also simulate the 859 built-in stock tickers.
    pub stocks: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `pricebeast=debug`, ... (`RUST_LOG` wins when set).
    pub level: String,
    /// `text` (one human line per event) or `json` (one JSON object per line, for a log
    /// shipper). Applies to the access log too.
    pub format: LogFormat,
    /// The access log: `""` (off), `"stderr"`, or a file appended to. One line per HTTP request,
    /// written off the shards (`access_log`).
    pub access: String,
    /// Access-log lines waiting for the writer; beyond, lines are dropped and counted
    /// (`pricebeast_errors_total{component="access_log"}`) rather than slowing a shard down.
    pub access_queue: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            https: None,
            udp: SocketAddr::from(([0, 0, 0, 0], 2679)),
            shards: 0,
            io_driver: IoDriver::Auto,
            pin_shards: true,
            listen_backlog: 4096,
            shutdown_deadline_ms: 10_000,
            node_name: String::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            head_bytes_max: 8192,
            body_bytes_max: 4096,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            buffer_release_ms: 1_000,
            connections_per_shard_max: 10_000,
            cors_origins: vec!["*".into()],
            cors_max_age_s: 600,
        }
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            tick_ms: 100,
            frame_interval_ms_min: 5,
            control_bytes_max: 16_384,
            session_ttl_s: 60,
            sessions_pending_max: 10_000,
            streams_per_shard_max: 10_000,
            public_streams_per_key_max: 10,
            partner_streams_per_key_max: 20_000,
            ping_interval_ms: 20_000,
            idle_timeout_ms: 60_000,
            send_stall_ms: 10_000,
            send_buffer_bytes: 65_536,
            message_bytes_max: 4096,
        }
    }
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self { socket_buffer_bytes: 4 << 20, batch_max: 32 }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { addr: SocketAddr::from(([127, 0, 0, 1], 9090)), token: String::new(), stats_interval_ms: 1000 }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from("keys.toml"),
            poll_ms: 1000,
            public_qps: 10,
            public_burst: 20,
            public_monthly_cap: 1_000_000,
        }
    }
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            store: "sqlite:usage.db".into(),
            journal: PathBuf::from("usage-journal.db"),
            flush_ms: 1000,
            batch_max: 1000,
            queue_max: 8,
            db_max_open: 4,
            report_queue_max: 64,
            report_timeout_ms: 5000,
            db_timeout_ms: 3000,
        }
    }
}

impl Default for BookConfig {
    fn default() -> Self {
        Self { stale_after_ms: 5000, symbols_max: 4096, outlier_pct: 5.0 }
    }
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            kind: FeedKind::Simulator,
            reconnect_initial_ms: 250,
            reconnect_max_ms: 30_000,
            refused_retry_ms: crate::feeds::supervisor::REFUSED_RETRY_MS,
            simulator: SimulatorConfig::default(),
            exchanges: BTreeMap::new(),
        }
    }
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            venues: 3,
            tick_ms: 100,
            step_bps_max: 100,
            seed: 0,
            crypto: ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "AVAX-USD", "LTC-USD"]
                .map(String::from)
                .to_vec(),
            stocks: true,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::from("tls/cert.pem"),
            key_file: PathBuf::from("tls/key.pem"),
            reload_poll_ms: 5000,
            handshake_timeout_ms: 10_000,
            handshakes_per_shard_max: 1024,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            stats_publish_ms: 3000,
            stats_ttl_s: 30,
            connect_timeout_ms: 1000,
            response_timeout_ms: 500,
            price_publish_ms: 1000,
            price_ttl_ms: 5000,
        }
    }
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self { rest: vec!["coinbase".into(), "kraken".into()], deadline_ms: 2000, hold_ms: 2000, queue_max: 1024 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text, access: String::new(), access_queue: 8192 }
    }
}

/// Why a configuration was refused. The message names the file, the line and the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{origin}: {setting}: {problem}")]
    Invalid { origin: String, setting: &'static str, problem: String },
    #[error("{origin}: line {line}: {setting}: {problem}")]
    InvalidAt { origin: String, line: usize, setting: &'static str, problem: String },
}

/// The smallest and largest head buffer: below 1 KiB ordinary browsers' headers do not fit.
pub const HEAD_BYTES_MIN: usize = 1024;
pub const HEAD_BYTES_LIMIT: usize = 64 * 1024;
pub const BODY_BYTES_LIMIT: usize = 64 * 1024;
pub const CONNECTIONS_PER_SHARD_LIMIT: usize = 100_000;
/// The longest HTTP timeout or release time a setting may name: a day, far beyond any use, and
/// small enough that the shards' nanosecond deadlines never overflow.
pub const HTTP_TIME_MS_LIMIT: u64 = 86_400_000;
pub const UDP_BATCH_LIMIT: usize = 1024;
/// Access-log lines a queue may hold: about 200 bytes each.
pub const ACCESS_QUEUE_LIMIT: usize = 1 << 20;
pub const SESSIONS_PENDING_LIMIT: usize = 1_000_000;
/// A symbol change naming 100 of the longest symbols needs about 3.5 KiB.
pub const MESSAGE_BYTES_MIN: usize = 128;
pub const MESSAGE_BYTES_LIMIT: usize = 1 << 20;
/// The most control bytes a stream may hold waiting (`stream.control_bytes_max`).
pub const CONTROL_BYTES_LIMIT: usize = 4 << 20;

impl Config {
    /// Reads `path`, or the defaults when `None`. The relative paths of a file are made relative
    /// to that file's directory, so `keys new --config /etc/pricebeast/pricebeast.toml` run from
    /// anywhere writes the keys file the service started with that file reads.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else { return Ok(Self::default()) };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: shown.clone(), error })?;
        let mut config = Self::parse(&text, &shown)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// Puts `base` before every relative path: the files this config names and the defaults it
    /// leaves (a `sqlite:` store and the journal are beside the keys file, so they follow it).
    pub fn resolve_paths(&mut self, base: &Path) {
        if base.as_os_str().is_empty() {
            return;
        }
        for path in [&mut self.keys.file, &mut self.tls.cert_file, &mut self.tls.key_file, &mut self.profiles.file] {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.check(origin).map_err(|error| match error {
            ConfigError::Invalid { origin, setting, problem } => match line_of(text, setting) {
                Some(line) => ConfigError::InvalidAt { origin, line, setting, problem },
                None => ConfigError::Invalid { origin, setting, problem },
            },
            other => other,
        })?;
        Ok(config)
    }

    /// The relations between settings that a type alone cannot hold.
    pub fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |setting: &'static str, problem: String| {
            Err(ConfigError::Invalid { origin: origin.to_owned(), setting, problem })
        };
        let h = &self.http;
        if !(HEAD_BYTES_MIN..=HEAD_BYTES_LIMIT).contains(&h.head_bytes_max) {
            return fail("http.head_bytes_max", format!("must be {HEAD_BYTES_MIN} to {HEAD_BYTES_LIMIT}"));
        }
        if h.body_bytes_max > BODY_BYTES_LIMIT {
            return fail("http.body_bytes_max", format!("must be at most {BODY_BYTES_LIMIT}"));
        }
        if !(1..=HTTP_TIME_MS_LIMIT).contains(&h.header_timeout_ms) {
            return fail("http.header_timeout_ms", format!("must be 1 to {HTTP_TIME_MS_LIMIT}"));
        }
        if !(1..=HTTP_TIME_MS_LIMIT).contains(&h.idle_timeout_ms) {
            return fail("http.idle_timeout_ms", format!("must be 1 to {HTTP_TIME_MS_LIMIT}"));
        }
        if h.buffer_release_ms > HTTP_TIME_MS_LIMIT {
            return fail("http.buffer_release_ms", format!("must be 0 to {HTTP_TIME_MS_LIMIT}"));
        }
        if !(1..=CONNECTIONS_PER_SHARD_LIMIT).contains(&h.connections_per_shard_max) {
            return fail("http.connections_per_shard_max", format!("must be 1 to {CONNECTIONS_PER_SHARD_LIMIT}"));
        }
        if let Err(problem) = crate::http::cors::validate(&h.cors_origins) {
            return fail("http.cors_origins", problem);
        }
        if !(1..=ACCESS_QUEUE_LIMIT).contains(&self.log.access_queue) {
            return fail("log.access_queue", format!("must be 1 to {ACCESS_QUEUE_LIMIT}"));
        }
        if !(1..=UDP_BATCH_LIMIT).contains(&self.udp.batch_max) {
            return fail("udp.batch_max", format!("must be 1 to {UDP_BATCH_LIMIT}"));
        }
        if self.admin.stats_interval_ms < 100 {
            return fail("admin.stats_interval_ms", "must be at least 100".into());
        }
        if self.server.http.is_none() && self.server.https.is_none() {
            return fail("server.http", "is off and so is server.https: nothing would serve HTTP".into());
        }
        if self.server.https.is_some_and(|a| a.port() != 0) && self.server.https == self.server.http {
            return fail("server.https", "must differ from server.http".into());
        }
        let t = &self.tls;
        if !(1..=HTTP_TIME_MS_LIMIT).contains(&t.handshake_timeout_ms) {
            return fail("tls.handshake_timeout_ms", format!("must be 1 to {HTTP_TIME_MS_LIMIT}"));
        }
        let c = &self.cluster;
        if !c.redis_url.is_empty() && redis::Client::open(c.redis_url.as_str()).is_err() {
            return fail("cluster.redis_url", format!("{:?} is not a redis:// URL", c.redis_url));
        }
        if !(100..=60_000).contains(&c.stats_publish_ms) {
            return fail("cluster.stats_publish_ms", "must be 100 to 60000".into());
        }
        if c.stats_ttl_s == 0 || c.stats_ttl_s * 1000 <= c.stats_publish_ms {
            return fail("cluster.stats_ttl_s", "must be longer than cluster.stats_publish_ms".into());
        }
        if c.connect_timeout_ms == 0 || c.response_timeout_ms == 0 {
            return fail("cluster.connect_timeout_ms", "the Redis timeouts must be above 0".into());
        }
        if c.price_publish_ms != 0 && !(100..=60_000).contains(&c.price_publish_ms) {
            return fail("cluster.price_publish_ms", "must be 0 (never) or 100 to 60000".into());
        }
        if !(100..=3_600_000).contains(&c.price_ttl_ms) {
            return fail("cluster.price_ttl_ms", "must be 100 to 3600000".into());
        }
        let f = &self.fallback;
        for name in &f.rest {
            if crate::feeds::rest::RestVenue::parse(name).is_none() {
                return fail("fallback.rest", format!("no REST fallback for {name:?}; known: coinbase, kraken"));
            }
        }
        if !(1..=60_000).contains(&f.deadline_ms) {
            return fail("fallback.deadline_ms", "must be 1 to 60000".into());
        }
        if !(1..=HTTP_TIME_MS_LIMIT).contains(&f.hold_ms) {
            return fail("fallback.hold_ms", format!("must be 1 to {HTTP_TIME_MS_LIMIT}"));
        }
        if !(1..=1_000_000).contains(&f.queue_max) {
            return fail("fallback.queue_max", "must be 1 to 1000000".into());
        }
        if !(1..=CONNECTIONS_PER_SHARD_LIMIT).contains(&t.handshakes_per_shard_max) {
            return fail("tls.handshakes_per_shard_max", format!("must be 1 to {CONNECTIONS_PER_SHARD_LIMIT}"));
        }
        if t.reload_poll_ms > HTTP_TIME_MS_LIMIT {
            return fail("tls.reload_poll_ms", format!("must be 0 to {HTTP_TIME_MS_LIMIT}"));
        }
        if self.server.shards > crate::book::moves::SHARDS_MAX {
            return fail("server.shards", format!("must be 0 (one per core) to {}", crate::book::moves::SHARDS_MAX));
        }
        let g = &self.governor;
        if !(1..=1000).contains(&g.probe_ms) {
            return fail("governor.probe_ms", "must be 1 to 1000".into());
        }
        if !(1..=10_000_000).contains(&g.shed_above_us) {
            return fail("governor.shed_above_us", "must be 1 to 10000000".into());
        }
        if g.hold_ms > 600_000 {
            return fail("governor.hold_ms", "must be 0 to 600000".into());
        }
        if !(1..=3600).contains(&g.retry_after_s) {
            return fail("governor.retry_after_s", "must be 1 to 3600".into());
        }
        if g.shed_pause_ms > 60_000 {
            return fail("governor.shed_pause_ms", "must be 0 to 60000".into());
        }
        if self.profiles.active.is_empty() {
            return fail("profiles.active", "must name a profile (config/profiles.toml)".into());
        }
        let u = &self.usage;
        if let Err(problem) = crate::usage::ledger::StoreKind::parse(&u.store) {
            return fail("usage.store", problem);
        }
        if !(10..=600_000).contains(&u.flush_ms) {
            return fail("usage.flush_ms", "must be 10 to 600000".into());
        }
        if !(1..=100_000).contains(&u.batch_max) {
            return fail("usage.batch_max", "must be 1 to 100000".into());
        }
        if !(1..=1024).contains(&u.queue_max) {
            return fail("usage.queue_max", "must be 1 to 1024".into());
        }
        if !(1..=64).contains(&u.db_max_open) {
            return fail("usage.db_max_open", "must be 1 to 64".into());
        }
        if !(1..=65_536).contains(&u.report_queue_max) {
            return fail("usage.report_queue_max", "must be 1 to 65536".into());
        }
        if !(1..=HTTP_TIME_MS_LIMIT).contains(&u.report_timeout_ms) {
            return fail("usage.report_timeout_ms", format!("must be 1 to {HTTP_TIME_MS_LIMIT}"));
        }
        if !(1..=HTTP_TIME_MS_LIMIT).contains(&u.db_timeout_ms) {
            return fail("usage.db_timeout_ms", format!("must be 1 to {HTTP_TIME_MS_LIMIT}"));
        }
        if self.book.stale_after_ms == 0 {
            return fail("book.stale_after_ms", "must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.book.symbols_max) {
            return fail("book.symbols_max", "must be 1 to 1000000".into());
        }
        let pct = self.book.outlier_pct;
        if !(0.0..=50.0).contains(&pct) || ((pct * 100.0).round() - pct * 100.0).abs() > 1e-6 {
            return fail("book.outlier_pct", format!("must be 0 (off) to 50, with at most two decimals (got {pct})"));
        }
        let sim = &self.feed.simulator;
        if !(1..=crate::book::VENUES_MAX).contains(&sim.venues) {
            return fail("feed.simulator.venues", format!("must be 1 to {}", crate::book::VENUES_MAX));
        }
        if sim.tick_ms == 0 {
            return fail("feed.simulator.tick_ms", "must be at least 1".into());
        }
        if sim.step_bps_max > 1000 {
            return fail("feed.simulator.step_bps_max", "must be at most 1000 (10%)".into());
        }
        let feed = &self.feed;
        if feed.reconnect_initial_ms == 0 || feed.reconnect_max_ms < feed.reconnect_initial_ms {
            return fail("feed.reconnect_max_ms", "need 0 < reconnect_initial_ms <= reconnect_max_ms".into());
        }
        if feed.refused_retry_ms < 1_000 {
            return fail(
                "feed.refused_retry_ms",
                "must be at least 1000 (a refused symbol is never asked for in a loop)".into(),
            );
        }
        for (name, exchange) in &feed.exchanges {
            if crate::feeds::venue(name).is_none() {
                return Err(ConfigError::Invalid {
                    origin: origin.to_owned(),
                    setting: "feed.exchanges",
                    problem: format!("unknown venue {name:?}; known: coinbase, gemini, kraken, gateio, bybit, okx"),
                });
            }
            for ours in exchange.symbols.keys() {
                if crate::book::SymbolName::parse(ours.as_bytes()).is_none() {
                    return Err(ConfigError::Invalid {
                        origin: origin.to_owned(),
                        setting: "feed.exchanges",
                        problem: format!("{name}: {ours:?} is not a symbol (1 to 32 of A-Z 0-9 - _ . /)"),
                    });
                }
            }
        }
        if feed.kind == FeedKind::Exchanges && !feed.exchanges.values().any(|e| e.enabled && !e.symbols.is_empty()) {
            return fail(
                "feed.kind",
                "\"exchanges\" needs at least one enabled [feed.exchanges.NAME] with symbols".into(),
            );
        }
        for (setting, value) in [
            ("keys.public_qps", u64::from(self.keys.public_qps)),
            ("keys.public_burst", u64::from(self.keys.public_burst)),
            ("keys.public_monthly_cap", self.keys.public_monthly_cap),
        ] {
            if value == 0 {
                return fail(setting, "must be at least 1".into());
            }
        }
        let st = &self.stream;
        if !(10..=60_000).contains(&st.tick_ms) {
            return fail("stream.tick_ms", "must be 10 to 60000".into());
        }
        if st.frame_interval_ms_min > 60_000 {
            return fail("stream.frame_interval_ms_min", "must be 0 to 60000".into());
        }
        if !(st.message_bytes_max + 512..=CONTROL_BYTES_LIMIT).contains(&st.control_bytes_max) {
            return fail(
                "stream.control_bytes_max",
                format!("must be message_bytes_max + 512 (room for one error reply) to {CONTROL_BYTES_LIMIT}"),
            );
        }
        if !(1..=3600).contains(&st.session_ttl_s) {
            return fail("stream.session_ttl_s", "must be 1 to 3600".into());
        }
        if !(1..=SESSIONS_PENDING_LIMIT).contains(&st.sessions_pending_max) {
            return fail("stream.sessions_pending_max", format!("must be 1 to {SESSIONS_PENDING_LIMIT}"));
        }
        if !(1..=CONNECTIONS_PER_SHARD_LIMIT).contains(&st.streams_per_shard_max) {
            return fail("stream.streams_per_shard_max", format!("must be 1 to {CONNECTIONS_PER_SHARD_LIMIT}"));
        }
        if st.ping_interval_ms == 0 || st.idle_timeout_ms <= st.ping_interval_ms {
            return fail("stream.idle_timeout_ms", "need 0 < ping_interval_ms < idle_timeout_ms".into());
        }
        if st.send_stall_ms == 0 {
            return fail("stream.send_stall_ms", "must be at least 1".into());
        }
        if !(MESSAGE_BYTES_MIN..=MESSAGE_BYTES_LIMIT).contains(&st.message_bytes_max) {
            return fail("stream.message_bytes_max", format!("must be {MESSAGE_BYTES_MIN} to {MESSAGE_BYTES_LIMIT}"));
        }
        if self.log.level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return fail("log.level", format!("{:?} is not a tracing filter", self.log.level));
        }
        Ok(())
    }

    /// The number of shards to start.
    pub fn shard_count(&self) -> usize {
        match self.server.shards {
            0 => std::thread::available_parallelism().map_or(1, usize::from).min(crate::book::moves::SHARDS_MAX),
            n => n,
        }
    }

    /// The admin token: the config's, else `PRICEBEAST_ADMIN_TOKEN`'s, else none.
    pub fn admin_token(&self) -> Option<String> {
        if !self.admin.token.is_empty() {
            return Some(self.admin.token.clone());
        }
        std::env::var("PRICEBEAST_ADMIN_TOKEN").ok().filter(|t| !t.is_empty())
    }

    /// This node's name in stats.
    pub fn node_name(&self) -> String {
        if !self.server.node_name.is_empty() {
            return self.server.node_name.clone();
        }
        hostname().unwrap_or_else(|| "pricebeast".into())
    }
}

/// The host's name from gethostname(2): the installed service sees only its own /proc
/// (`ProcSubset=pid`), where /proc/sys/kernel/hostname is hidden.
#[allow(unsafe_code)]
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`, which we own and which
    // outlives the call; the result is read only up to the first NUL, within `buf`.
    let result = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if result != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

/// The 1-based line that sets `section.key` in TOML `text`, for error messages. Finds the plain
/// `key = value` form under `[section]`; other spellings fall back to naming the setting alone.
fn line_of(text: &str, setting: &str) -> Option<usize> {
    let (section, key) = setting.rsplit_once('.')?;
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = header.trim();
        } else if current == section && line.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_default_file_is_the_default() {
        let text = include_str!("../../config/pricebeast.toml");
        let parsed = Config::parse(text, "config/pricebeast.toml").expect("default file parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn the_shipped_exchange_configs_parse() {
        let production = Config::parse(include_str!("../../config/production.toml"), "config/production.toml")
            .expect("production config parses");
        assert_eq!(production.feed.kind, FeedKind::Exchanges);
        assert!(production.feed.exchanges.values().all(|e| e.url.starts_with("wss://")));
        let mock = Config::parse(include_str!("../../config/mock-exchanges.toml"), "config/mock-exchanges.toml")
            .expect("mock exchanges config parses");
        assert!(mock.feed.exchanges.values().all(|e| e.url.starts_with("ws://127.0.0.1:95")));
    }

    #[test]
    fn an_empty_file_is_the_default() {
        assert_eq!(Config::parse("", "empty").expect("parses"), Config::default());
    }

    #[test]
    fn errors_name_file_line_and_setting() {
        let err = Config::parse("[server]\nshards = \"many\"\n", "my.toml").expect_err("bad type");
        let text = err.to_string();
        assert!(text.starts_with("my.toml: "), "{text}");
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("shards"), "{text}");

        let err = Config::parse("[http]\nhead_bytez_max = 1\n", "my.toml").expect_err("unknown");
        assert!(err.to_string().contains("head_bytez_max"), "{err}");

        let err = Config::parse("# c\n[http]\nhead_bytes_max = 10\n", "my.toml").expect_err("too small");
        assert_eq!(err.to_string(), "my.toml: line 3: http.head_bytes_max: must be 1024 to 65536");
        let err = Config::parse("[feed.simulator]\nvenues = 0\n", "my.toml").expect_err("no venues");
        assert_eq!(err.to_string(), "my.toml: line 2: feed.simulator.venues: must be 1 to 8");
    }

    #[test]
    fn outlier_pct_takes_integers_and_two_decimals() {
        let bound = |text: &str| Config::parse(text, "my.toml").map(|c| c.book.outlier_bound().bps());
        assert_eq!(bound("[book]\noutlier_pct = 5\n").expect("integer"), 500);
        assert_eq!(bound("[book]\noutlier_pct = 2.5\n").expect("decimal"), 250);
        assert_eq!(bound("[book]\noutlier_pct = 0\n").expect("off"), 0);
        let err = bound("[book]\noutlier_pct = 80\n").expect_err("too wide");
        assert!(err.to_string().contains("book.outlier_pct: must be 0 (off) to 50"), "{err}");
        assert!(bound("[book]\noutlier_pct = 1.005\n").is_err(), "three decimals");
        assert!(bound("[book]\noutlier_pct = \"5\"\n").is_err(), "a string");
    }

    #[test]
    fn http_times_are_bounded_so_deadlines_cannot_overflow() {
        let err = Config::parse("[http]\nidle_timeout_ms = 18446744073710\n", "my.toml").expect_err("too long");
        assert_eq!(err.to_string(), "my.toml: line 2: http.idle_timeout_ms: must be 1 to 86400000");
        let err = Config::parse("[http]\nbuffer_release_ms = 86400001\n", "my.toml").expect_err("too long");
        assert_eq!(err.to_string(), "my.toml: line 2: http.buffer_release_ms: must be 0 to 86400000");
        assert!(Config::parse("[http]\nbuffer_release_ms = 0\n", "my.toml").is_ok(), "0: release at the next sweep");
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("pb.toml");
        let text = "[keys]\nfile = \"keys.toml\"\n[tls]\ncert_file = \"/abs/cert.pem\"\n";
        std::fs::write(&file, text).expect("writing the config");
        let config = Config::load(Some(&file)).expect("loads");
        assert_eq!(config.keys.file, dir.path().join("keys.toml"), "written in the file");
        assert_eq!(config.tls.cert_file, Path::new("/abs/cert.pem"), "absolute: kept");
        assert_eq!(config.tls.key_file, dir.path().join("tls/key.pem"), "a default: beside the file too");
        assert_eq!(config.profiles.file, dir.path().join("profiles.toml"));

        // No file: the defaults stay relative to the working directory.
        assert_eq!(Config::load(None).expect("defaults").keys.file, Path::new("keys.toml"));
        // A file named without a directory is in the working directory: nothing to put before.
        let mut config = Config::default();
        config.resolve_paths(Path::new(""));
        assert_eq!(config, Config::default());
    }

    #[test]
    fn the_node_name_is_the_host_name_without_reading_proc_sys() {
        let proc = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("this machine's host name");
        assert_eq!(Config::default().node_name(), proc.trim());
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Config::load(Some(Path::new("/nonexistent/pb.toml"))).expect_err("missing");
        assert!(err.to_string().starts_with("/nonexistent/pb.toml: "), "{err}");
    }
}
