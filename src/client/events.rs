//! Reading an event stream (WHATWG HTML, "Server-sent events", the parsing rules): a client's
//! sans-IO parser for `pricebeast query --sse` and the stress client's event-stream users. Bytes
//! in, whole events out; a line past the bound is an error, never a buffer that grows forever.
//! The request that opens a stream and the reading of its answer's head are here too, so that
//! both clients ask and judge the answer alike.

/// Response headers parsed at most: the server's answer to a stream request carries a handful.
const HEADERS_MAX: usize = 32;

/// The request for a session's event stream, as a browser's `EventSource` sends it;
/// `session_id` goes into the query as given (encoded already where it needs to be).
pub fn request(host: impl std::fmt::Display, session_id: &str) -> String {
    format!(
        "GET /v1/stream?session_id={session_id} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\n\r\n"
    )
}

/// What the head of the answer to a [`request`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The head's length: the events start after it.
    pub len: usize,
    pub status: u16,
    /// `Content-Type: text/event-stream`.
    pub event_stream: bool,
}

impl Head {
    /// Whether the answer is the stream: a `200` of `text/event-stream`. Anything else (an
    /// error, or a server that knows no event streams) refuses it.
    pub fn accepted(&self) -> bool {
        self.status == 200 && self.event_stream
    }
}

/// The answer's head at the start of `bytes`; `Ok(None)` while it is partial.
pub fn head(bytes: &[u8]) -> Result<Option<Head>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = response.parse(bytes)? else { return Ok(None) };
    let event_stream = response
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("content-type") && h.value.eq_ignore_ascii_case(b"text/event-stream"));
    Ok(Some(Head { len, status: response.code.unwrap_or_default(), event_stream }))
}

/// What an event stream delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A dispatched event: its type (`message` when it named none) and its data lines, joined
    /// with line feeds.
    Event { name: String, data: String },
    /// A comment line (`: ping`): nothing for the application, proof the stream is alive.
    Comment,
}

/// Why an event stream cannot be read on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    #[error("an event-stream line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("an event-stream line that is not UTF-8")]
    NotUtf8,
}

/// One stream's parser: the event being assembled between lines.
#[derive(Debug)]
pub struct EventParser {
    name: String,
    data: String,
    has_data: bool,
    line_bytes_max: usize,
}

impl EventParser {
    /// A parser refusing lines (and events) longer than `line_bytes_max`.
    pub fn new(line_bytes_max: usize) -> Self {
        Self { name: String::new(), data: String::new(), has_data: false, line_bytes_max }
    }

    /// Takes the next item from the front of `buf`, removing the bytes it used. `Ok(None)`: the
    /// bytes so far hold no whole item (read more, and call again).
    pub fn next(&mut self, buf: &mut Vec<u8>) -> Result<Option<Item>, EventsError> {
        loop {
            let Some(end) = buf.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if buf.len() > self.line_bytes_max {
                    return Err(EventsError::LineTooLong(self.line_bytes_max));
                }
                return Ok(None);
            };
            if end > self.line_bytes_max || self.data.len() + end > self.line_bytes_max {
                return Err(EventsError::LineTooLong(self.line_bytes_max));
            }
            let skip = match (buf[end], buf.get(end + 1)) {
                (b'\r', Some(b'\n')) => 2,
                // A CR last: the LF of a CRLF may be on its way.
                (b'\r', None) => return Ok(None),
                _ => 1,
            };
            let item = {
                let line = std::str::from_utf8(&buf[..end]).map_err(|_| EventsError::NotUtf8)?;
                self.line(line)
            };
            buf.drain(..end + skip);
            if let Some(item) = item {
                return Ok(Some(item));
            }
        }
    }

    /// One line: an item when it dispatches an event or is a comment.
    fn line(&mut self, line: &str) -> Option<Item> {
        if line.is_empty() {
            let name = std::mem::take(&mut self.name);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let name = if name.is_empty() { "message".to_owned() } else { name };
            return Some(Item::Event { name, data: std::mem::take(&mut self.data) });
        }
        if line.starts_with(':') {
            return Some(Item::Comment);
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id` and `retry` matter to a reconnecting browser; these clients do not reconnect.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn all(bytes: &[u8]) -> Vec<Item> {
        let mut parser = EventParser::new(1024);
        let mut buf = bytes.to_vec();
        let mut items = Vec::new();
        while let Some(item) = parser.next(&mut buf).expect("readable") {
            items.push(item);
        }
        items
    }

    fn event(name: &str, data: &str) -> Item {
        Item::Event { name: name.into(), data: data.into() }
    }

    #[test]
    fn reads_the_protocols_events_and_comments() {
        let stream = b"event: prices\ndata: {\"type\":\"prices\",\"prices\":[]}\n\n: ping\n\n";
        assert_eq!(all(stream), [event("prices", r#"{"type":"prices","prices":[]}"#), Item::Comment]);
    }

    #[test]
    fn follows_the_format_rules() {
        // Every line ending; several data lines; a field with no space; no event name; others.
        let stream = b"data:a\r\ndata: b\rid: 7\nretry: 10\n\r\nevent: x\ndata\n\nevent: dropped\n\n";
        assert_eq!(all(stream), [event("message", "a\nb"), event("x", "")]);
        // Split anywhere, the same items come out.
        for split in 0..stream.len() {
            let mut parser = EventParser::new(1024);
            let mut buf = stream[..split].to_vec();
            let mut items = Vec::new();
            while let Some(item) = parser.next(&mut buf).expect("readable") {
                items.push(item);
            }
            buf.extend_from_slice(&stream[split..]);
            while let Some(item) = parser.next(&mut buf).expect("readable") {
                items.push(item);
            }
            assert_eq!(items, all(stream), "split at {split}");
        }
    }

    #[test]
    fn the_request_asks_for_the_stream_and_the_head_judges_the_answer() {
        let request = request("127.0.0.1:8080", "ab%2F");
        assert!(request.starts_with("GET /v1/stream?session_id=ab%2F HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(request.contains("\r\nAccept: text/event-stream\r\n") && request.ends_with("\r\n\r\n"));
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: Text/Event-Stream\r\n\r\n: ping\n";
        let answer = head(ok).expect("valid").expect("whole");
        assert_eq!((answer.status, answer.event_stream, answer.accepted()), (200, true, true));
        assert_eq!(&ok[answer.len..], b": ping\n");
        assert_eq!(head(&ok[..12]), Ok(None));
        let refused = head(b"HTTP/1.1 410 Gone\r\nContent-Type: text/event-stream\r\n\r\n").expect("valid");
        assert_eq!(refused.map(|answer| (answer.status, answer.accepted())), Some((410, false)));
        assert!(head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn long_lines_and_bad_text_are_errors() {
        let mut parser = EventParser::new(8);
        assert_eq!(parser.next(&mut b"data: 1234567".to_vec()), Err(EventsError::LineTooLong(8)));
        let mut parser = EventParser::new(8);
        let mut many = b"data: 12\ndata: 34\n".to_vec();
        assert_eq!(parser.next(&mut many), Err(EventsError::LineTooLong(8)), "an event is bounded too");
        assert_eq!(EventParser::new(8).next(&mut b"data: \xff\n".to_vec()), Err(EventsError::NotUtf8));
    }

    proptest! {
        /// Arbitrary bytes never panic; what the parser keeps stays within its bound.
        #[test]
        fn any_bytes_are_answered(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
            let mut parser = EventParser::new(64);
            let mut buf = bytes.clone();
            loop {
                match parser.next(&mut buf) {
                    Ok(Some(Item::Event { data, .. })) => prop_assert!(data.len() <= 64),
                    Ok(Some(Item::Comment)) => {}
                    Ok(None) => {
                        prop_assert!(buf.len() <= 65);
                        break;
                    }
                    Err(_) => break,
                }
            }
            prop_assert!(parser.data.len() <= 64);
        }
    }
}
