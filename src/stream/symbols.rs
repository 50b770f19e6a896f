//! The symbol lists clients send: the body of `POST /v1/sessions` (`{"symbols":[...]}`) and the
//! symbol change on an open stream (`{"type":"symbols","symbols":[...]}`). JSON through serde: one
//! allocation per session or change, never per update.

use serde::Deserialize;

use crate::book::{PriceBook, SymbolId, SymbolName};
use crate::stream::sessions::SESSION_SYMBOLS_MAX;

/// A checked symbol set: 1 to 100 known symbols, each once, in the order first asked, and the
/// optional fields the stream's frames carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolSet {
    pub ids: Vec<SymbolId>,
    pub fields: Fields,
}

/// Optional fields of a stream's price objects, asked for in the session
/// (`{"symbols":[...],"fields":["spread"]}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// `"spread"`: the highest minus the lowest venue price used.
    pub spread: bool,
}

impl Fields {
    pub const fn bits(self) -> u32 {
        self.spread as u32
    }

    pub const fn from_bits(bits: u32) -> Self {
        Self { spread: bits & 1 != 0 }
    }
}

/// Why a symbol list was refused; `Display` is the message clients see, and needs no JSON
/// escaping (a client's raw text is never echoed; an unknown symbol is echoed in its checked form).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SymbolsError {
    #[error("{expected}")]
    Malformed { expected: &'static str },
    #[error("symbols must list 1 to {SESSION_SYMBOLS_MAX} symbols")]
    Count,
    #[error("invalid symbol: 1 to 32 of A-Z 0-9 - _ . /")]
    Invalid(String),
    #[error("unknown symbol {0}")]
    Unknown(String),
    #[error("fields may list only spread")]
    Field,
    #[error("fields are chosen when the session is created, not in a symbol change")]
    FieldsInChange,
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "type")]
    kind: Option<String>,
    symbols: Vec<String>,
    fields: Option<Vec<String>>,
}

/// What a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A session's body: `type` absent.
    Session,
    /// A stream's symbol change: `type` is `"symbols"`.
    Change,
}

/// Parses and checks a symbol list against the book's symbols.
pub fn parse(json: &[u8], expect: Expect, book: &PriceBook) -> Result<SymbolSet, SymbolsError> {
    let expected = match expect {
        Expect::Session => "the body must be a JSON object with a symbols array",
        Expect::Change => "a symbol change is a JSON object with type symbols and a symbols array",
    };
    let body: Body = serde_json::from_slice(json).map_err(|_| SymbolsError::Malformed { expected })?;
    let kind_ok = match expect {
        Expect::Session => body.kind.is_none(),
        Expect::Change => body.kind.as_deref() == Some("symbols"),
    };
    if !kind_ok {
        return Err(SymbolsError::Malformed { expected });
    }
    if body.symbols.is_empty() || body.symbols.len() > SESSION_SYMBOLS_MAX {
        return Err(SymbolsError::Count);
    }
    let mut fields = Fields::default();
    if let Some(asked) = &body.fields {
        if expect == Expect::Change {
            return Err(SymbolsError::FieldsInChange);
        }
        for field in asked {
            match field.as_str() {
                "spread" => fields.spread = true,
                _ => return Err(SymbolsError::Field),
            }
        }
    }
    let index = book.symbols();
    let mut ids = Vec::with_capacity(body.symbols.len());
    for raw in &body.symbols {
        let name = SymbolName::parse(raw.as_bytes()).ok_or_else(|| SymbolsError::Invalid(raw.clone()))?;
        let id = index.lookup(name.as_bytes()).ok_or_else(|| SymbolsError::Unknown(name.as_str().to_owned()))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(SymbolSet { ids, fields })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn book() -> PriceBook {
        PriceBook::new(&["BTC-USD", "ETH-USD"], &["v"], 16, 5_000).expect("book")
    }

    #[test]
    fn reads_sessions_and_changes() {
        let book = book();
        let set = parse(br#"{"symbols":["eth-usd","BTC-USD","ETH-USD"]}"#, Expect::Session, &book).expect("ok");
        assert_eq!(set.ids.len(), 2);
        assert_eq!(book.symbols().name(set.ids[0]), "ETH-USD");
        assert!(parse(br#"{"type":"symbols","symbols":["BTC-USD"]}"#, Expect::Change, &book).is_ok());
    }

    #[test]
    fn refuses_each_kind_of_bad_list() {
        let book = book();
        let session = |j: &[u8]| parse(j, Expect::Session, &book);
        assert!(matches!(session(b"{"), Err(SymbolsError::Malformed { .. })));
        assert!(matches!(session(br#"{"symbols":"BTC-USD"}"#), Err(SymbolsError::Malformed { .. })));
        assert!(matches!(session(br#"{"type":"x","symbols":["BTC-USD"]}"#), Err(SymbolsError::Malformed { .. })));
        assert_eq!(session(br#"{"symbols":[]}"#), Err(SymbolsError::Count));
        let many = format!(r#"{{"symbols":[{}]}}"#, vec!["\"BTC-USD\""; 101].join(","));
        assert_eq!(session(many.as_bytes()), Err(SymbolsError::Count));
        assert_eq!(session(br#"{"symbols":["BTC USD"]}"#), Err(SymbolsError::Invalid("BTC USD".into())));
        assert_eq!(session(br#"{"symbols":["FOO-BAR"]}"#), Err(SymbolsError::Unknown("FOO-BAR".into())));
        assert!(matches!(
            parse(br#"{"symbols":["BTC-USD"]}"#, Expect::Change, &book),
            Err(SymbolsError::Malformed { .. })
        ));
    }

    #[test]
    fn a_session_may_ask_for_the_spread() {
        let book = book();
        let session = |j: &[u8]| parse(j, Expect::Session, &book);
        assert_eq!(session(br#"{"symbols":["BTC-USD"]}"#).expect("ok").fields, Fields::default());
        let set = session(br#"{"symbols":["BTC-USD"],"fields":["spread"]}"#).expect("ok");
        assert_eq!(set.fields, Fields { spread: true });
        assert_eq!(Fields::from_bits(set.fields.bits()), set.fields);
        assert_eq!(session(br#"{"symbols":["BTC-USD"],"fields":[]}"#).expect("ok").fields, Fields::default());
        assert_eq!(session(br#"{"symbols":["BTC-USD"],"fields":["spred"]}"#), Err(SymbolsError::Field));
        assert!(matches!(
            session(br#"{"symbols":["BTC-USD"],"fields":"spread"}"#),
            Err(SymbolsError::Malformed { .. })
        ));
        assert_eq!(
            parse(br#"{"type":"symbols","symbols":["BTC-USD"],"fields":["spread"]}"#, Expect::Change, &book),
            Err(SymbolsError::FieldsInChange)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let book = book();
            let _ = parse(&bytes, Expect::Session, &book);
            let _ = parse(&bytes, Expect::Change, &book);
        }
    }
}
