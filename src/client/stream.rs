//! A small blocking streaming client, `ws://` or `wss://`, or server-sent events over HTTP(S):
//! create a session, open the stream, hand each frame's JSON to the caller. For `pricebeast query
//! --stream` / `--sse` and manual checks.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tungstenite::Message;

use crate::client::events::{self, EventParser, Item};
use crate::client::http;
use crate::client::tls::TlsClient;

/// The longest event line read (a frame of 100 prices is about 10 KiB).
const EVENT_LINE_BYTES_MAX: usize = 1 << 20;
/// The longest answer head read before the events.
const HEAD_BYTES_MAX: usize = 16 * 1024;

/// Creates a session for `symbols` with `key` at `addr` (`host:port`; HTTPS and `wss://` when
/// `tls` is given) and streams it, calling `on_frame` with each text frame until it returns false
/// or the server closes.
pub fn stream(
    addr: &str,
    tls: Option<&TlsClient>,
    key: &str,
    symbols: &[String],
    timeout: Duration,
    mut on_frame: impl FnMut(&str) -> bool,
) -> anyhow::Result<()> {
    let (id, socket) = session_and_connection(addr, tls, key, symbols, timeout)?;
    let url = format!("{}://{addr}/v1/stream?session_id={id}", if tls.is_some() { "wss" } else { "ws" });
    let (mut ws, _) = tungstenite::client::client(url.as_str(), socket).map_err(|e| anyhow::anyhow!("upgrade: {e}"))?;
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                if !on_frame(text.as_str()) {
                    let _ = ws.close(None);
                    let _ = ws.flush();
                    return Ok(());
                }
            }
            Ok(Message::Close(frame)) => {
                let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                bail!("the server closed the stream {why}");
            }
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => return Ok(()),
            Err(e) => return Err(e).context("reading the stream"),
        }
    }
}

/// Like [`stream`], over server-sent events: `GET /v1/stream` with `Accept: text/event-stream`,
/// `on_frame` called with each `prices` event's data (the same JSON as a WebSocket frame) until
/// it returns false or the server ends the stream. Comments (`: ping`) are skipped.
pub fn events(
    addr: &str,
    tls: Option<&TlsClient>,
    key: &str,
    symbols: &[String],
    timeout: Duration,
    mut on_frame: impl FnMut(&str) -> bool,
) -> anyhow::Result<()> {
    let (id, mut socket) = session_and_connection(addr, tls, key, symbols, timeout)?;
    socket.write_all(events::request(addr, &id).as_bytes()).context("sending the stream request")?;
    socket.flush()?;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let head = loop {
        if let Some(head) = events::head(&buf).context("the answer's head")? {
            break head;
        }
        if buf.len() > HEAD_BYTES_MAX {
            bail!("the answer's head is over {HEAD_BYTES_MAX} bytes");
        }
        let n = read_some(&mut socket, &mut chunk)?;
        if n == 0 {
            bail!("the server closed the connection before answering");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if !head.accepted() {
        // An error body is small and sized; what came with the head is enough to show it.
        let body = String::from_utf8_lossy(&buf[head.len..]).into_owned();
        bail!("GET /v1/stream: HTTP {}: {body}", head.status);
    }
    buf.drain(..head.len);
    let mut parser = EventParser::new(EVENT_LINE_BYTES_MAX);
    loop {
        while let Some(item) = parser.next(&mut buf).context("reading the event stream")? {
            match item {
                Item::Event { name, data } if name == "prices" => {
                    if !on_frame(&data) {
                        return Ok(());
                    }
                }
                Item::Event { name, .. } => bail!("an event of an unknown type {name:?}"),
                Item::Comment => {}
            }
        }
        match read_some(&mut socket, &mut chunk)? {
            0 => bail!("the server ended the event stream"),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads what has come; 0 at the end of the stream (over TLS, with or without close_notify).
fn read_some(socket: &mut http::Stream, chunk: &mut [u8]) -> anyhow::Result<usize> {
    match socket.read(chunk) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(e).context("reading the stream"),
    }
}

/// `POST /v1/sessions` for `symbols`, then a new connection to redeem the session on (as a
/// browser opens one), its reads allowed to wait out a quiet stream between frames.
fn session_and_connection(
    addr: &str,
    tls: Option<&TlsClient>,
    key: &str,
    symbols: &[String],
    timeout: Duration,
) -> anyhow::Result<(String, http::Stream)> {
    let body = serde_json::json!({ "symbols": symbols }).to_string();
    let headers = [("X-API-Key", key), ("Content-Type", "application/json")];
    let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
    let created = http::request_over(addr, tls, "POST", "/v1/sessions", &headers, body.as_bytes(), timeout)
        .with_context(|| format!("{scheme} {addr}"))?;
    if created.status != 200 {
        bail!("POST /v1/sessions: HTTP {}: {}", created.status, created.text());
    }
    let session: serde_json::Value = serde_json::from_slice(&created.body).context("session response")?;
    let Some(id) = session["session_id"].as_str() else { bail!("no session_id in {session}") };
    let socket = http::connect(addr, tls, timeout).with_context(|| format!("connecting to {addr}"))?;
    socket.tcp().set_read_timeout(Some(timeout.max(Duration::from_secs(30))))?;
    Ok((id.to_owned(), socket))
}
