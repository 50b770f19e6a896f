//! The public HTTP path's decisions: one request in, one response written into the connection's
//! buffer. A pure function of (request, now, shared state): no socket, no clock, no allocation.

use crate::admission::{self, Charge, Refusal};
use crate::book::json::{self as price_json, PRICE_OBJECT_BYTES_MAX};
use crate::book::{Layer, SymbolId, SymbolName, VenueQuote, SYMBOL_BYTES_MAX, VENUES_MAX};
use crate::buf::FixedBuf;
use crate::counters::Counter;
use crate::fallback::{Looked, MissJob};
use crate::http::json;
use crate::http::request::{Method, Request, RequestError};
use crate::http::response::{self, ContentType, ErrorCode, Extra, Status, HEAD_BYTES_MAX};
use crate::http::route::{self, Route};
use crate::keys::KeyEntry;
use crate::state::Context;
use crate::stream::grant::Grant;
use crate::stream::handshake;
use crate::stream::sessions::CreateError;
use crate::stream::symbols::{self, Expect, SymbolsError};
use crate::stream::upgrade;
use crate::usage::ledger::report;
use crate::usage::ledger::service::{ReportAnswer, ReportJob};
use crate::usage::Channel;

/// Most symbols in one `/v1/prices` request.
pub const PRICES_MAX: usize = 100;

/// The largest body: a full `/v1/prices` answer with every symbol also listed as missing.
pub const BODY_BYTES_MAX: usize = 32 + PRICES_MAX * (PRICE_OBJECT_BYTES_MAX + 1) + PRICES_MAX * (SYMBOL_BYTES_MAX + 3);
/// The largest response; a connection's write buffer holds at least one.
pub const RESPONSE_BYTES_MAX: usize = HEAD_BYTES_MAX + BODY_BYTES_MAX;

/// The largest response to anything but `/v1/prices`: a price with 8 venues, or any error.
pub const SINGLE_RESPONSE_BYTES_MAX: usize = HEAD_BYTES_MAX + 2048;

/// Room a request's response may need in the connection's write buffer, so that pipelined small
/// requests share one write and only a batch request waits for an empty buffer.
pub fn response_room(route: Route) -> usize {
    match route {
        Route::Prices => RESPONSE_BYTES_MAX,
        _ => SINGLE_RESPONSE_BYTES_MAX,
    }
}

// A `/v1/price?sources=1` body (8 venues of at most 132 bytes each) fits the single bound.
const _: () = assert!(PRICE_OBJECT_BYTES_MAX + 12 + VENUES_MAX * 160 < SINGLE_RESPONSE_BYTES_MAX - HEAD_BYTES_MAX);
const _: () = assert!(RESPONSE_BYTES_MAX <= 32 * 1024);

/// Buffers a shard allocates once and reuses for every request.
pub struct Scratch {
    body: FixedBuf,
    decoded: Box<[u8]>,
    /// Set when a request was shed by the governor; the connection loop takes it (and then
    /// reads that connection's next request only after `governor.shed_pause_ms`).
    pub shed: bool,
    /// The status of the last response written, for the access log.
    pub status: u16,
    /// The key the last request was authenticated with; kept only when the access log is on.
    pub key: crate::access_log::KeyName,
}

impl Scratch {
    /// `head_bytes_max` bounds any query value, so decoding one always fits.
    pub fn new(head_bytes_max: usize) -> Self {
        Self {
            body: FixedBuf::with_capacity(BODY_BYTES_MAX),
            decoded: vec![0; head_bytes_max].into_boxed_slice(),
            shed: false,
            status: 0,
            key: Default::default(),
        }
    }
}

/// What the connection does after a response.
#[derive(Debug)]
pub enum After {
    KeepAlive,
    Close,
    /// A 101 (or an event stream's 200 head) was written: the connection is a stream from the
    /// next byte on, with what it was granted (its framing among it).
    Upgrade(Grant),
    /// The answer comes from the control plane (a usage report, a price lookup): wait for it,
    /// then write it with [`respond_deferred`] before answering anything after it.
    Defer(Deferred),
}

/// A request handed to the control plane, waiting for its answer.
#[derive(Debug)]
pub struct Deferred {
    pub pending: Pending,
    extra: Extra,
    head_only: bool,
    /// Its access-log line, waiting for the status (only when the access log is on).
    pub access: Option<Box<crate::access_log::Record>>,
}

/// What a deferred request waits for.
#[derive(Debug)]
pub enum Pending {
    Report(tokio::sync::oneshot::Receiver<ReportAnswer>),
    /// A `/v1/price` whose symbol had no fresh venue: once the lookup ends, the price is read
    /// from the book again (where the lookup left it) and written like any other.
    Price {
        looked: tokio::sync::oneshot::Receiver<Looked>,
        symbol: SymbolId,
        name: SymbolName,
        with_venues: bool,
    },
}

/// The control plane's answer to a deferred request.
#[derive(Debug)]
pub enum Answer {
    Report(ReportAnswer),
    Price(Looked),
}

struct Reply {
    status: Status,
    content_type: ContentType,
    extra: Extra,
    /// Set when the answer is the control plane's to give.
    deferred: Option<Pending>,
}

impl Reply {
    fn new(status: Status, content_type: ContentType, extra: Extra) -> Self {
        Self { status, content_type, extra, deferred: None }
    }
}

/// Answers one request, appending the response to `out`. `route` and `query` are
/// `Route::of(req.target)`, computed once by the caller.
pub fn respond(
    req: &Request<'_>,
    (route_kind, query): (Route, &[u8]),
    ctx: &Context<'_>,
    scratch: &mut Scratch,
    out: &mut FixedBuf,
) -> After {
    ctx.counters.inc(Counter::TcpRequests);
    scratch.body.clear();
    let cors = ctx.shared.cors.allow(req.origin);
    if req.method == Method::Options && route_kind != Route::NotFound {
        return options(req, route_kind, cors, ctx, scratch, out);
    }
    if route_kind == Route::Stream && req.method == Method::Get {
        return stream(req, query, cors, ctx, scratch, out);
    }
    let mut reply = route(route_kind, query, req, ctx, scratch);
    connection_headers(&mut reply.extra, req, cors, ctx);
    if let Some(pending) = reply.deferred.take() {
        let head_only = req.method == Method::Head;
        return After::Defer(Deferred { pending, extra: reply.extra, head_only, access: None });
    }
    finish(ctx, &reply, scratch, out, req.method == Method::Head);
    if reply.extra.close {
        After::Close
    } else {
        After::KeepAlive
    }
}

/// `GET /v1/stream`: a WebSocket upgrade answered `101`, or, asking for `text/event-stream` with
/// no upgrade, an event stream answered with a `200` head and no length. Either way the session is
/// redeemed the same, and the connection is the stream from the next byte on; a refusal gets the
/// same status in both.
fn stream(
    req: &Request<'_>,
    query: &[u8],
    cors: Option<crate::http::cors::Allowed>,
    ctx: &Context<'_>,
    scratch: &mut Scratch,
    out: &mut FixedBuf,
) -> After {
    let session_id = route::param(query, b"session_id");
    let accepted = if req.asks_for_events() && !req.upgrade.websocket {
        upgrade::accept_events(session_id, ctx).inspect(|_| {
            // Neither kept alive nor closed in words: the body runs until the connection ends.
            let reply = Reply::new(Status::OK, ContentType::EventStream, Extra { cors, ..Extra::default() });
            finish(ctx, &reply, scratch, out, false);
        })
    } else {
        upgrade::accept(session_id, &req.upgrade, ctx).map(|(grant, key)| {
            handshake::write_accept(out, key);
            scratch.status = 101;
            ctx.counters.count_response(101);
            grant
        })
    };
    match accepted {
        Ok(grant) => After::Upgrade(grant),
        Err(refusal) => {
            let mut reply = upgrade_refused(refusal, ctx, scratch);
            connection_headers(&mut reply.extra, req, cors, ctx);
            finish(ctx, &reply, scratch, out, false);
            if reply.extra.close {
                After::Close
            } else {
                After::KeepAlive
            }
        }
    }
}

/// What every response to `req` says of its connection and its origin: closed when the client
/// asked or the node drains, kept alive in words for an HTTP/1.0 client, readable by an allowed
/// browser origin.
fn connection_headers(
    extra: &mut Extra,
    req: &Request<'_>,
    cors: Option<crate::http::cors::Allowed>,
    ctx: &Context<'_>,
) {
    extra.close |= !req.keep_alive || ctx.shared.draining();
    extra.keep_alive = req.http10 && !extra.close;
    extra.cors = cors;
}

/// `OPTIONS` on a route: what it allows, and for a browser's CORS preflight what the page may
/// send. Neither authenticated nor billed: a preflight carries no key (browsers send none).
fn options(
    req: &Request<'_>,
    route: Route,
    cors: Option<crate::http::cors::Allowed>,
    ctx: &Context<'_>,
    scratch: &mut Scratch,
    out: &mut FixedBuf,
) -> After {
    let mut extra = Extra { allow: Some(route.allow_header()), ..Extra::default() };
    connection_headers(&mut extra, req, cors, ctx);
    if cors.is_some() {
        extra.preflight_max_age_s = Some(ctx.shared.config.http.cors_max_age_s);
    }
    let reply = Reply::new(Status::NO_CONTENT, ContentType::Empty, extra);
    finish(ctx, &reply, scratch, out, false);
    if extra.close {
        After::Close
    } else {
        After::KeepAlive
    }
}

/// With `Expect: 100-continue`, whether the request is refused on its head alone (no such path,
/// a method the route does not allow, a key that is not valid): then its final status is sent at
/// once rather than a `100 Continue` for a body that would be read only to be refused.
pub fn refused_before_body(req: &Request<'_>, (route_kind, query): (Route, &[u8]), ctx: &Context<'_>) -> bool {
    if route_kind == Route::NotFound || !route_kind.allows(req.method) {
        return true;
    }
    if !route_kind.needs_key() {
        return false;
    }
    route::carries_key(query)
        || admission::authenticate(&ctx.shared.keys.table(), req.api_key.unwrap_or_default()).is_err()
}

/// Answers a request that could not be read; the connection closes after it.
pub fn respond_unreadable(error: RequestError, ctx: &Context<'_>, scratch: &mut Scratch, out: &mut FixedBuf) {
    let (code, message): (ErrorCode, &[u8]) = match error {
        RequestError::HeadTooLarge => (ErrorCode::HeadTooLarge, b"request line and headers are over the limit"),
        RequestError::BodyTooLarge => (ErrorCode::BodyTooLarge, b"request body is over the limit"),
        RequestError::Malformed => (ErrorCode::BadRequest, b"malformed HTTP request"),
        RequestError::TransferEncoding => (ErrorCode::BadRequest, b"chunked request bodies are not accepted"),
    };
    answer_and_close(code, message, ctx, scratch, out);
}

/// Answers a connection whose request headers did not arrive in time.
pub fn respond_timeout(ctx: &Context<'_>, scratch: &mut Scratch, out: &mut FixedBuf) {
    answer_and_close(ErrorCode::RequestTimeout, b"request headers did not arrive in time", ctx, scratch, out);
}

/// Answers a connection the shard has no room for.
pub fn respond_overloaded(ctx: &Context<'_>, scratch: &mut Scratch, out: &mut FixedBuf) {
    answer_and_close(ErrorCode::Overloaded, b"too many connections, try again shortly", ctx, scratch, out);
}

/// Writes the control plane's answer to a deferred request into `out` (sized by the caller for
/// the body: a report may be larger than a connection's write buffer). `None`: it did not answer
/// within its deadline. Says whether the connection closes after it.
pub fn respond_deferred(
    deferred: &Deferred,
    answer: Option<Answer>,
    ctx: &Context<'_>,
    scratch: &mut Scratch,
    out: &mut FixedBuf,
) -> After {
    scratch.body.clear();
    let reply = match (&deferred.pending, answer) {
        (Pending::Price { symbol, name, with_venues, .. }, answer) => {
            let looked = match answer {
                Some(Answer::Price(looked)) => looked,
                _ => Looked::TimedOut,
            };
            Some(looked_up(looked, *symbol, name, *with_venues, deferred.extra, ctx, scratch))
        }
        (Pending::Report(_), Some(Answer::Report(ReportAnswer::Ok(body)))) => {
            response::write(
                out,
                Status::OK,
                ctx.second.http_date(),
                ContentType::Json,
                body.as_bytes(),
                &deferred.extra,
                deferred.head_only,
            );
            scratch.status = 200;
            ctx.counters.count_response(Status::OK.code);
            None
        }
        // The store's own error (paths, hosts) is logged on the control plane, not told to clients.
        (Pending::Report(_), Some(Answer::Report(ReportAnswer::Failed(_)))) => {
            Some(error(scratch, ErrorCode::Internal, &[b"the usage store failed; try again shortly"], deferred.extra))
        }
        (Pending::Report(_), _) => Some(error(
            scratch,
            ErrorCode::UpstreamTimeout,
            &[b"the usage store did not answer in time"],
            deferred.extra,
        )),
    };
    if let Some(reply) = reply {
        finish(ctx, &reply, scratch, out, deferred.head_only);
    }
    if deferred.extra.close {
        After::Close
    } else {
        After::KeepAlive
    }
}

/// Every response counts as one `tcp_requests`, so that counter always equals the sum of the
/// three response classes, even for a connection refused or timed out before a whole request.
fn answer_and_close(code: ErrorCode, message: &[u8], ctx: &Context<'_>, scratch: &mut Scratch, out: &mut FixedBuf) {
    ctx.counters.inc(Counter::TcpRequests);
    scratch.body.clear();
    let mut reply = error(scratch, code, &[message], Extra::default());
    reply.extra.close = true;
    if code == ErrorCode::Overloaded {
        reply.extra.retry_after_s = Some(1);
    }
    finish(ctx, &reply, scratch, out, false);
}

fn finish(ctx: &Context<'_>, reply: &Reply, scratch: &mut Scratch, out: &mut FixedBuf, head_only: bool) {
    let start = out.len();
    if scratch.body.overflowed() {
        // Unreachable by the size bounds above; answered, never panicked on.
        scratch.body.clear();
        let internal = error(scratch, ErrorCode::Internal, &[b"response too large"], Extra::default());
        return finish(ctx, &internal, scratch, out, head_only);
    }
    response::write(
        out,
        reply.status,
        ctx.second.http_date(),
        reply.content_type,
        scratch.body.as_slice(),
        &reply.extra,
        head_only,
    );
    if out.overflowed() {
        out.truncate(start);
        scratch.body.clear();
        let mut internal = error(scratch, ErrorCode::Internal, &[b"response too large"], Extra::default());
        internal.extra.close = true;
        response::write(
            out,
            internal.status,
            ctx.second.http_date(),
            ContentType::Json,
            scratch.body.as_slice(),
            &internal.extra,
            false,
        );
    }
    scratch.status = reply.status.code;
    ctx.counters.count_response(reply.status.code);
}

fn route(route: Route, query: &[u8], req: &Request<'_>, ctx: &Context<'_>, scratch: &mut Scratch) -> Reply {
    if route == Route::NotFound {
        return error(scratch, ErrorCode::NotFound, &[b"no such path"], Extra::default());
    }
    if !route.allows(req.method) {
        let extra = Extra { allow: Some(route.allow_header()), ..Extra::default() };
        return error(scratch, ErrorCode::MethodNotAllowed, &[route.method_message()], extra);
    }
    match route {
        Route::Health => text(scratch, Status::OK, b"ok"),
        Route::Ready if ctx.shared.book.all_fresh(ctx.now.unix_ms) => text(scratch, Status::OK, b"ready"),
        Route::Ready => {
            error(scratch, ErrorCode::Stale, &[b"not every symbol has a fresh price yet"], Extra::default())
        }
        Route::Price | Route::Prices | Route::Usage | Route::Reports | Route::Sessions => {
            keyed(route, query, req, ctx, scratch)
        }
        // Reached only by methods `allows` refused above; GET is answered by `stream`.
        Route::Stream | Route::NotFound => error(scratch, ErrorCode::NotFound, &[b"no such path"], Extra::default()),
    }
}

fn keyed(route: Route, query: &[u8], req: &Request<'_>, ctx: &Context<'_>, scratch: &mut Scratch) -> Reply {
    if route::carries_key(query) {
        return error(
            scratch,
            ErrorCode::BadRequest,
            &[b"API keys are refused in the query string; send X-API-Key or Authorization: Bearer"],
            Extra::default(),
        );
    }
    let table = ctx.shared.keys.table();
    let key = match admission::authenticate(&table, req.api_key.unwrap_or_default()) {
        Ok(key) => key,
        Err(refusal) => return refused(refusal, ctx, scratch),
    };
    if ctx.shared.access_log.is_some() {
        scratch.key.set(&key.name);
    }
    match route {
        Route::Price => price(query, key, ctx, scratch),
        Route::Prices => prices(query, key, ctx, scratch),
        Route::Sessions => sessions(req.body, key, ctx, scratch),
        Route::Reports => reports(query, key, ctx, scratch),
        _ => usage(key, ctx, scratch),
    }
}

fn price(query: &[u8], key: &KeyEntry, ctx: &Context<'_>, scratch: &mut Scratch) -> Reply {
    let Some(raw) = route::param(query, b"symbol").filter(|v| !v.is_empty()) else {
        return error(scratch, ErrorCode::BadRequest, &[b"missing parameter: symbol"], Extra::default());
    };
    let Some(name) = route::percent_decode(raw, &mut scratch.decoded).and_then(SymbolName::parse) else {
        return error(
            scratch,
            ErrorCode::BadRequest,
            &[b"invalid symbol: 1 to 32 of A-Z 0-9 - _ . /"],
            Extra::default(),
        );
    };
    let with_venues = match route::param(query, b"sources") {
        None | Some(b"0") | Some(b"false") => false,
        Some(b"1") | Some(b"true") => true,
        Some(_) => {
            return error(scratch, ErrorCode::BadRequest, &[b"sources must be 0, 1, true or false"], Extra::default())
        }
    };
    let admitted = match admission::admit_on(key, ctx, Charge::Billable(Channel::Http)) {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(refusal, ctx, scratch),
    };
    let extra = Extra { rate: admitted.rate, ..Extra::default() };
    let book = &ctx.shared.book;
    let Some(id) = book.symbols().lookup(name.as_bytes()) else {
        return error(scratch, ErrorCode::UnknownSymbol, &[b"unknown symbol ", name.as_bytes()], extra);
    };
    let mut quotes = [VenueQuote::EMPTY; VENUES_MAX];
    let used = book.used_quotes(id, ctx.now.unix_ms, &mut quotes);
    let quotes = &mut quotes[..used];
    let Some(served) = crate::book::median_of_sorted(quotes).or_else(|| book.fallback(id, ctx.now.unix_ms)) else {
        return missed(id, name, with_venues, extra, ctx, scratch);
    };
    ctx.counters.inc(Counter::BookHits);
    price_body(&name, &served, with_venues.then_some(&*quotes), ctx, scratch);
    Reply::new(Status::OK, ContentType::Json, extra)
}

/// A served price's body; `venues` with `sources=1` (empty for a fallback price).
fn price_body(
    name: &SymbolName,
    served: &crate::book::Served,
    venues: Option<&[VenueQuote]>,
    ctx: &Context<'_>,
    scratch: &mut Scratch,
) {
    price_json::open_price(&mut scratch.body, name.as_str(), served, ctx.now.unix_ms);
    if let Some(quotes) = venues {
        price_json::put_venues(&mut scratch.body, &ctx.shared.book, quotes, served.layer);
        price_json::put_spread(&mut scratch.body, served.spread);
    }
    scratch.body.put(b"}");
}

/// A configured symbol with no fresh venue and no recent fallback price: handed to the control
/// plane's lookups when there are any (the answer is deferred), else 503 `stale` at once. A full
/// queue is 503 `overloaded`: a miss never makes the shard wait for room.
fn missed(
    symbol: SymbolId,
    name: SymbolName,
    with_venues: bool,
    extra: Extra,
    ctx: &Context<'_>,
    scratch: &mut Scratch,
) -> Reply {
    let Some(misses) = &ctx.shared.misses else {
        return error(scratch, ErrorCode::Stale, &[b"no fresh price for ", name.as_bytes()], extra);
    };
    let (reply, looked) = tokio::sync::oneshot::channel();
    match misses.try_send(MissJob { symbol, reply: Some(reply) }) {
        Ok(()) => Reply {
            deferred: Some(Pending::Price { looked, symbol, name, with_venues }),
            ..Reply::new(Status::OK, ContentType::Json, extra)
        },
        Err(_) => {
            ctx.counters.inc(Counter::BgDropped);
            let extra = Extra { retry_after_s: Some(1), ..extra };
            error(scratch, ErrorCode::Overloaded, &[b"too many price lookups waiting, try again shortly"], extra)
        }
    }
}

/// The answer to a `/v1/price` that waited for a lookup. Each such request counts once: a cache
/// hit when Redis had the price, a cache miss otherwise.
fn looked_up(
    looked: Looked,
    symbol: SymbolId,
    name: &SymbolName,
    with_venues: bool,
    extra: Extra,
    ctx: &Context<'_>,
    scratch: &mut Scratch,
) -> Reply {
    let found = match looked {
        Looked::Filled(_) => ctx.shared.book.served(symbol, ctx.now.unix_ms),
        _ => None,
    };
    ctx.counters.inc(if found.is_some_and(|s| s.layer == Layer::Cache) {
        Counter::CacheHits
    } else {
        Counter::CacheMisses
    });
    match (found, looked) {
        (Some(served), _) => {
            price_body(name, &served, with_venues.then_some(&[][..]), ctx, scratch);
            Reply::new(Status::OK, ContentType::Json, extra)
        }
        (None, Looked::TimedOut) => error(
            scratch,
            ErrorCode::UpstreamTimeout,
            &[b"no fresh venue for ", name.as_bytes(), b", and the fallback lookup ran past its deadline"],
            extra,
        ),
        (None, Looked::Overloaded) => {
            let extra = Extra { retry_after_s: Some(1), ..extra };
            error(scratch, ErrorCode::Overloaded, &[b"too many price lookups waiting, try again shortly"], extra)
        }
        (None, _) => error(
            scratch,
            ErrorCode::Stale,
            &[b"no fresh price for ", name.as_bytes(), b" in the book, the cache or the exchanges"],
            extra,
        ),
    }
}

fn prices(query: &[u8], key: &KeyEntry, ctx: &Context<'_>, scratch: &mut Scratch) -> Reply {
    let Some(raw) = route::param(query, b"symbols").filter(|v| !v.is_empty()) else {
        return error(scratch, ErrorCode::BadRequest, &[b"missing parameter: symbols"], Extra::default());
    };
    let Some(list) = route::percent_decode(raw, &mut scratch.decoded) else {
        return error(scratch, ErrorCode::BadRequest, &[b"malformed parameter: symbols"], Extra::default());
    };
    let list: &[u8] = list;
    let mut count = 0;
    for item in list.split(|&b| b == b',') {
        count += 1;
        if count > PRICES_MAX {
            return error(scratch, ErrorCode::BadRequest, &[b"at most 100 symbols per request"], Extra::default());
        }
        if SymbolName::parse(item).is_none() {
            return error(
                scratch,
                ErrorCode::BadRequest,
                &[b"invalid symbol: 1 to 32 of A-Z 0-9 - _ . /"],
                Extra::default(),
            );
        }
    }
    let admitted = match admission::admit_on(key, ctx, Charge::Billable(Channel::Http)) {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(refusal, ctx, scratch),
    };
    let book = &ctx.shared.book;
    let index = book.symbols();
    let body = &mut scratch.body;
    // Which items were served, so the "missing" pass agrees with the "prices" pass exactly even
    // if a venue goes stale in between.
    let mut served_mask: u128 = 0;
    body.put(b"{\"prices\":[");
    let mut first = true;
    for (i, item) in list.split(|&b| b == b',').enumerate() {
        let Some(name) = SymbolName::parse(item) else { continue };
        let Some(id) = index.lookup(name.as_bytes()) else { continue };
        let Some(served) = book.served(id, ctx.now.unix_ms) else {
            // Listed as missing now; a lookup puts it in the book for the next request.
            crate::fallback::nudge(ctx.shared.misses.as_ref(), id);
            continue;
        };
        served_mask |= 1 << i;
        ctx.counters.inc(Counter::BookHits);
        if !first {
            body.put(b",");
        }
        first = false;
        price_json::open_price(body, name.as_str(), &served, ctx.now.unix_ms);
        body.put(b"}");
    }
    body.put(b"],\"missing\":[");
    first = true;
    for (i, item) in list.split(|&b| b == b',').enumerate() {
        if served_mask & (1 << i) != 0 {
            continue;
        }
        let Some(name) = SymbolName::parse(item) else { continue };
        if !first {
            body.put(b",");
        }
        first = false;
        body.put(b"\"");
        body.put(name.as_bytes());
        body.put(b"\"");
    }
    body.put(b"]}");
    Reply::new(Status::OK, ContentType::Json, Extra { rate: admitted.rate, ..Extra::default() })
}

fn usage(key: &KeyEntry, ctx: &Context<'_>, scratch: &mut Scratch) -> Reply {
    let admitted = match admission::admit_on(key, ctx, Charge::Free) {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(refusal, ctx, scratch),
    };
    ctx.counters.inc(Counter::UsageReportRequests);
    let month = ctx.second.month();
    let cap = key.limits.map(|l| l.monthly_cap);
    json::usage(&mut scratch.body, &key.name, key.tier.as_str(), month, key.state.usage.fleet_used(month), cap);
    Reply::new(Status::OK, ContentType::Json, Extra { rate: admitted.rate, ..Extra::default() })
}

/// `GET /reports/usage`: checked and rate limited here, free of usage; answered by the control
/// plane from the ledger. A full queue is 503 `overloaded` at once: reports never make a shard
/// wait, so they cannot slow prices down.
fn reports(query: &[u8], key: &KeyEntry, ctx: &Context<'_>, scratch: &mut Scratch) -> Reply {
    let param = |name: &[u8]| route::param(query, name);
    let span = match report::parse_span(param(b"from"), param(b"to"), param(b"granularity"), ctx.now.unix_ms) {
        Ok(span) => span,
        Err(message) => return error(scratch, ErrorCode::BadRequest, &[message.as_bytes()], Extra::default()),
    };
    let admitted = match admission::admit_on(key, ctx, Charge::Free) {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(refusal, ctx, scratch),
    };
    let extra = Extra { rate: admitted.rate, ..Extra::default() };
    ctx.counters.inc(Counter::UsageReportRequests);
    let Some(queue) = &ctx.shared.reports else {
        let message: &[u8] = b"this server keeps usage in memory only (usage.store = memory): no reports";
        return error(scratch, ErrorCode::NotFound, &[message], extra);
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    match queue.try_send(ReportJob { key_id: key.name.to_string(), span, reply }) {
        Ok(()) => {
            ctx.counters.inc(Counter::BgSubmitted);
            Reply { deferred: Some(Pending::Report(answer)), ..Reply::new(Status::OK, ContentType::Json, extra) }
        }
        Err(_) => {
            ctx.counters.inc(Counter::BgDropped);
            let extra = Extra { retry_after_s: Some(1), ..extra };
            error(scratch, ErrorCode::Overloaded, &[b"too many usage reports waiting, try again shortly"], extra)
        }
    }
}

/// `POST /v1/sessions`: checked, rate limited and counted like any public request; the symbols
/// must all be known.
fn sessions(body: &[u8], key: &KeyEntry, ctx: &Context<'_>, scratch: &mut Scratch) -> Reply {
    let parsed = symbols::parse(body, Expect::Session, &ctx.shared.book);
    if let Err(
        e @ (SymbolsError::Malformed { .. }
        | SymbolsError::Count
        | SymbolsError::Invalid(_)
        | SymbolsError::Field
        | SymbolsError::FieldsInChange),
    ) = &parsed
    {
        return error(scratch, ErrorCode::BadRequest, &[e.to_string().as_bytes()], Extra::default());
    }
    let admitted = match admission::admit_on(key, ctx, Charge::Billable(Channel::Sessions)) {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(refusal, ctx, scratch),
    };
    let extra = Extra { rate: admitted.rate, ..Extra::default() };
    let set = match parsed {
        Ok(set) => set,
        Err(e) => return error(scratch, ErrorCode::UnknownSymbol, &[e.to_string().as_bytes()], extra),
    };
    let limit = upgrade::streams_per_key(key, &ctx.shared.config.stream);
    if key.state.streams.load(std::sync::atomic::Ordering::Relaxed) >= limit {
        let extra = Extra { retry_after_s: Some(1), ..extra };
        return error(scratch, ErrorCode::RateLimited, &[b"the key holds its maximum of open streams"], extra);
    }
    let sessions = &ctx.shared.sessions;
    match sessions.create(&key.hash, &set.ids, set.fields, ctx.now.unix_ms, ctx.counters) {
        Ok(id) => {
            let body = &mut scratch.body;
            body.put(b"{\"session_id\":\"");
            body.put(&id.text());
            body.put(b"\",\"expires_in_s\":");
            body.put_u64(sessions.ttl_ms() / 1000);
            body.put(b"}");
            Reply::new(Status::OK, ContentType::Json, extra)
        }
        Err(CreateError::Full) => {
            let extra = Extra { retry_after_s: Some(1), ..extra };
            error(scratch, ErrorCode::Overloaded, &[b"too many pending sessions, try again shortly"], extra)
        }
        Err(CreateError::NoRandomness) => {
            error(scratch, ErrorCode::Internal, &[b"no randomness for a session id"], extra)
        }
    }
}

/// A refused stream, answered as a normal HTTP error on the still-HTTP connection.
fn upgrade_refused(refusal: upgrade::Refusal, ctx: &Context<'_>, scratch: &mut Scratch) -> Reply {
    use upgrade::Refusal as R;
    let (code, message): (ErrorCode, &[u8]) = match refusal {
        R::Handshake(handshake::Refusal::NotUpgrade) => {
            (ErrorCode::UpgradeRequired, b"this endpoint is a WebSocket upgrade")
        }
        R::Handshake(handshake::Refusal::Version) => {
            (ErrorCode::UpgradeRequired, b"only WebSocket version 13 is supported")
        }
        R::Handshake(handshake::Refusal::Key) => {
            (ErrorCode::BadRequest, b"Sec-WebSocket-Key must be 16 bytes in base64")
        }
        R::SessionIdMalformed => (ErrorCode::BadRequest, b"missing or malformed parameter: session_id"),
        R::Overloaded => (ErrorCode::Overloaded, b"too many open streams, try again shortly"),
        R::SessionUnknown => (ErrorCode::Unauthorized, b"unknown or already used session"),
        R::SessionExpired => (ErrorCode::Unauthorized, b"session expired; create a new one"),
        R::KeyRevoked => (ErrorCode::Unauthorized, b"the session's API key was revoked"),
        R::KeyStreamsFull => (ErrorCode::RateLimited, b"the key holds its maximum of open streams"),
    };
    if code == ErrorCode::Unauthorized {
        // A session id is a credential: a wrong one is an authentication failure.
        ctx.counters.inc(Counter::AuthFailures);
    }
    let extra = Extra {
        websocket_upgrade: code == ErrorCode::UpgradeRequired,
        www_authenticate: refusal == R::KeyRevoked,
        retry_after_s: matches!(code, ErrorCode::Overloaded | ErrorCode::RateLimited).then_some(1),
        ..Extra::default()
    };
    error(scratch, code, &[message], extra)
}

fn refused(refusal: Refusal, ctx: &Context<'_>, scratch: &mut Scratch) -> Reply {
    match refusal {
        Refusal::Unknown => {
            ctx.counters.inc(Counter::AuthFailures);
            let extra = Extra { www_authenticate: true, ..Extra::default() };
            error(scratch, ErrorCode::Unauthorized, &[b"missing or unknown API key"], extra)
        }
        Refusal::Revoked => {
            ctx.counters.inc(Counter::AuthFailures);
            let extra = Extra { www_authenticate: true, ..Extra::default() };
            error(scratch, ErrorCode::Unauthorized, &[b"API key revoked"], extra)
        }
        Refusal::RateLimited { retry_after_s, rate } => {
            ctx.counters.inc(Counter::RateLimitHits);
            let extra = Extra { rate: Some(rate), retry_after_s: Some(retry_after_s), ..Extra::default() };
            error(scratch, ErrorCode::RateLimited, &[b"over the key's rate limit"], extra)
        }
        Refusal::QuotaExceeded { retry_after_s, rate } => {
            ctx.counters.inc(Counter::QuotaHits);
            let extra = Extra { rate, retry_after_s: Some(retry_after_s), ..Extra::default() };
            error(scratch, ErrorCode::QuotaExceeded, &[b"monthly cap reached"], extra)
        }
        Refusal::Overloaded => {
            ctx.counters.stream_add(crate::counters::StreamCounter::GovernorSheds, 1);
            scratch.shed = true;
            let extra = Extra { retry_after_s: Some(ctx.shared.config.governor.retry_after_s), ..Extra::default() };
            error(scratch, ErrorCode::Overloaded, &[b"the server is shedding public traffic, try again shortly"], extra)
        }
    }
}

fn error(scratch: &mut Scratch, code: ErrorCode, message: &[&[u8]], extra: Extra) -> Reply {
    response::write_error_body(&mut scratch.body, code, message);
    Reply::new(code.status(), ContentType::Json, extra)
}

fn text(scratch: &mut Scratch, status: Status, body: &[u8]) -> Reply {
    scratch.body.put(body);
    Reply::new(status, ContentType::Text, Extra::default())
}
