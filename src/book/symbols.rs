//! Symbols interned at start: a name becomes a dense [`SymbolId`] that indexes the book's table.

use rustc_hash::FxHashMap;

/// The longest symbol name, in bytes. The UDP protocol's symbol length field caps it at 32.
pub const SYMBOL_BYTES_MAX: usize = 32;

/// A symbol's row in the price book. Only a [`SymbolIndex`] makes one, so it is always in range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymbolId(u32);

impl SymbolId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The id as stored in an atomic word (a pending session's symbols).
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// An id back from [`SymbolId::raw`]. Rows are never removed from the book, so an id that was
    /// once in range stays in range.
    pub(crate) const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }
}

/// Why a symbol name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    /// Empty, longer than [`SYMBOL_BYTES_MAX`], or a byte outside `A-Z a-z 0-9 - _ . /`.
    #[error("invalid symbol {0:?}: 1 to 32 of A-Z, 0-9, '-', '_', '.', '/'")]
    Invalid(String),
    /// The same name twice in one symbol set.
    #[error("symbol {0} is listed twice")]
    Duplicate(String),
    /// More symbols than the book was sized for.
    #[error("more than {0} symbols (book.symbols_max)")]
    Full(usize),
}

/// The canonical (upper-case) spelling of a symbol, held on the stack.
#[derive(Clone, Copy)]
pub struct SymbolName {
    bytes: [u8; SYMBOL_BYTES_MAX],
    len: u8,
}

impl std::fmt::Debug for SymbolName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl SymbolName {
    /// Canonicalises `raw` (upper-cases it) or refuses it. Never allocates.
    pub fn parse(raw: &[u8]) -> Option<Self> {
        if raw.is_empty() || raw.len() > SYMBOL_BYTES_MAX {
            return None;
        }
        let mut bytes = [0u8; SYMBOL_BYTES_MAX];
        for (slot, &b) in bytes.iter_mut().zip(raw) {
            *slot = match b {
                b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => b,
                b'a'..=b'z' => b.to_ascii_uppercase(),
                _ => return None,
            };
        }
        Some(Self { bytes, len: raw.len() as u8 })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII bytes pass `parse`.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The interned symbol set. Immutable once built: adding a symbol builds a new index that the
/// book swaps in, so readers never lock.
#[derive(Debug, Default)]
pub struct SymbolIndex {
    names: Vec<Box<str>>,
    ids: FxHashMap<Box<str>, SymbolId>,
}

impl SymbolIndex {
    /// Interns `names` in order; the first gets id 0.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, capacity: usize) -> Result<Self, SymbolError> {
        let mut index = Self::default();
        for name in names {
            index.push(name, capacity)?;
        }
        Ok(index)
    }

    /// A copy of this index with `name` added (or this index's id for it if present).
    pub fn with(&self, name: &str, capacity: usize) -> Result<(Self, SymbolId), SymbolError> {
        let mut next = Self { names: self.names.clone(), ids: self.ids.clone() };
        let id = match next.lookup(name.as_bytes()) {
            Some(id) => id,
            None => next.push(name, capacity)?,
        };
        Ok((next, id))
    }

    fn push(&mut self, name: &str, capacity: usize) -> Result<SymbolId, SymbolError> {
        let canonical = SymbolName::parse(name.as_bytes()).ok_or_else(|| SymbolError::Invalid(name.to_owned()))?;
        if self.ids.contains_key(canonical.as_str()) {
            return Err(SymbolError::Duplicate(canonical.as_str().to_owned()));
        }
        if self.names.len() >= capacity {
            return Err(SymbolError::Full(capacity));
        }
        let id = SymbolId(self.names.len() as u32);
        self.names.push(canonical.as_str().into());
        self.ids.insert(canonical.as_str().into(), id);
        Ok(id)
    }

    /// The id of `name`, matched case-insensitively. Never allocates.
    pub fn lookup(&self, name: &[u8]) -> Option<SymbolId> {
        let canonical = SymbolName::parse(name)?;
        self.ids.get(canonical.as_str()).copied()
    }

    /// The canonical name of `id`.
    pub fn name(&self, id: SymbolId) -> &str {
        self.names.get(id.index()).map_or("", |n| n)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every (id, name) in id order.
    pub fn iter(&self) -> impl Iterator<Item = (SymbolId, &str)> {
        self.names.iter().enumerate().map(|(i, n)| (SymbolId(i as u32), &**n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_in_order_and_looks_up_case_insensitively() {
        let index = SymbolIndex::new(["BTC-USD", "eth-usd", "AAPL"], 8).expect("valid set");
        assert_eq!(index.lookup(b"btc-usd").map(SymbolId::index), Some(0));
        assert_eq!(index.lookup(b"ETH-USD").map(SymbolId::index), Some(1));
        assert_eq!(index.name(SymbolId(1)), "ETH-USD");
        assert_eq!(index.lookup(b"FOO-BAR"), None);
        assert_eq!(index.lookup(b"BTC USD"), None);
        assert_eq!(index.lookup(&[b'A'; 33]), None);
    }

    #[test]
    fn refuses_bad_sets() {
        assert!(matches!(SymbolIndex::new(["A", "a"], 8), Err(SymbolError::Duplicate(_))));
        assert!(matches!(SymbolIndex::new(["A B"], 8), Err(SymbolError::Invalid(_))));
        assert!(matches!(SymbolIndex::new(["A", "B"], 1), Err(SymbolError::Full(1))));
    }

    #[test]
    fn with_adds_without_touching_the_original() {
        let index = SymbolIndex::new(["A"], 4).expect("valid set");
        let (next, id) = index.with("b", 4).expect("room left");
        assert_eq!(id.index(), 1);
        assert_eq!(next.lookup(b"B"), Some(id));
        assert_eq!(index.lookup(b"B"), None);
    }
}
