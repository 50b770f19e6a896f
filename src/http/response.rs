//! HTTP responses built in place: status line, headers and body written into a caller's
//! fixed buffer, with the Date header taken from the per-second cache. No allocation.

use crate::admission::RateInfo;
use crate::buf::FixedBuf;
use crate::clock::HTTP_DATE_BYTES;
use crate::http::cors::{self, Allowed};

/// Every error the public path answers with: docs/protocol.md's table, plus 408 for a request whose
/// headers did not arrive in time and 500 for a response that could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    UnknownSymbol,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    BodyTooLarge,
    HeadTooLarge,
    RateLimited,
    QuotaExceeded,
    Internal,
    Stale,
    Overloaded,
    UpstreamTimeout,
    /// `/v1/stream` without a version 13 WebSocket upgrade.
    UpgradeRequired,
}

impl ErrorCode {
    pub fn status(self) -> Status {
        match self {
            ErrorCode::BadRequest => Status::BAD_REQUEST,
            ErrorCode::Unauthorized => Status::UNAUTHORIZED,
            ErrorCode::UnknownSymbol | ErrorCode::NotFound => Status::NOT_FOUND,
            ErrorCode::MethodNotAllowed => Status::METHOD_NOT_ALLOWED,
            ErrorCode::RequestTimeout => Status::REQUEST_TIMEOUT,
            ErrorCode::BodyTooLarge => Status::CONTENT_TOO_LARGE,
            ErrorCode::HeadTooLarge => Status::HEADERS_TOO_LARGE,
            ErrorCode::RateLimited | ErrorCode::QuotaExceeded => Status::TOO_MANY_REQUESTS,
            ErrorCode::Internal => Status::INTERNAL,
            ErrorCode::Stale | ErrorCode::Overloaded => Status::UNAVAILABLE,
            ErrorCode::UpstreamTimeout => Status::GATEWAY_TIMEOUT,
            ErrorCode::UpgradeRequired => Status::UPGRADE_REQUIRED,
        }
    }

    /// The `error` field of the JSON body.
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::BodyTooLarge | ErrorCode::HeadTooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::Internal => "internal",
            ErrorCode::Stale => "stale",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::UpgradeRequired => "upgrade_required",
        }
    }
}

/// A status code with its reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    line: &'static [u8],
}

impl Status {
    pub const OK: Self = Self { code: 200, line: b"HTTP/1.1 200 OK\r\n" };
    pub const NO_CONTENT: Self = Self { code: 204, line: b"HTTP/1.1 204 No Content\r\n" };
    pub const BAD_REQUEST: Self = Self { code: 400, line: b"HTTP/1.1 400 Bad Request\r\n" };
    pub const UNAUTHORIZED: Self = Self { code: 401, line: b"HTTP/1.1 401 Unauthorized\r\n" };
    pub const NOT_FOUND: Self = Self { code: 404, line: b"HTTP/1.1 404 Not Found\r\n" };
    pub const METHOD_NOT_ALLOWED: Self = Self { code: 405, line: b"HTTP/1.1 405 Method Not Allowed\r\n" };
    pub const REQUEST_TIMEOUT: Self = Self { code: 408, line: b"HTTP/1.1 408 Request Timeout\r\n" };
    pub const CONTENT_TOO_LARGE: Self = Self { code: 413, line: b"HTTP/1.1 413 Content Too Large\r\n" };
    pub const UPGRADE_REQUIRED: Self = Self { code: 426, line: b"HTTP/1.1 426 Upgrade Required\r\n" };
    pub const TOO_MANY_REQUESTS: Self = Self { code: 429, line: b"HTTP/1.1 429 Too Many Requests\r\n" };
    pub const HEADERS_TOO_LARGE: Self = Self { code: 431, line: b"HTTP/1.1 431 Request Header Fields Too Large\r\n" };
    pub const INTERNAL: Self = Self { code: 500, line: b"HTTP/1.1 500 Internal Server Error\r\n" };
    pub const UNAVAILABLE: Self = Self { code: 503, line: b"HTTP/1.1 503 Service Unavailable\r\n" };
    pub const GATEWAY_TIMEOUT: Self = Self { code: 504, line: b"HTTP/1.1 504 Gateway Timeout\r\n" };
}

/// The body's media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    Json,
    Text,
    /// No body and no length: a 204 (RFC 9110 section 8.6 forbids its Content-Length).
    Empty,
    /// Server-sent events: no length, the body runs until the connection closes (RFC 9112
    /// section 6.3), and nothing may cache it.
    EventStream,
}

/// Optional headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extra {
    pub rate: Option<RateInfo>,
    pub retry_after_s: Option<u64>,
    pub allow: Option<&'static [u8]>,
    pub www_authenticate: bool,
    /// `Upgrade: websocket` and `Sec-WebSocket-Version: 13`, for a 426.
    pub websocket_upgrade: bool,
    /// The request came from a browser origin that may read the answer.
    pub cors: Option<Allowed>,
    /// A CORS preflight's answer: the methods and headers allowed, cached this long.
    pub preflight_max_age_s: Option<u32>,
    /// `Connection: keep-alive`, which an HTTP/1.0 client needs to keep its connection.
    pub keep_alive: bool,
    pub close: bool,
}

/// The longest head [`write`] produces: status line, fixed headers, every optional header.
pub const HEAD_BYTES_MAX: usize = 1024;

/// Writes a whole response. With `head_only` (a HEAD request) the body is measured, not sent.
pub fn write(
    out: &mut FixedBuf,
    status: Status,
    date: &[u8; HTTP_DATE_BYTES],
    content_type: ContentType,
    body: &[u8],
    extra: &Extra,
    head_only: bool,
) {
    out.put(status.line);
    out.put(b"Server: pricebeast\r\nDate: ");
    out.put(date);
    match content_type {
        ContentType::Json => {
            out.put(b"\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: ");
            out.put_u64(body.len() as u64);
            out.put(b"\r\n");
        }
        ContentType::Text => {
            out.put(b"\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: ");
            out.put_u64(body.len() as u64);
            out.put(b"\r\n");
        }
        ContentType::Empty => out.put(b"\r\n"),
        ContentType::EventStream => out.put(b"\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"),
    }
    if let Some(rate) = extra.rate {
        out.put(b"RateLimit-Limit: ");
        out.put_u64(u64::from(rate.limit));
        out.put(b"\r\nRateLimit-Remaining: ");
        out.put_u64(u64::from(rate.remaining));
        out.put(b"\r\nRateLimit-Reset: ");
        out.put_u64(rate.reset_s);
        out.put(b"\r\n");
    }
    if let Some(seconds) = extra.retry_after_s {
        out.put(b"Retry-After: ");
        out.put_u64(seconds);
        out.put(b"\r\n");
    }
    if let Some(allow) = extra.allow {
        out.put(b"Allow: ");
        out.put(allow);
        out.put(b"\r\n");
    }
    if extra.www_authenticate {
        out.put(b"WWW-Authenticate: Bearer\r\n");
    }
    if extra.websocket_upgrade {
        out.put(b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    if let Some(allowed) = extra.cors {
        out.put(b"Access-Control-Allow-Origin: ");
        out.put(allowed.header_value());
        if let Allowed::Origin(_) = allowed {
            out.put(b"\r\nVary: Origin");
        }
        match extra.preflight_max_age_s {
            Some(max_age_s) => {
                out.put(b"\r\nAccess-Control-Allow-Methods: ");
                out.put(cors::ALLOW_METHODS);
                out.put(b"\r\nAccess-Control-Allow-Headers: ");
                out.put(cors::ALLOW_HEADERS);
                out.put(b"\r\nAccess-Control-Max-Age: ");
                out.put_u64(u64::from(max_age_s));
            }
            None => {
                out.put(b"\r\nAccess-Control-Expose-Headers: ");
                out.put(cors::EXPOSE_HEADERS);
            }
        }
        out.put(b"\r\n");
    }
    if extra.close {
        out.put(b"Connection: close\r\n");
    } else if extra.keep_alive {
        out.put(b"Connection: keep-alive\r\n");
    }
    out.put(b"\r\n");
    if !head_only {
        out.put(body);
    }
}

/// Writes `{"error":"<code>","message":"<parts...>"}`. The parts must need no JSON escaping:
/// they are static text or names already checked to be plain ASCII.
pub fn write_error_body(body: &mut FixedBuf, code: ErrorCode, message: &[&[u8]]) {
    body.put(b"{\"error\":\"");
    body.put(code.code().as_bytes());
    body.put(b"\",\"message\":\"");
    for part in message {
        body.put(part);
    }
    body.put(b"\"}");
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8; HTTP_DATE_BYTES] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    #[test]
    fn writes_a_complete_json_response() {
        let mut out = FixedBuf::with_capacity(1024);
        let extra = Extra { rate: Some(RateInfo { limit: 20, remaining: 19, reset_s: 1 }), ..Extra::default() };
        write(&mut out, Status::OK, DATE, ContentType::Json, b"{}", &extra, false);
        let text = std::str::from_utf8(out.as_slice()).expect("ascii");
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nServer: pricebeast\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\
             RateLimit-Limit: 20\r\nRateLimit-Remaining: 19\r\nRateLimit-Reset: 1\r\n\r\n{}"
        );
    }

    #[test]
    fn the_longest_head_fits_head_bytes_max() {
        let mut out = FixedBuf::with_capacity(HEAD_BYTES_MAX);
        let extra = Extra {
            rate: Some(RateInfo { limit: u32::MAX, remaining: u32::MAX, reset_s: u64::MAX }),
            retry_after_s: Some(u64::MAX),
            allow: Some(b"GET, HEAD"),
            www_authenticate: true,
            websocket_upgrade: true,
            cors: Some(Allowed::Origin(&[b'x'; cors::ORIGIN_BYTES_MAX])),
            preflight_max_age_s: None,
            keep_alive: false,
            close: true,
        };
        write(&mut out, Status::HEADERS_TOO_LARGE, DATE, ContentType::Text, &[], &extra, true);
        assert!(!out.overflowed(), "{} bytes", out.len());
        // A preflight's headers in place of the exposed ones.
        out.clear();
        write(
            &mut out,
            Status::HEADERS_TOO_LARGE,
            DATE,
            ContentType::Text,
            &[],
            &Extra { preflight_max_age_s: Some(u32::MAX), ..extra },
            true,
        );
        assert!(!out.overflowed(), "{} bytes", out.len());
    }

    #[test]
    fn cors_and_keep_alive_headers() {
        let mut out = FixedBuf::with_capacity(1024);
        let preflight = Extra {
            cors: Some(Allowed::Any),
            preflight_max_age_s: Some(600),
            allow: Some(b"GET, HEAD, OPTIONS"),
            ..Extra::default()
        };
        write(&mut out, Status::NO_CONTENT, DATE, ContentType::Empty, b"", &preflight, false);
        let text = std::str::from_utf8(out.as_slice()).expect("ascii");
        assert_eq!(
            text,
            "HTTP/1.1 204 No Content\r\nServer: pricebeast\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Allow: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Origin: *\r\n\
             Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
             Access-Control-Allow-Headers: X-API-Key, Authorization, Content-Type\r\n\
             Access-Control-Max-Age: 600\r\n\r\n"
        );
        out.clear();
        let echoed = Extra { cors: Some(Allowed::Origin(b"https://a.example")), keep_alive: true, ..Extra::default() };
        write(&mut out, Status::OK, DATE, ContentType::Text, b"ok", &echoed, false);
        let text = std::str::from_utf8(out.as_slice()).expect("ascii");
        assert!(
            text.ends_with(
                "Access-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n\
                 Access-Control-Expose-Headers: RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After\r\n\
                 Connection: keep-alive\r\n\r\nok"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_event_stream_head_has_no_length() {
        let mut out = FixedBuf::with_capacity(1024);
        let extra = Extra { cors: Some(Allowed::Any), ..Extra::default() };
        write(&mut out, Status::OK, DATE, ContentType::EventStream, b"", &extra, false);
        let text = std::str::from_utf8(out.as_slice()).expect("ascii");
        assert!(
            text.starts_with(
                "HTTP/1.1 200 OK\r\nServer: pricebeast\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
                 Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n") && !text.contains("Content-Length"), "{text}");
    }

    #[test]
    fn head_requests_get_the_length_but_no_body() {
        let mut out = FixedBuf::with_capacity(512);
        write(&mut out, Status::OK, DATE, ContentType::Text, b"ok", &Extra::default(), true);
        assert!(out.as_slice().ends_with(b"Content-Length: 2\r\n\r\n"));
    }

    #[test]
    fn error_bodies() {
        let mut body = FixedBuf::with_capacity(128);
        write_error_body(&mut body, ErrorCode::UnknownSymbol, &[b"unknown symbol ", b"FOO-BAR"]);
        assert_eq!(body.as_slice(), br#"{"error":"unknown_symbol","message":"unknown symbol FOO-BAR"}"#);
    }
}
