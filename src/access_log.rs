//! The access log (`log.access`): one line per HTTP request, written by a thread of its own so a
//! shard never formats text or waits on a file. A shard hands over a fixed-size [`Record`] through
//! a bounded queue; when the writer falls behind, the line is dropped and counted, never queued
//! without bound and never waited for.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;

use crate::config::{LogConfig, LogFormat};
use crate::counters::Counters;
use crate::faults::Component;
use crate::http::request::Method;

/// Bytes of the request target a line keeps: a price query fits; a batch of 100 symbols is cut
/// (and marked so) rather than making every record as large as a head.
pub const TARGET_BYTES: usize = 160;
/// Bytes of the key's name a line keeps.
pub const KEY_NAME_BYTES: usize = 32;

/// One request, as a shard saw it. Plain bytes, so handing it over allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    pub unix_ms: u64,
    pub peer: Option<SocketAddr>,
    /// `None`: the request could not be read (a 400, 408, 413 or 431 before a request line).
    pub method: Option<Method>,
    pub status: u16,
    /// Response bytes, head and body.
    pub bytes: u32,
    target: [u8; TARGET_BYTES],
    target_len: u16,
    /// The target was longer than [`TARGET_BYTES`].
    target_cut: bool,
    key: KeyName,
}

/// The name of the key a request was authenticated with, if any.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyName {
    bytes: [u8; KEY_NAME_BYTES],
    len: u8,
}

impl KeyName {
    pub fn set(&mut self, name: &str) {
        let len = name.len().min(KEY_NAME_BYTES);
        self.bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        self.len = len as u8;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Record {
    pub fn new(unix_ms: u64, peer: Option<SocketAddr>, method: Option<Method>, target: &[u8]) -> Self {
        let len = target.len().min(TARGET_BYTES);
        let mut kept = [0; TARGET_BYTES];
        kept[..len].copy_from_slice(&target[..len]);
        Self {
            unix_ms,
            peer,
            method,
            status: 0,
            bytes: 0,
            target: kept,
            target_len: len as u16,
            target_cut: target.len() > TARGET_BYTES,
            key: KeyName::default(),
        }
    }

    pub fn answered(mut self, status: u16, bytes: usize) -> Self {
        self.status = status;
        self.bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self
    }

    pub fn with_key(mut self, key: KeyName) -> Self {
        self.key = key;
        self
    }

    fn target(&self) -> &[u8] {
        &self.target[..usize::from(self.target_len)]
    }
}

/// The shards' end of the queue.
pub struct AccessLog {
    queue: SyncSender<Record>,
    /// Where a dropped line is counted (`pricebeast_errors_total{component="access_log"}`).
    counters: Arc<Counters>,
}

impl AccessLog {
    /// Opens the destination and starts the writer; `None` when `log.access` is off.
    pub fn start(config: &LogConfig, counters: Arc<Counters>) -> io::Result<Option<AccessLog>> {
        let out: Box<dyn Write + Send> = match config.access.as_str() {
            "" => return Ok(None),
            "stderr" => Box::new(io::stderr()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("log.access {path}: {e}")))?,
            ),
        };
        // A bounded array queue: `try_send` takes a slot without allocating, or fails when full.
        let (queue, records) = mpsc::sync_channel(config.access_queue);
        let format = config.format;
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&records, io::BufWriter::new(out), format))?;
        Ok(Some(AccessLog { queue, counters }))
    }

    /// Hands a record to the writer, or counts it dropped when the queue is full.
    pub fn submit(&self, record: Record) {
        if self.queue.try_send(record).is_err() {
            self.counters.faults().count(Component::AccessLog);
        }
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.counters.faults().get(Component::AccessLog)
    }
}

/// The writer: a line per record, flushed whenever the queue runs empty, so a quiet server's
/// lines are never held back and a busy one's are written in large blocks.
fn write_lines(records: &Receiver<Record>, mut out: impl Write, format: LogFormat) {
    let mut line = Vec::with_capacity(512);
    while let Ok(first) = records.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            line.clear();
            format_line(&record, format, &mut line);
            if out.write_all(&line).is_err() {
                // The destination is gone (a full disk, a closed pipe): nothing to tell it.
                return;
            }
            next = match records.try_recv() {
                Ok(record) => Some(record),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            };
        }
        if out.flush().is_err() {
            return;
        }
    }
    let _ = out.flush();
}

/// One line: `text` reads like a web server's access log, `json` is one object a log shipper
/// can index. A query that carries a key (refused, but sent) is not written out.
pub fn format_line(record: &Record, format: LogFormat, line: &mut Vec<u8>) {
    let time = crate::clock::rfc3339_ms(record.unix_ms);
    let peer = record.peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
    let method = match record.method {
        Some(Method::Get) => "GET",
        Some(Method::Head) => "HEAD",
        Some(Method::Post) => "POST",
        Some(Method::Options) => "OPTIONS",
        Some(Method::Other) => "OTHER",
        None => "-",
    };
    let target = shown_target(record);
    let key = String::from_utf8_lossy(record.key.as_bytes());
    match format {
        LogFormat::Text => {
            let key = if key.is_empty() { "-".into() } else { key };
            let _ = writeln!(line, "{time} {peer} {method} {target} {} {} key={key}", record.status, record.bytes);
        }
        LogFormat::Json => {
            let doc = serde_json::json!({
                "timestamp": time,
                "type": "access",
                "peer": peer,
                "method": method,
                "target": target,
                "status": record.status,
                "bytes": record.bytes,
                "key": if key.is_empty() { serde_json::Value::Null } else { key.into() },
            });
            let _ = serde_json::to_writer(&mut *line, &doc);
            line.push(b'\n');
        }
    }
}

/// The target as written: printable ASCII only (other bytes as `\xNN`), a query carrying a key
/// replaced, a cut one marked with `...`.
fn shown_target(record: &Record) -> String {
    let target = record.target();
    if target.is_empty() {
        return "-".into();
    }
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(at) => (&target[..at], Some(&target[at + 1..])),
        None => (target, None),
    };
    let mut shown = String::with_capacity(target.len() + 8);
    push_printable(&mut shown, path);
    match query {
        Some(query) if crate::http::route::carries_key(query) => shown.push_str("?[query with a key, not logged]"),
        Some(query) => {
            shown.push('?');
            push_printable(&mut shown, query);
        }
        None => {}
    }
    if record.target_cut {
        shown.push_str("...");
    }
    shown
}

fn push_printable(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: &[u8]) -> Record {
        let mut key = KeyName::default();
        key.set("alice");
        Record::new(1_795_413_600_123, Some("127.0.0.1:5000".parse().expect("literal")), Some(Method::Get), target)
            .answered(200, 312)
            .with_key(key)
    }

    fn text(record: &Record, format: LogFormat) -> String {
        let mut line = Vec::new();
        format_line(record, format, &mut line);
        String::from_utf8(line).expect("utf-8")
    }

    #[test]
    fn a_text_line_and_a_json_line() {
        let r = record(b"/v1/price?symbol=BTC-USD");
        assert_eq!(
            text(&r, LogFormat::Text),
            "2026-11-23T06:00:00.123Z 127.0.0.1:5000 GET /v1/price?symbol=BTC-USD 200 312 key=alice\n"
        );
        let doc: serde_json::Value = serde_json::from_str(&text(&r, LogFormat::Json)).expect("one JSON object");
        assert_eq!(doc["target"], "/v1/price?symbol=BTC-USD");
        assert_eq!((doc["status"].as_u64(), doc["key"].as_str()), (Some(200), Some("alice")));
    }

    #[test]
    fn keys_control_bytes_and_long_targets_are_not_written_as_sent() {
        assert!(text(&record(b"/v1/price?symbol=X&api_key=pb_secret"), LogFormat::Text).contains("/v1/price?[query"));
        assert!(!text(&record(b"/v1/price?symbol=X&api_key=pb_secret"), LogFormat::Json).contains("pb_secret"));
        assert!(text(&record(b"/a\x1b[31m b"), LogFormat::Text).contains("/a\\x1b[31m\\x20b"));
        let long = [b'a'; TARGET_BYTES + 10];
        assert!(text(&record(&long), LogFormat::Text).contains("aaa... 200"));
        let unread = Record::new(0, None, None, b"").answered(400, 90);
        assert!(text(&unread, LogFormat::Text).ends_with(" - - - 400 90 key=-\n"));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (queue, records) = mpsc::sync_channel(2);
        let log = AccessLog { queue, counters: Arc::new(Counters::new(1)) };
        for _ in 0..5 {
            log.submit(record(b"/health"));
        }
        assert_eq!(log.dropped(), 3);
        drop(log);
        let mut out = Vec::new();
        write_lines(&records, &mut out, LogFormat::Text);
        assert_eq!(String::from_utf8(out).expect("utf-8").lines().count(), 2, "what was queued is written");
    }
}
