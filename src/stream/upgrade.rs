//! Whether a request to open a stream is accepted: for a WebSocket the handshake checked, then for
//! either framing the session redeemed and the shard's and the key's stream limits applied. The
//! answer is a grant, or a refusal that the HTTP path turns into a status on the still-HTTP
//! connection.

use crate::config::StreamConfig;
use crate::counters::Gauge;
use crate::keys::{KeyEntry, Tier};
use crate::state::Context;
use crate::stream::frames::Framing;
use crate::stream::grant::{Grant, KeySlot};
use crate::stream::handshake::{self, Upgrade};
use crate::stream::sessions::{RedeemError, SESSION_ID_CHARS};

/// Why a stream was not opened. Each maps to one HTTP status (`http::handler`), the same for
/// both framings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The handshake headers are not an acceptable WebSocket upgrade (426 or 400).
    Handshake(handshake::Refusal),
    /// `session_id` missing, empty or longer than any id (400).
    SessionIdMalformed,
    /// The shard holds `streams_per_shard_max`, or the node is draining (503). Checked before
    /// the session is spent, so the client may retry with it.
    Overloaded,
    /// No pending session with that id: never made, already used (401).
    SessionUnknown,
    /// The session's time to live passed (401).
    SessionExpired,
    /// The session's key was revoked after the session was made (401).
    KeyRevoked,
    /// The key holds its maximum of open streams (429).
    KeyStreamsFull,
}

/// Checks an upgrade to `GET /v1/stream?session_id=` and redeems its session. On success the
/// grant carries the stream's symbols and the key's stream slot, and the client's handshake key
/// is returned for the 101.
pub fn accept<'r>(
    session_id: Option<&[u8]>,
    headers: &Upgrade<'r>,
    ctx: &Context<'_>,
) -> Result<(Grant, &'r [u8]), Refusal> {
    let client_key = handshake::check(headers).map_err(Refusal::Handshake)?;
    Ok((redeem(session_id, Framing::WebSocket, ctx)?, client_key))
}

/// Accepts `GET /v1/stream?session_id=` with `Accept: text/event-stream`: the same session and
/// limits as an upgrade, with no handshake to check.
pub fn accept_events(session_id: Option<&[u8]>, ctx: &Context<'_>) -> Result<Grant, Refusal> {
    redeem(session_id, Framing::EventStream, ctx)
}

/// Redeems the session named by `session_id` for a stream in `framing`, once the shard and the
/// key have room for it.
fn redeem(session_id: Option<&[u8]>, framing: Framing, ctx: &Context<'_>) -> Result<Grant, Refusal> {
    let id = session_id.filter(|v| !v.is_empty() && v.len() <= SESSION_ID_CHARS).ok_or(Refusal::SessionIdMalformed)?;
    let config = &ctx.shared.config.stream;
    if ctx.shared.draining() || ctx.counters.gauge(Gauge::OpenStreams) >= config.streams_per_shard_max as i64 {
        return Err(Refusal::Overloaded);
    }
    let session = ctx.shared.sessions.redeem(id, ctx.now.unix_ms, ctx.counters).map_err(|e| match e {
        RedeemError::Unknown => Refusal::SessionUnknown,
        RedeemError::Expired => Refusal::SessionExpired,
    })?;
    let table = ctx.shared.keys.table();
    let entry = table.entry(&session.key).filter(|e| !e.revoked).ok_or(Refusal::KeyRevoked)?;
    let slot = KeySlot::take(&entry.state, streams_per_key(entry, config)).ok_or(Refusal::KeyStreamsFull)?;
    Ok(Grant { session: Box::new(session), slot, framing })
}

/// The streams one key may hold open across the node.
pub fn streams_per_key(key: &KeyEntry, config: &StreamConfig) -> u32 {
    match key.tier {
        Tier::Public => config.public_streams_per_key_max,
        Tier::Partner => config.partner_streams_per_key_max,
    }
}
