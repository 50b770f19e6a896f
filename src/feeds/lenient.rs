//! Serde helpers for venue messages whose fields change shape from channel to channel (Bybit's
//! `data` is an object for tickers but an array for trades): one borrowing struct can then read
//! every message a venue sends, and a channel we never asked for is told apart by its name
//! instead of failing to parse.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A JSON object read as `T`; any other JSON value (an array, a string, a number, null) is
/// skipped and reads as `None`. Objects are handed to `T` without buffering, so borrowed
/// strings stay borrowed.
pub struct IfObject<T>(pub Option<T>);

impl<T> Default for IfObject<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for IfObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = IfObject<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(|value| IfObject(Some(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(IfObject(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(IfObject(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(IfObject(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(IfObject(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(IfObject(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(IfObject(None))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(IfObject(None))
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(IfObject(None))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Outer<'a> {
        #[serde(borrow, default)]
        data: IfObject<Inner<'a>>,
    }

    #[derive(Deserialize)]
    struct Inner<'a> {
        #[serde(borrow)]
        name: Cow<'a, str>,
    }

    fn simd(text: &str) -> Option<Option<String>> {
        let mut bytes = text.as_bytes().to_vec();
        let outer: Outer<'_> = simd_json::serde::from_slice(&mut bytes).ok()?;
        Some(outer.data.0.map(|inner| inner.name.into_owned()))
    }

    fn plain(text: &str) -> Option<Option<(String, bool)>> {
        let outer: Outer<'_> = serde_json::from_str(text).ok()?;
        Some(outer.data.0.map(|inner| (inner.name.to_string(), matches!(inner.name, Cow::Borrowed(_)))))
    }

    #[test]
    fn objects_are_read_and_everything_else_is_skipped() {
        assert_eq!(simd(r#"{"data":{"name":"x","other":[1]}}"#), Some(Some("x".into())));
        assert_eq!(plain(r#"{"data":{"name":"x"}}"#), Some(Some(("x".into(), true))));
        for other in
            [r#"{"data":[{"name":"x"},[1,2]]}"#, r#"{"data":"x"}"#, r#"{"data":null}"#, r#"{"data":1.5}"#, "{}"]
        {
            assert_eq!(simd(other), Some(None), "{other}");
            assert_eq!(plain(other), Some(None), "{other}");
        }
        // An object of the wrong shape is still an error: only the kind of value is forgiven.
        assert_eq!(simd(r#"{"data":{"name":1}}"#), None);
        assert_eq!(plain(r#"{"data":{"name":1}}"#), None);
    }
}
