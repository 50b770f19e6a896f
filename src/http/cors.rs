//! CORS (docs/protocol.md, "CORS"): which browser origins may call the public API, decided once
//! per request from its `Origin` header. A request without one (every non-browser client) costs
//! a single comparison, and its response carries no CORS header at all.

/// Longest origin `http.cors_origins` may list: a scheme, a host and a port fit in far less.
pub const ORIGIN_BYTES_MAX: usize = 256;

/// Methods and headers a preflight allows: all the public path uses.
pub const ALLOW_METHODS: &[u8] = b"GET, POST, OPTIONS";
pub const ALLOW_HEADERS: &[u8] = b"X-API-Key, Authorization, Content-Type";
/// Headers a page may read from a response: the rate-limit state a client should respect.
pub const EXPOSE_HEADERS: &[u8] = b"RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After";

/// The origins allowed, from `http.cors_origins`.
#[derive(Debug, Default)]
pub struct Policy {
    any: bool,
    /// Leaked once per process (a few short strings) so that a response, which may wait on the
    /// control plane, can carry the origin as `&'static` bytes without copying it.
    origins: Vec<&'static [u8]>,
}

/// How a response answers an allowed origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// The request's own origin, echoed (with `Vary: Origin`).
    Origin(&'static [u8]),
}

impl Allowed {
    pub fn header_value(self) -> &'static [u8] {
        match self {
            Allowed::Any => b"*",
            Allowed::Origin(origin) => origin,
        }
    }
}

impl Policy {
    /// `"*"` allows every origin; `[]` turns CORS off. Origins are compared byte for byte, as
    /// browsers send them (`https://app.example.com`, no path, no trailing slash).
    pub fn new(origins: &[String]) -> Self {
        let any = origins.iter().any(|o| o == "*");
        let origins = if any {
            Vec::new()
        } else {
            origins.iter().map(|o| &*Box::leak(o.as_bytes().to_vec().into_boxed_slice())).collect()
        };
        Self { any, origins }
    }

    /// What a request with this `Origin` header is answered with; `None` when it carries none
    /// or its origin is not allowed (then no CORS header is sent, and the browser refuses).
    pub fn allow(&self, origin: Option<&[u8]>) -> Option<Allowed> {
        let origin = origin?;
        if self.any {
            return Some(Allowed::Any);
        }
        self.origins.iter().find(|allowed| **allowed == origin).map(|allowed| Allowed::Origin(allowed))
    }
}

/// Checks `http.cors_origins` when the config is loaded.
pub fn validate(origins: &[String]) -> Result<(), String> {
    for origin in origins {
        if origin == "*" {
            continue;
        }
        let well_formed = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin.ends_with('/')
            && origin.len() <= ORIGIN_BYTES_MAX
            && origin.bytes().all(|b| b.is_ascii_graphic());
        if !well_formed {
            return Err(format!(
                "{origin:?} is not an origin: write \"*\" or scheme://host[:port], without a path or trailing slash"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_origin_or_a_listed_one() {
        let any = Policy::new(&["*".into()]);
        assert_eq!(any.allow(Some(b"https://a.example")), Some(Allowed::Any));
        assert_eq!(any.allow(None), None, "no Origin, no CORS headers");
        let listed = Policy::new(&["https://a.example".into(), "http://localhost:3000".into()]);
        assert_eq!(listed.allow(Some(b"https://a.example")), Some(Allowed::Origin(b"https://a.example")));
        assert_eq!(listed.allow(Some(b"https://a.example.evil")), None);
        assert_eq!(
            listed.allow(Some(b"http://localhost:3000")).map(Allowed::header_value),
            Some(&b"http://localhost:3000"[..])
        );
        assert_eq!(Policy::new(&[]).allow(Some(b"https://a.example")), None, "[] is off");
    }

    #[test]
    fn only_origins_are_accepted() {
        assert!(validate(&["*".into(), "https://a.example:8443".into()]).is_ok());
        for bad in ["a.example", "https://a.example/", "https://a example", "ftp://a.example"] {
            assert!(validate(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
