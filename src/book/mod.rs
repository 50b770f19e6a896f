//! The price book: a fixed table of cells, one per (symbol, venue), written by the feeds and read
//! lock-free by every shard. The served price is the median of the venues that are fresh and in
//! line with each other ([`quality`]); with none fresh, the price a fallback lookup (Redis, an
//! exchange's REST API) left in the symbol's fallback cell, while it is recent.

pub mod cell;
pub mod decimal;
pub mod json;
pub mod moves;
pub mod quality;
pub mod symbols;

use std::sync::atomic::{AtomicU16, Ordering as AtomicOrdering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

pub use cell::{Cell, Quote};
pub use decimal::Decimal;
pub use moves::{Moves, Rings};
pub use quality::{OutlierBound, QualityReading, Verdict};
pub use symbols::{SymbolError, SymbolId, SymbolIndex, SymbolName, SYMBOL_BYTES_MAX};

/// The most venues one symbol can have: six exchanges plus the simulator's or fallback slots.
pub const VENUES_MAX: usize = 8;

/// A venue's column in the book.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VenueId(u8);

impl VenueId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a served price came from: this node's venues, or a fallback lookup (`"layer"` in a
/// `sources=1` answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Layer {
    #[default]
    Book = 0,
    /// Another node's price, read from Redis.
    Cache = 1,
    /// An exchange's REST ticker.
    Rest = 2,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Book => "book",
            Self::Cache => "cache",
            Self::Rest => "rest",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Cache,
            2 => Self::Rest,
            _ => Self::Book,
        }
    }
}

/// The price a client is served for one symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    pub price: Decimal,
    /// The newest exchange event time among the venues used, Unix ms.
    pub ts_ms: u64,
    /// How many fresh venues the median was taken over (at least 1).
    pub sources: u8,
    /// When the newest of those venues' prices reached this process, Unix ms (our clock, not
    /// the venue's): where a stream's push latency starts.
    pub recv_ms: u64,
    pub layer: Layer,
    /// The highest minus the lowest venue price used (`"0"` with one); `None` when unknown (a
    /// fallback price from a node that did not say).
    pub spread: Option<Decimal>,
}

/// One venue's fresh price, for `sources=1` responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VenueQuote {
    pub venue: VenueId,
    pub price: Decimal,
    pub ts_ms: u64,
    pub recv_ms: u64,
}

impl VenueQuote {
    /// A placeholder to fill an array with before [`PriceBook::fresh_quotes`].
    pub const EMPTY: Self = Self { venue: VenueId(0), price: Decimal::ZERO, ts_ms: 0, recv_ms: 0 };
}

/// Why a book is refused at start.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error(transparent)]
    Symbol(#[from] SymbolError),
    #[error("{0} venues configured, at most {VENUES_MAX}")]
    TooManyVenues(usize),
    #[error("venue {0:?} is listed twice")]
    DuplicateVenue(String),
}

/// The shared price table. Sized once at start for `symbols_max` rows; the symbol index may grow
/// into that room at runtime (swapped whole), the table never reallocates.
pub struct PriceBook {
    index: ArcSwap<SymbolIndex>,
    venues: Box<[Box<str>]>,
    cells: Box<[Cell]>,
    /// One per symbol: the last fallback lookup's price, and beside it `layer << 8 | sources`
    /// (how many venues it stood for: the other node's count, or 1 from REST).
    fallback_cells: Box<[Cell]>,
    fallback_origins: Box<[AtomicU16]>,
    /// One per symbol: the spread that came with the fallback price (mantissa 0 with one
    /// source), never written when the lookup did not say.
    fallback_spreads: Box<[Cell]>,
    /// How long a fallback price is served before the symbol is looked up again.
    fallback_hold_ms: u64,
    symbols_max: usize,
    stale_after_ms: u64,
    outliers: OutlierBound,
    /// One per venue column: the prices it sent that were refused or left out.
    quality: Box<[quality::VenueQuality]>,
    /// Who watches which symbol; a write of a watched symbol wakes its shards.
    moves: Moves,
}

/// Writes whose shards are woken once, when the batch is dropped: a feed's message or a
/// simulator tick, however many prices it holds.
pub struct Batch<'a> {
    book: &'a PriceBook,
    rings: Rings,
    /// Venues written since the last judgement, all of one symbol: judged together when the batch
    /// moves on to another symbol or ends (a simulator tick writes each symbol's venues in a row,
    /// so the symbol's fresh venues are read once, not once per venue).
    unjudged: Option<Unjudged>,
}

#[derive(Clone, Copy)]
struct Unjudged {
    symbol: SymbolId,
    /// One bit per venue column.
    venues: u16,
    recv_ms: u64,
}

impl Batch<'_> {
    /// Records a venue's price (`recv_ms`: this process's clock at receipt) unless it is not
    /// positive (false). A refused price, or one left out of the median as an outlier, is
    /// counted for its venue and logged (one line per venue and kind a minute); outliers are
    /// judged once the batch moves on from the symbol.
    #[inline]
    pub fn write(&mut self, symbol: SymbolId, venue: VenueId, price: Decimal, ts_ms: u64, recv_ms: u64) -> bool {
        if price.mantissa() <= 0 {
            self.book.refused(symbol, venue, price, Verdict::NotPositive, recv_ms);
            return false;
        }
        self.book.cell(symbol, venue).write(price, ts_ms, recv_ms);
        self.book.moves.moved(symbol, &mut self.rings);
        match &mut self.unjudged {
            Some(u) if u.symbol == symbol => {
                u.venues |= 1 << venue.index();
                u.recv_ms = u.recv_ms.max(recv_ms);
            }
            other => {
                if let Some(previous) = other.take() {
                    self.book.judge(previous);
                }
                self.unjudged = Some(Unjudged { symbol, venues: 1 << venue.index(), recv_ms });
            }
        }
        true
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if let Some(unjudged) = self.unjudged.take() {
            self.book.judge(unjudged);
        }
        self.book.moves.ring(&self.rings);
    }
}

impl PriceBook {
    pub fn new(symbols: &[&str], venues: &[&str], symbols_max: usize, stale_after_ms: u64) -> Result<Self, BookError> {
        if venues.len() > VENUES_MAX {
            return Err(BookError::TooManyVenues(venues.len()));
        }
        for (i, venue) in venues.iter().enumerate() {
            if venues[..i].contains(venue) {
                return Err(BookError::DuplicateVenue((*venue).to_owned()));
            }
        }
        let index = SymbolIndex::new(symbols.iter().copied(), symbols_max)?;
        let cells = (0..symbols_max * VENUES_MAX).map(|_| Cell::default()).collect();
        Ok(Self {
            index: ArcSwap::from_pointee(index),
            venues: venues.iter().map(|v| Box::<str>::from(*v)).collect(),
            cells,
            fallback_cells: (0..symbols_max).map(|_| Cell::default()).collect(),
            fallback_origins: (0..symbols_max).map(|_| AtomicU16::new(0)).collect(),
            fallback_spreads: (0..symbols_max).map(|_| Cell::default()).collect(),
            fallback_hold_ms: stale_after_ms,
            symbols_max,
            stale_after_ms,
            outliers: OutlierBound::DEFAULT,
            quality: (0..venues.len()).map(|_| quality::VenueQuality::default()).collect(),
            moves: Moves::new(symbols_max, 1),
        })
    }

    /// Leaves out a venue further than `bound` from the median of the others (5% until set).
    pub fn with_outlier_bound(mut self, bound: OutlierBound) -> Self {
        self.outliers = bound;
        self
    }

    /// Serves a fallback price for `hold_ms` after its lookup (`stale_after_ms` until set).
    pub fn with_fallback_hold(mut self, hold_ms: u64) -> Self {
        self.fallback_hold_ms = hold_ms;
        self
    }

    /// Records a fallback lookup's price for `symbol` (`recv_ms`: when it was looked up) and wakes
    /// the shards watching it: every shard serves it from the book from now on. A price that is
    /// not positive is not recorded (false).
    pub fn fill(
        &self,
        symbol: SymbolId,
        layer: Layer,
        origin: FillOrigin,
        price: Decimal,
        ts_ms: u64,
        recv_ms: u64,
    ) -> bool {
        let i = symbol.index();
        if price.mantissa() <= 0 || i >= self.fallback_cells.len() {
            return false;
        }
        let FillOrigin { sources, spread } = origin;
        // The spread before the price, as the origin: a reader racing the write sees the
        // previous fill's, as true a moment ago. With one source it is 0 by definition.
        let spread = if sources <= 1 { Some(Decimal::default()) } else { spread.filter(|s| s.mantissa() >= 0) };
        match spread {
            Some(spread) => self.fallback_spreads[i].write(spread, 1, recv_ms),
            None => self.fallback_spreads[i].write(Decimal::default(), 0, recv_ms),
        }
        // The origin first: a reader that sees the new price sees it too, or (racing the write)
        // the previous fill's, which is as true of the symbol a moment ago.
        self.fallback_origins[i]
            .store(u16::from(layer as u8) << 8 | u16::from(sources.max(1)), AtomicOrdering::Relaxed);
        self.fallback_cells[i].write(price, ts_ms, recv_ms);
        let mut batch = self.batch();
        self.moves.moved(symbol, &mut batch.rings);
        true
    }

    /// The fallback price of `symbol` if a lookup left one within the hold time.
    pub fn fallback(&self, symbol: SymbolId, now_ms: u64) -> Option<Served> {
        let i = symbol.index();
        let quote = self.fallback_cells.get(i)?.read()?;
        if now_ms.saturating_sub(quote.recv_ms) > self.fallback_hold_ms {
            return None;
        }
        let origin = self.fallback_origins[i].load(AtomicOrdering::Relaxed);
        // A spread cell's ts is 1 when the lookup gave one, 0 when it did not.
        let spread = self.fallback_spreads[i].read().filter(|s| s.ts_ms == 1).map(|s| s.price);
        Some(Served {
            price: quote.price,
            ts_ms: quote.ts_ms,
            sources: (origin as u8).max(1),
            recv_ms: quote.recv_ms,
            layer: Layer::from_u8((origin >> 8) as u8),
            spread,
        })
    }

    /// Sizes the book's wake-ups for `shards` shards (one until this is called).
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.moves = Moves::new(self.symbols_max, shards);
        self
    }

    /// Who watches which symbol, and what moved (`stream::fanout`).
    pub fn moves(&self) -> &Moves {
        &self.moves
    }

    /// The current symbol index. Holding the guard is cheap and lock-free; do not hold it across
    /// an await.
    pub fn symbols(&self) -> Guard<Arc<SymbolIndex>> {
        self.index.load()
    }

    /// Adds a symbol at runtime (an exchange lists a new pair), or returns its existing id.
    pub fn add_symbol(&self, name: &str) -> Result<SymbolId, SymbolError> {
        let mut added = None;
        let mut error = None;
        self.index.rcu(|current| match current.with(name, self.symbols_max) {
            Ok((next, id)) => {
                added = Some(id);
                Arc::new(next)
            }
            Err(e) => {
                error = Some(e);
                Arc::clone(current)
            }
        });
        match (added, error) {
            (Some(id), _) => Ok(id),
            (None, Some(e)) => Err(e),
            (None, None) => Err(SymbolError::Full(self.symbols_max)),
        }
    }

    /// The venue column named `name`.
    pub fn venue(&self, name: &str) -> Option<VenueId> {
        self.venues.iter().position(|v| &**v == name).map(|i| VenueId(i as u8))
    }

    pub fn venue_name(&self, venue: VenueId) -> &str {
        self.venues.get(venue.index()).map_or("", |v| v)
    }

    /// Every venue column with its name, in column order.
    pub fn venue_columns(&self) -> impl Iterator<Item = (VenueId, &str)> {
        self.venues.iter().enumerate().map(|(i, name)| (VenueId(i as u8), &**name))
    }

    pub fn venue_count(&self) -> usize {
        self.venues.len()
    }

    pub fn stale_after_ms(&self) -> u64 {
        self.stale_after_ms
    }

    pub fn cell(&self, symbol: SymbolId, venue: VenueId) -> &Cell {
        &self.cells[symbol.index() * VENUES_MAX + venue.index()]
    }

    /// Records a venue's price and wakes the shards watching it (see [`Batch::write`]), and says
    /// whether the served price uses it. `recv_ms` is this process's clock at receipt.
    pub fn write(&self, symbol: SymbolId, venue: VenueId, price: Decimal, ts_ms: u64, recv_ms: u64) -> Verdict {
        if !self.batch().write(symbol, venue, price, ts_ms, recv_ms) {
            return Verdict::NotPositive;
        }
        self.verdict(symbol, venue, recv_ms)
    }

    /// The outlier rule in force.
    pub fn outlier_bound(&self) -> OutlierBound {
        self.outliers
    }

    /// The prices `venue` sent that were refused or left out.
    pub fn quality(&self, venue: VenueId) -> QualityReading {
        self.quality.get(venue.index()).map(quality::VenueQuality::read).unwrap_or_default()
    }

    /// Whether the served price of `symbol` uses `venue`'s price at `now_ms`.
    pub fn verdict(&self, symbol: SymbolId, venue: VenueId, now_ms: u64) -> Verdict {
        let mut verdict = Verdict::Used;
        self.outliers_among(symbol, 1 << venue.index(), now_ms, |_, _, v| verdict = v);
        verdict
    }

    /// Counts and logs the venues of a batch's writes that the served price leaves out.
    fn judge(&self, written: Unjudged) {
        let Unjudged { symbol, venues, recv_ms } = written;
        self.outliers_among(symbol, venues, recv_ms, |venue, price, verdict| {
            self.refused(symbol, venue, price, verdict, recv_ms);
        });
    }

    /// Calls `out` with (venue, its price, the verdict) for each venue of `venues` (a bit mask)
    /// that is fresh and left out of the served price of `symbol` at `now_ms`.
    fn outliers_among(
        &self,
        symbol: SymbolId,
        venues: u16,
        now_ms: u64,
        mut out: impl FnMut(VenueId, Decimal, Verdict),
    ) {
        if self.outliers.is_off() || self.venues.len() < 3 || self.all_in_line(symbol, now_ms) {
            return;
        }
        let mut quotes = [VenueQuote::EMPTY; VENUES_MAX];
        let fresh = self.fresh_quotes(symbol, now_ms, &mut quotes);
        let kept = quality::keep(&mut quotes[..fresh], self.outliers);
        let Some(median) = median_of_sorted(&quotes[..kept]).map(|s| s.price) else { return };
        for quote in &quotes[kept..fresh] {
            if venues & (1 << quote.venue.index()) != 0 {
                out(quote.venue, quote.price, Verdict::Outlier { median });
            }
        }
    }

    /// Fewer than three fresh venues, or the highest fresh price within the bound of the lowest:
    /// every venue is used. The feeds' common case, without sorting anything.
    fn all_in_line(&self, symbol: SymbolId, now_ms: u64) -> bool {
        let (mut fresh, mut low, mut high) = (0, Decimal::ZERO, Decimal::ZERO);
        for quote in self.fresh(symbol, now_ms) {
            if fresh == 0 || quote.price.cmp_value(low) == std::cmp::Ordering::Less {
                low = quote.price;
            }
            if fresh == 0 || quote.price.cmp_value(high) == std::cmp::Ordering::Greater {
                high = quote.price;
            }
            fresh += 1;
        }
        fresh < 3 || high.within_bps(low, self.outliers.bps())
    }

    fn refused(&self, symbol: SymbolId, venue: VenueId, price: Decimal, verdict: Verdict, now_ms: u64) {
        let Some(quality) = self.quality.get(venue.index()) else { return };
        if !quality.count(verdict, now_ms) {
            return;
        }
        let symbols = self.symbols();
        let name = if symbol.index() < symbols.len() { symbols.name(symbol) } else { "?" };
        let venue = self.venue_name(venue);
        match verdict {
            Verdict::NotPositive => tracing::warn!(
                venue,
                symbol = name,
                price = %price,
                "venue price refused: not positive (logged once a minute per venue; counted in prices_not_positive)"
            ),
            Verdict::Outlier { median } => tracing::warn!(
                venue,
                symbol = name,
                price = %price,
                median = %median,
                outlier_pct = %Decimal::new(i64::from(self.outliers.bps()), -2).unwrap_or_default(),
                "venue price left out: further than book.outlier_pct from the median of the other venues (logged once a minute per venue; counted in prices_outliers)"
            ),
            Verdict::Used => {}
        }
    }

    /// Writes to be woken for together (see [`Batch`]).
    pub fn batch(&self) -> Batch<'_> {
        Batch { book: self, rings: Rings::new(), unjudged: None }
    }

    /// Every fresh venue quote of `symbol` into `out`; returns how many. Never allocates.
    pub fn fresh_quotes(&self, symbol: SymbolId, now_ms: u64, out: &mut [VenueQuote; VENUES_MAX]) -> usize {
        let mut count = 0;
        for (slot, quote) in out.iter_mut().zip(self.fresh(symbol, now_ms)) {
            *slot = quote;
            count += 1;
        }
        count
    }

    /// The venue quotes of `symbol` no older than `stale_after_ms` at `now_ms`, in venue order.
    fn fresh(&self, symbol: SymbolId, now_ms: u64) -> impl Iterator<Item = VenueQuote> + '_ {
        (0..self.venues.len()).filter_map(move |v| {
            let venue = VenueId(v as u8);
            let quote = self.cell(symbol, venue).read()?;
            let fresh = now_ms.saturating_sub(quote.recv_ms) <= self.stale_after_ms;
            fresh.then_some(VenueQuote { venue, price: quote.price, ts_ms: quote.ts_ms, recv_ms: quote.recv_ms })
        })
    }

    /// The served price of `symbol`: the median over fresh venues, else a recent fallback price;
    /// `None` when there is neither.
    pub fn served(&self, symbol: SymbolId, now_ms: u64) -> Option<Served> {
        self.venues_served(symbol, now_ms).or_else(|| self.fallback(symbol, now_ms))
    }

    /// The fresh venue quotes of `symbol` that the served price uses, sorted by price, into the
    /// front of `out`; returns how many. Never allocates.
    pub fn used_quotes(&self, symbol: SymbolId, now_ms: u64, out: &mut [VenueQuote; VENUES_MAX]) -> usize {
        let fresh = self.fresh_quotes(symbol, now_ms, out);
        quality::keep(&mut out[..fresh], self.outliers)
    }

    /// The median over this node's fresh venues only (what it publishes for the other nodes: a
    /// price it looked up itself is never passed on as its own).
    pub fn venues_served(&self, symbol: SymbolId, now_ms: u64) -> Option<Served> {
        let mut quotes = [VenueQuote::EMPTY; VENUES_MAX];
        let count = self.used_quotes(symbol, now_ms, &mut quotes);
        median_of_sorted(&quotes[..count])
    }

    /// True when every symbol has a fresh price from at least one venue: the node can serve its
    /// whole symbol set (what `/ready` reports).
    pub fn all_fresh(&self, now_ms: u64) -> bool {
        let symbols = self.symbols();
        let all = !symbols.is_empty() && symbols.iter().all(|(id, _)| self.served(id, now_ms).is_some());
        all
    }
}

/// Median of quotes sorted by price, as [`PriceBook::used_quotes`] leaves them: the price (the
/// exact mean of the middle two for an even count), the newest event time and the spread.
#[inline]
pub fn median_of_sorted(quotes: &[VenueQuote]) -> Option<Served> {
    if quotes.is_empty() {
        return None;
    }
    let mid = quotes.len() / 2;
    let price =
        if quotes.len() % 2 == 1 { quotes[mid].price } else { quotes[mid - 1].price.midpoint(quotes[mid].price) };
    let ts_ms = quotes.iter().map(|q| q.ts_ms).max().unwrap_or(0);
    let recv_ms = quotes.iter().map(|q| q.recv_ms).max().unwrap_or(0);
    let spread = quotes[quotes.len() - 1].price.abs_diff(quotes[0].price);
    Some(Served { price, ts_ms, sources: quotes.len() as u8, recv_ms, layer: Layer::Book, spread: Some(spread) })
}

/// What a fallback lookup says about its price besides the price: how many venues it stood for,
/// and their spread if it knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FillOrigin {
    pub sources: u8,
    pub spread: Option<Decimal>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::parse(s.as_bytes()).expect("test literal parses")
    }

    fn book() -> PriceBook {
        PriceBook::new(&["BTC-USD", "ETH-USD"], &["coinbase", "kraken", "okx"], 16, 1_000).expect("valid book")
    }

    #[test]
    fn median_of_fresh_venues_only() {
        let book = book();
        let btc = book.symbols().lookup(b"BTC-USD").expect("interned");
        let [cb, kr, okx] = ["coinbase", "kraken", "okx"].map(|v| book.venue(v).expect("venue"));
        book.write(btc, cb, dec("100.0"), 10, 5_000);
        book.write(btc, kr, dec("102.0"), 30, 5_000);
        book.write(btc, okx, dec("90"), 20, 1_000); // stale at now = 5_500
        let served = book.served(btc, 5_500).expect("two fresh venues");
        assert_eq!(served.price.to_string(), "101.0");
        assert_eq!(served.sources, 2);
        assert_eq!(served.ts_ms, 30);
        book.write(btc, okx, dec("101.5"), 40, 5_400);
        let served = book.served(btc, 5_500).expect("three fresh venues");
        assert_eq!(served.price.to_string(), "101.5");
        assert_eq!((served.sources, served.ts_ms), (3, 40));
    }

    #[test]
    fn a_symbol_with_no_fresh_venue_is_not_served() {
        let book = book();
        let eth = book.symbols().lookup(b"eth-usd").expect("interned");
        assert_eq!(book.served(eth, 0), None);
        book.write(eth, VenueId(0), dec("3000"), 1, 1);
        assert!(book.served(eth, 1_001).is_some());
        assert_eq!(book.served(eth, 1_002), None);
        assert!(!book.all_fresh(1_002));
        let btc = book.symbols().lookup(b"BTC-USD").expect("interned");
        book.write(btc, VenueId(1), dec("1"), 1_000, 1_000);
        assert!(!book.all_fresh(1_500), "ETH-USD is not fresh yet");
        book.write(eth, VenueId(2), dec("2"), 1_000, 1_000);
        assert!(book.all_fresh(1_500));
    }

    #[test]
    fn symbols_added_at_runtime_get_rows() {
        let book = book();
        let sol = book.add_symbol("SOL-USD").expect("room left");
        assert_eq!(book.add_symbol("sol-usd").expect("existing"), sol);
        book.write(sol, VenueId(1), dec("240.5"), 9, 9);
        assert_eq!(book.served(sol, 10).map(|s| s.price), Some(dec("240.5")));
        assert_eq!(book.symbols().name(sol), "SOL-USD");
    }

    #[test]
    fn non_positive_prices_are_never_stored() {
        let book = book();
        let btc = book.symbols().lookup(b"BTC-USD").expect("interned");
        let [cb, kr, _] = ["coinbase", "kraken", "okx"].map(|v| book.venue(v).expect("venue"));
        assert_eq!(book.write(btc, cb, dec("100"), 1, 1_000), Verdict::Used);
        assert_eq!(book.write(btc, kr, dec("0.00"), 2, 1_000), Verdict::NotPositive);
        assert_eq!(book.write(btc, kr, dec("-64000.5"), 3, 1_000), Verdict::NotPositive);
        assert_eq!(
            book.write(btc, cb, dec("0"), 4, 1_100),
            Verdict::NotPositive,
            "the old price ages out, not replaced"
        );
        let served = book.served(btc, 1_100).expect("coinbase's last good price");
        assert_eq!((served.price, served.sources, served.spread), (dec("100"), 1, Some(Decimal::ZERO)));
        assert_eq!(book.served(btc, 2_001), None, "stale by stale_after_ms, as if the venue were silent");
        assert_eq!(book.quality(kr), QualityReading { prices_not_positive: 2, prices_outliers: 0 });
        assert_eq!(book.quality(cb).prices_not_positive, 1);
    }

    #[test]
    fn an_outlier_is_counted_at_write_and_never_served() {
        let book = book();
        let btc = book.symbols().lookup(b"BTC-USD").expect("interned");
        let [cb, kr, okx] = ["coinbase", "kraken", "okx"].map(|v| book.venue(v).expect("venue"));
        book.write(btc, cb, dec("64202.10"), 1, 1_000);
        book.write(btc, kr, dec("64202.56"), 2, 1_000);
        assert_eq!(
            book.write(btc, okx, dec("70000"), 3, 1_000),
            Verdict::Outlier { median: dec("64202.33") },
            "held against the median of the others"
        );
        let served = book.served(btc, 1_000).expect("fresh");
        assert_eq!((served.price, served.sources, served.spread), (dec("64202.33"), 2, Some(dec("0.46"))));
        assert_eq!(book.quality(okx).prices_outliers, 1);
        // Back in line: used again at once, and not counted.
        assert_eq!(book.write(btc, okx, dec("64203"), 4, 1_001), Verdict::Used);
        let served = book.served(btc, 1_001).expect("fresh");
        assert_eq!((served.price, served.sources, served.spread), (dec("64202.56"), 3, Some(dec("0.90"))));
        assert_eq!(book.quality(okx).prices_outliers, 1);
        // With the rule off, everything fresh and positive is used.
        let open =
            PriceBook::new(&["X"], &["a", "b", "c"], 4, 1_000).expect("book").with_outlier_bound(OutlierBound::OFF);
        let x = open.symbols().lookup(b"X").expect("interned");
        for (i, p) in ["1", "1", "100"].iter().enumerate() {
            assert_eq!(open.write(x, VenueId(i as u8), dec(p), 1, 1), Verdict::Used);
        }
        assert_eq!(open.served(x, 1).map(|s| s.sources), Some(3));
    }

    #[test]
    fn a_fallback_price_keeps_its_origin_and_refuses_non_positive() {
        let book = book();
        let eth = book.symbols().lookup(b"ETH-USD").expect("interned");
        assert!(!book.fill(eth, Layer::Rest, FillOrigin { sources: 1, spread: None }, dec("0"), 1, 1));
        assert_eq!(book.fallback(eth, 1), None);
        let origin = FillOrigin { sources: 4, spread: Some(dec("1.5")) };
        assert!(book.fill(eth, Layer::Cache, origin, dec("3000"), 1, 1));
        let served = book.fallback(eth, 1).expect("filled");
        assert_eq!((served.layer, served.sources, served.spread), (Layer::Cache, 4, Some(dec("1.5"))));
        assert!(book.fill(eth, Layer::Cache, FillOrigin { sources: 2, spread: None }, dec("3001"), 2, 2));
        assert_eq!(book.fallback(eth, 2).expect("filled").spread, None, "an older node that did not say");
    }

    #[test]
    fn refuses_bad_venue_sets() {
        assert!(matches!(PriceBook::new(&[], &["a", "a"], 1, 1), Err(BookError::DuplicateVenue(_))));
        let nine = ["1", "2", "3", "4", "5", "6", "7", "8", "9"];
        assert!(matches!(PriceBook::new(&[], &nine, 1, 1), Err(BookError::TooManyVenues(9))));
    }
}
