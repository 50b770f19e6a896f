//! The streaming users' event streams (`protocol = "sse"`): after the same session as a WebSocket
//! user's, `GET /v1/stream` with `Accept: text/event-stream` on a new connection (as a browser's
//! `EventSource` does), the events read and parsed here (`client::events`) until the user's
//! stream time is up, then the connection closed by the client, which is how an event stream
//! ends. Each `prices` event's data is the JSON of a WebSocket frame and is recorded the same way
//! (`ws::record_frame`), so the figures and their reconciliation are the WebSocket plan's.

use std::cell::RefCell;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::client::events::{self, EventParser, Item};
use crate::stress::load::connect::Connect;
use crate::stress::load::ws::{
    closed, first_failure, open_stream, percent_encoded, record_frame, Books, Ended, StreamFacts, WsJob,
    RESPONSE_BYTES_MAX, WS_FRAME_BYTES_MAX,
};
use crate::stress::measure::WsOutcome;

/// Room made in a stream's buffer before each read: a frame of 100 prices is about 10 KiB and
/// simply takes a few reads. Every open stream holds its buffer.
const READ_BYTES: usize = 4 * 1024;

/// An open event stream: the connection, what has been read of it and not yet parsed.
struct EventStream<S> {
    stream: S,
    buf: Vec<u8>,
    parser: EventParser,
}

/// The stream for `session_id`, read until `stream_until`, then closed: the first failure is
/// the attempt's outcome.
pub(super) async fn attempt<C: Connect>(
    job: &WsJob,
    connector: &C,
    session_id: &str,
    asked: usize,
    stream_until: Instant,
    books: &RefCell<Books>,
) -> WsOutcome {
    let request = events::request(job.target, &percent_encoded(session_id));
    let (mut events, sent_ms) =
        match open_stream(job, connector, books, |stream| answer(stream, request.as_bytes())).await {
            Ok(open) => open,
            Err(outcome) => return outcome,
        };
    job.progress.streams_open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let ended = read(job, &mut events, asked, sent_ms, stream_until, books).await;
    let outcome = close(job, events, ended, books).await;
    job.progress.streams_open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    outcome
}

/// Sends the request and reads the answer's head: a `200 text/event-stream` is the stream (what
/// came after its head kept for the parser); any other answer is a refused stream.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> Result<EventStream<S>, WsOutcome> {
    stream.write_all(request).await.map_err(|_| WsOutcome::Io)?;
    // TLS holds the last record until flushed; on a TcpStream this is a no-op.
    stream.flush().await.map_err(|_| WsOutcome::Io)?;
    let mut buf = Vec::with_capacity(READ_BYTES);
    loop {
        if let Some((head, accepted)) = head_of(&buf)? {
            if !accepted {
                return Err(WsOutcome::Handshake);
            }
            buf.drain(..head);
            return Ok(EventStream { stream, buf, parser: EventParser::new(WS_FRAME_BYTES_MAX) });
        }
        if buf.len() > RESPONSE_BYTES_MAX || read_more(&mut stream, &mut buf).await? == 0 {
            return Err(WsOutcome::Io);
        }
    }
}

/// The length of a whole response head at the start of `bytes`, and whether it accepts the
/// stream; `None` while it is partial.
fn head_of(bytes: &[u8]) -> Result<Option<(usize, bool)>, WsOutcome> {
    let head = events::head(bytes).map_err(|_| WsOutcome::Io)?;
    Ok(head.map(|head| (head.len, head.accepted())))
}

/// Reads what has come into `buf`'s spare room; 0 at the end of the stream (over TLS, with or
/// without close_notify). Cancel-safe: a read not completed took nothing.
async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Result<usize, WsOutcome> {
    buf.reserve(READ_BYTES);
    match stream.read_buf(buf).await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        Err(_) => Err(WsOutcome::Io),
    }
}

/// Reads events until `until`, recording each `prices` event as a frame.
async fn read<S: AsyncRead + AsyncWrite + Unpin>(
    job: &WsJob,
    events: &mut EventStream<S>,
    asked: usize,
    upgrade_sent_ms: u64,
    until: Instant,
    books: &RefCell<Books>,
) -> Ended {
    let mut outcome = WsOutcome::Ok;
    let mut first = true;
    let facts = |first| StreamFacts { asked, upgrade_sent_ms, first };
    loop {
        loop {
            match events.parser.next(&mut events.buf) {
                Ok(Some(Item::Event { name, data })) => {
                    let kind = if name == "prices" {
                        record_frame(job, books, data.as_bytes(), facts(first))
                    } else {
                        Some(WsOutcome::BadFrame)
                    };
                    if let Some(kind) = kind {
                        outcome = first_failure(outcome, kind);
                    }
                    first = false;
                }
                Ok(Some(Item::Comment)) => {}
                Ok(None) => break,
                // A line past the bound, or not text: nothing more can be read of this stream.
                Err(_) => {
                    let outcome = first_failure(outcome, WsOutcome::BadFrame);
                    return Ended { outcome, by_server: false, stream: facts(first) };
                }
            }
        }
        let read = tokio::select! {
            read = read_more(&mut events.stream, &mut events.buf) => read,
            _ = tokio::time::sleep_until(until.into()) => return Ended { outcome, by_server: false, stream: facts(first) },
        };
        match read {
            Ok(n) if n > 0 => {}
            Ok(_) => {
                let outcome = first_failure(outcome, WsOutcome::ClosedByServer);
                return Ended { outcome, by_server: true, stream: facts(first) };
            }
            Err(kind) => return Ended { outcome: first_failure(outcome, kind), by_server: true, stream: facts(first) },
        }
    }
}

/// Ends the stream as its client: the connection's write side closed (over TLS, close_notify
/// first), then the events still on their way read until the server closes its side, so every
/// frame it counted pushed is counted received. Counted closed once the server's end arrives.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    job: &WsJob,
    mut events: EventStream<S>,
    ended: Ended,
    books: &RefCell<Books>,
) -> WsOutcome {
    if ended.by_server {
        return ended.outcome;
    }
    let closing = async {
        events.stream.shutdown().await.map_err(|_| WsOutcome::Io)?;
        loop {
            while let Ok(Some(item)) = events.parser.next(&mut events.buf) {
                if let Item::Event { name, data } = item {
                    if name == "prices" {
                        // Pushed before the server saw the end: received, so counted.
                        let _ = record_frame(job, books, data.as_bytes(), ended.stream);
                    }
                }
            }
            if read_more(&mut events.stream, &mut events.buf).await? == 0 {
                return Ok(true);
            }
            if events.buf.len() > WS_FRAME_BYTES_MAX {
                return Err(WsOutcome::BadFrame);
            }
        }
    };
    closed(job, books, ended.outcome, closing).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_200_event_stream_is_accepted() {
        let ok =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\nevent: prices\n";
        let (head, accepted) = head_of(ok).expect("valid").expect("whole");
        assert!(accepted);
        assert_eq!(&ok[head..], b"event: prices\n");
        assert_eq!(head_of(&ok[..20]), Ok(None));
        let refused = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(head_of(refused).expect("valid").map(|(_, accepted)| accepted), Some(false));
        let not_events = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n";
        assert_eq!(head_of(not_events).expect("valid").map(|(_, accepted)| accepted), Some(false));
        assert_eq!(head_of(b"garbage\r\n\r\n"), Err(WsOutcome::Io));
    }
}
