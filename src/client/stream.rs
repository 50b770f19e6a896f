//! A small blocking streaming client, `ws://` or `wss://`: create a session, open the stream, hand
//! each frame's JSON to the caller. For `pricebeast query --stream` and manual checks.

use std::time::Duration;

use anyhow::{bail, Context as _};
use tungstenite::Message;

use crate::client::http;
use crate::client::tls::TlsClient;

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
