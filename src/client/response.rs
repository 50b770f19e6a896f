//! Reading an HTTP/1.1 response from the bytes received so far: what the clients of this crate
//! (`client::http`, the exchanges' REST tickers in `feeds::rest`) share. Pure functions of
//! bytes, fuzzed by `fuzz/fuzz_targets/rest_ticker.rs`.

/// How much of a peer's text an error keeps: enough to read in a log line.
pub const ERROR_TEXT_BYTES_MAX: usize = 200;
/// Headers one response head may carry; httparse needs a fixed array, 64 slots on the stack.
pub const RESPONSE_HEADERS_MAX: usize = 64;

/// Why a response cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// Not HTTP/1.1 that can be read: a malformed head or chunk, conflicting lengths, a
    /// compressed body, or a connection closed before the body's end.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// The response runs past the reader's limit.
    #[error("the response is over {0} bytes")]
    TooLarge(usize),
}

/// A decoded HTTP response: its final status (interim 1xx heads are skipped) and whole body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Decodes the HTTP/1.1 response at the start of `raw`, the bytes read so far; `eof` says the
/// peer has closed. `Ok(None)`: more bytes are needed (never when `eof`). A body is framed by
/// `Transfer-Encoding: chunked`, by `Content-Length`, or else by the end of the connection, as
/// RFC 9112 orders them. Once a response is complete, bytes after it change nothing.
pub fn decode(raw: &[u8], eof: bool, limit: usize) -> Result<Option<Response>, ResponseError> {
    let mut start = 0;
    loop {
        let rest = &raw[start..];
        let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(rest) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return need_more(raw.len(), eof, "the response head", limit),
            Err(e) => return Err(ResponseError::Malformed(format!("the response head: {e}"))),
        };
        let status = head.code.unwrap_or(0);
        // An interim response (103 Early Hints, a stray 100 Continue) precedes the real one.
        if (100..200).contains(&status) && status != 101 {
            start += head_len;
            continue;
        }
        let body = &rest[head_len..];
        let body = match framing(status, head.headers)? {
            Framing::Length(len) => {
                if len > limit.saturating_sub(start + head_len) {
                    return Err(ResponseError::TooLarge(limit));
                }
                match body.get(..len) {
                    Some(body) => body.to_vec(),
                    None => return need_more(raw.len(), eof, "the body", limit),
                }
            }
            Framing::Chunked => match decode_chunked(body, limit)? {
                Some(body) => body,
                None => return need_more(raw.len(), eof, "the chunked body", limit),
            },
            Framing::ToEof if eof && raw.len() <= limit => body.to_vec(),
            Framing::ToEof => return need_more(raw.len(), eof, "the body", limit),
        };
        return Ok(Some(Response { status, body }));
    }
}

/// Decodes a chunked body at the start of `raw`: `Ok(None)` until its last chunk and trailers
/// are in. Chunk extensions and trailer fields are read past and dropped.
pub fn decode_chunked(raw: &[u8], limit: usize) -> Result<Option<Vec<u8>>, ResponseError> {
    let malformed = |what: &str| ResponseError::Malformed(format!("the chunked body: {what}"));
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line = &raw[at..];
        // httparse reads an empty size line as 0, which would end the body early.
        if line.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
            return Err(malformed("a chunk size that is not hexadecimal"));
        }
        let (line_len, size) = match httparse::parse_chunk_size(line) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(malformed("a malformed chunk size line")),
        };
        at += line_len;
        if size == 0 {
            return Ok(trailers_end(&raw[at..]).then_some(body));
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|&size| size <= limit - body.len())
            .ok_or(ResponseError::TooLarge(limit))?;
        let Some(data) = raw[at..].get(..size) else { return Ok(None) };
        body.extend_from_slice(data);
        at += size;
        let end = &raw[at..];
        if end.len() < 2 {
            return if b"\r\n".starts_with(end) { Ok(None) } else { Err(malformed("a chunk not ended by CRLF")) };
        }
        if &end[..2] != b"\r\n" {
            return Err(malformed("a chunk not ended by CRLF"));
        }
        at += 2;
    }
}

/// How a response's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    ToEof,
}

/// The body's framing from the head, refusing what could be read two ways or not at all.
fn framing(status: u16, headers: &[httparse::Header<'_>]) -> Result<Framing, ResponseError> {
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut length: Option<usize> = None;
    for header in headers {
        let value = header.value.trim_ascii();
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Of several codings (or headers), the last applied decides: only a final `chunked`
            // frames the body.
            transfer_encoding = value.rsplit(|&b| b == b',').next().map(<[u8]>::trim_ascii);
        } else if header.name.eq_ignore_ascii_case("content-length") {
            for item in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                let parsed = parse_length(item)
                    .ok_or_else(|| ResponseError::Malformed(format!("Content-Length {:?}", sanitized(value))))?;
                if length.is_some_and(|seen| seen != parsed) {
                    return Err(ResponseError::Malformed("two different Content-Length values".into()));
                }
                length = Some(parsed);
            }
        } else if header.name.eq_ignore_ascii_case("content-encoding")
            && !value.is_empty()
            && !value.eq_ignore_ascii_case(b"identity")
        {
            // The request asks for `identity`; a compressed body could not be read.
            return Err(ResponseError::Malformed(format!("a body encoded as {:?}, not asked for", sanitized(value))));
        }
    }
    Ok(match (status, transfer_encoding, length) {
        (204 | 304, _, _) => Framing::Length(0),
        (_, Some(coding), _) if coding.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
        (_, Some(_), _) => Framing::ToEof,
        (_, None, Some(len)) => Framing::Length(len),
        (_, None, None) => Framing::ToEof,
    })
}

/// A Content-Length value: ASCII digits only (no sign, no space), saturating so that a huge one
/// is refused as too large rather than as malformed.
fn parse_length(text: &[u8]) -> Option<usize> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0usize, |len, &digit| len.saturating_mul(10).saturating_add(usize::from(digit - b'0'))))
}

/// Whether the trailer section after the last chunk is complete: lines up to an empty one.
fn trailers_end(raw: &[u8]) -> bool {
    let mut rest = raw;
    while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..newline];
        if line.is_empty() || line == b"\r" {
            return true;
        }
        rest = &rest[newline + 1..];
    }
    false
}

/// The answer for a response that is not complete in `raw_len` bytes.
fn need_more(raw_len: usize, eof: bool, what: &str, limit: usize) -> Result<Option<Response>, ResponseError> {
    if raw_len > limit {
        Err(ResponseError::TooLarge(limit))
    } else if eof {
        Err(ResponseError::Malformed(format!("the connection closed before the end of {what}")))
    } else {
        Ok(None)
    }
}

/// A peer's text made safe for a log line: at most [`ERROR_TEXT_BYTES_MAX`] bytes, control
/// characters (a CR/LF that would forge a log line among them) replaced by spaces.
pub fn sanitized(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(ERROR_TEXT_BYTES_MAX)];
    let mut text: String =
        String::from_utf8_lossy(shown).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if shown.len() < bytes.len() {
        text.push_str("...");
    }
    text
}
