//! Request targets: which endpoint a path names, and the query parameters it carries.

use crate::http::request::Method;

/// The endpoints of the public HTTP path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Price,
    Prices,
    Usage,
    /// `GET /reports/usage`: the key's own usage history, answered from the ledger.
    Reports,
    /// `POST /v1/sessions`: a streaming session.
    Sessions,
    /// `GET /v1/stream`: the WebSocket upgrade, or server-sent events.
    Stream,
    Health,
    Ready,
    NotFound,
}

impl Route {
    /// The endpoint named by a target's path (the query is ignored).
    pub fn of(target: &[u8]) -> (Self, &[u8]) {
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(at) => (&target[..at], &target[at + 1..]),
            None => (target, &b""[..]),
        };
        let route = match path {
            b"/v1/price" => Route::Price,
            b"/v1/prices" => Route::Prices,
            b"/v1/usage" => Route::Usage,
            b"/reports/usage" => Route::Reports,
            b"/v1/sessions" => Route::Sessions,
            b"/v1/stream" => Route::Stream,
            b"/health" => Route::Health,
            b"/ready" => Route::Ready,
            _ => Route::NotFound,
        };
        (route, query)
    }

    /// Whether `method` is served on this route (GET, and HEAD wherever GET is, but for the two
    /// streaming routes).
    pub fn allows(self, method: Method) -> bool {
        match self {
            Route::NotFound => true,
            Route::Sessions => method == Method::Post,
            Route::Stream => method == Method::Get,
            _ => matches!(method, Method::Get | Method::Head),
        }
    }

    /// The `Allow` header value, for a 405 or an `OPTIONS` (which every route answers).
    pub fn allow_header(self) -> &'static [u8] {
        match self {
            Route::Sessions => b"POST, OPTIONS",
            Route::Stream => b"GET, OPTIONS",
            _ => b"GET, HEAD, OPTIONS",
        }
    }

    /// A 405's message, naming what `Allow` names.
    pub fn method_message(self) -> &'static [u8] {
        match self {
            Route::Sessions => b"use POST",
            Route::Stream => b"use GET",
            _ => b"use GET or HEAD",
        }
    }

    /// Whether the route needs an API key in a header (a stream's credential is its session).
    pub fn needs_key(self) -> bool {
        matches!(self, Route::Price | Route::Prices | Route::Usage | Route::Reports | Route::Sessions)
    }
}

/// The raw (still percent-encoded) value of the first parameter called `name`.
pub fn param<'q>(query: &'q [u8], name: &[u8]) -> Option<&'q [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        (key == name).then_some(value)
    })
}

/// True when the query carries something that looks like an API key, in any letter case:
/// refused on this path, because query strings end up in logs.
pub fn carries_key(query: &[u8]) -> bool {
    const NAMES: [&[u8]; 5] = [b"key", b"api_key", b"apikey", b"api-key", b"token"];
    query.split(|&b| b == b'&').any(|pair| {
        let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
        NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
    })
}

/// Percent-decodes `raw` (and `+` as space) into `out`; `None` when it is malformed or does not fit.
pub fn percent_decode<'o>(raw: &[u8], out: &'o mut [u8]) -> Option<&'o [u8]> {
    let mut len = 0;
    let mut i = 0;
    while i < raw.len() {
        let byte = match raw[i] {
            b'%' => {
                let hi = hex_value(*raw.get(i + 1)?)?;
                let lo = hex_value(*raw.get(i + 2)?)?;
                i += 2;
                hi << 4 | lo
            }
            b'+' => b' ',
            b => b,
        };
        *out.get_mut(len)? = byte;
        len += 1;
        i += 1;
    }
    Some(&out[..len])
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path_only() {
        assert_eq!(Route::of(b"/v1/price?symbol=BTC-USD"), (Route::Price, &b"symbol=BTC-USD"[..]));
        assert_eq!(Route::of(b"/v1/prices"), (Route::Prices, &b""[..]));
        assert_eq!(Route::of(b"/health"), (Route::Health, &b""[..]));
        assert_eq!(Route::of(b"/v1/stream?session_id=x"), (Route::Stream, &b"session_id=x"[..]));
        assert!(Route::Sessions.allows(Method::Post) && !Route::Sessions.allows(Method::Get));
        assert!(Route::Stream.allows(Method::Get) && !Route::Stream.allows(Method::Head));
        assert_eq!(Route::of(b"/v1/price/").0, Route::NotFound);
        assert_eq!(Route::of(b"").0, Route::NotFound);
    }

    #[test]
    fn a_405_message_names_what_allow_names() {
        for route in [Route::Price, Route::Prices, Route::Usage, Route::Reports, Route::Sessions, Route::Stream] {
            let allow = std::str::from_utf8(route.allow_header()).expect("ascii");
            let message = std::str::from_utf8(route.method_message()).expect("ascii");
            for method in ["GET", "HEAD", "POST"] {
                assert_eq!(allow.contains(method), message.contains(method), "{route:?}: {allow} vs {message}");
            }
        }
    }

    #[test]
    fn params_and_keys_in_queries() {
        let q = b"symbol=BTC-USD&sources=1&flag";
        assert_eq!(param(q, b"symbol"), Some(&b"BTC-USD"[..]));
        assert_eq!(param(q, b"sources"), Some(&b"1"[..]));
        assert_eq!(param(q, b"flag"), Some(&b""[..]));
        assert_eq!(param(q, b"missing"), None);
        assert!(carries_key(b"symbol=X&api_key=pb_1"));
        assert!(carries_key(b"API_KEY=pb_1&symbol=X"));
        assert!(carries_key(b"Token"));
        assert!(!carries_key(b"symbol=KEY"));
    }

    #[test]
    fn percent_decoding_is_bounded() {
        let mut out = [0u8; 8];
        assert_eq!(percent_decode(b"A%2CB+c", &mut out), Some(&b"A,B c"[..]));
        assert_eq!(percent_decode(b"%zz", &mut out), None);
        assert_eq!(percent_decode(b"%2", &mut out), None);
        assert_eq!(percent_decode(b"123456789", &mut out), None);
    }
}
