//! One connection's TLS handshake on a shard, driven through rustls's unbuffered API over the
//! shard's own socket and buffers. Ends with the connection's [`Session`] and what the client
//! already sent after its Finished (often the first request, in the same packet).

use std::io;
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};

use super::record::{self, RECORD_MAX};
use super::session::{Session, TlsError};

/// The most bytes of handshake a client may send before it is done (a ClientHello with large
/// post-quantum key shares is under 4 KiB).
pub const HANDSHAKE_BYTES_MAX: usize = 2 * RECORD_MAX;

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("a plain HTTP request on the HTTPS port")]
    PlainHttp,
    #[error("the client closed the connection")]
    Closed,
    #[error("the client sent more handshake than a handshake needs")]
    TooLong,
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Session(#[from] TlsError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A completed handshake.
pub struct Established {
    pub session: Session,
    /// The plaintext the client sent with or right after its Finished, then any part of a
    /// record after it: the connection's read buffer from here on.
    pub buf: Vec<u8>,
    pub plain_len: usize,
}

/// Runs the server side of a handshake on `stream`. `buf` (the connection's read buffer, empty)
/// takes the client's bytes and comes back in `Established`. No deadline of its own: the
/// caller bounds it. A handshake allocates (rustls's state, the server's flight); what follows
/// does not.
pub async fn accept(
    stream: &mut TcpStream,
    config: Arc<rustls::ServerConfig>,
    mut buf: Vec<u8>,
) -> Result<Established, HandshakeError> {
    let mut conn = UnbufferedServerConnection::new(config)?;
    // The server's flight: certificate chain, signature, tickets; rarely more than 4 KiB.
    let mut out = vec![0u8; 4096];
    let mut out_len = 0;
    // Application data rustls decrypted before the handshake was done (rare: a client that
    // sends its request right behind its Finished, read in the same call).
    let mut early_plain: Vec<u8> = Vec::new();
    let mut first_read = true;
    loop {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut buf);
        let state = match state {
            Ok(state) => state,
            Err(e) => {
                send_alert(stream, &mut conn).await;
                return Err(e.into());
            }
        };
        let mut read_more = false;
        let mut done = false;
        match state {
            ConnectionState::EncodeTlsData(mut encode) => loop {
                match encode.encode(&mut out[out_len..]) {
                    Ok(n) => {
                        out_len += n;
                        break;
                    }
                    Err(EncodeError::InsufficientSize(need)) => out.resize(out_len + need.required_size, 0),
                    Err(EncodeError::AlreadyEncoded) => break,
                }
            },
            ConnectionState::TransmitTlsData(transmit) => {
                let (result, back) = stream.write_all(std::mem::take(&mut out).slice(0..out_len)).await;
                out = back.into_inner();
                out_len = 0;
                result?;
                transmit.done();
            }
            ConnectionState::BlockedHandshake => read_more = true,
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    early_plain.extend_from_slice(record?.payload);
                }
            }
            ConnectionState::WriteTraffic(_) => done = true,
            ConnectionState::PeerClosed | ConnectionState::Closed => return Err(HandshakeError::Closed),
            _ => return Err(HandshakeError::Tls(rustls::Error::General("unexpected handshake state".into()))),
        }
        buf.drain(..discard);
        // A TLS 1.3 server may send before the client's Finished (0.5-RTT); the handshake is
        // done only when rustls says so.
        if done && conn.is_handshaking() {
            (done, read_more) = (false, true);
        }
        if done {
            break;
        }
        if read_more {
            if buf.len() >= HANDSHAKE_BYTES_MAX {
                return Err(HandshakeError::TooLong);
            }
            if buf.capacity() - buf.len() < 2048 {
                buf.reserve(RECORD_MAX);
            }
            let len = buf.len();
            let cap = buf.capacity();
            let (result, slice) = stream.read(buf.slice_mut(len..cap)).await;
            buf = slice.into_inner();
            match result {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            if first_read {
                first_read = false;
                // A TLS connection opens with a handshake record (22); a method opens plain HTTP.
                if buf.first().is_some_and(u8::is_ascii_uppercase) {
                    return Err(HandshakeError::PlainHttp);
                }
            }
        }
    }
    let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
    let session = Session::new(secrets, kernel)?;
    // The read buffer from here on: the early plaintext, then the ciphertext rustls left.
    let plain_len = early_plain.len();
    if plain_len > 0 {
        buf.splice(0..0, early_plain);
    }
    // Whatever is left must be part of a record, or the client is not speaking TLS.
    record::whole_record(&buf[plain_len..]).map_err(TlsError::from)?;
    Ok(Established { session, buf, plain_len })
}

/// Best effort: the alert rustls queued for a failed handshake, so the client learns why.
async fn send_alert(stream: &mut TcpStream, conn: &mut UnbufferedServerConnection) {
    let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut []);
    if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
        let mut alert = vec![0u8; 64];
        if let Ok(n) = encode.encode(&mut alert) {
            alert.truncate(n);
            let _ = stream.write_all(alert).await;
        }
    }
}
