//! A blocking client of the partner UDP protocol: one query, one answer matched by request id.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use crate::book::Decimal;
use crate::udp::codec::{self, UdpStatus};

/// One answer, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceAnswer {
    pub request_id: u32,
    pub status: UdpStatus,
    pub price: Decimal,
    pub sources: u8,
    pub ts_ms: u64,
    pub symbol: String,
}

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum UdpQueryError {
    #[error("key must be 16 to 64 bytes and symbol 1 to 32 bytes")]
    Invalid,
    #[error("no answer within {0:?} (the server stays silent for an unknown key or a malformed datagram)")]
    Timeout(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A UDP socket connected to one server.
pub struct UdpClient {
    socket: UdpSocket,
    next_id: u32,
}

impl UdpClient {
    pub fn connect(server: impl ToSocketAddrs) -> io::Result<Self> {
        let server: SocketAddr = server
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        let local: SocketAddr =
            if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(io::Error::other)?;
        let socket = UdpSocket::bind(local)?;
        socket.connect(server)?;
        Ok(Self { socket, next_id: std::process::id() })
    }

    /// Sends one query and waits up to `timeout` for its answer (answers to other ids are skipped).
    pub fn query(&mut self, key: &[u8], symbol: &[u8], timeout: Duration) -> Result<PriceAnswer, UdpQueryError> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let mut datagram = [0u8; 128];
        let len = codec::encode_request(id, key, symbol, &mut datagram).ok_or(UdpQueryError::Invalid)?;
        self.socket.send(&datagram[..len])?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(UdpQueryError::Timeout(timeout));
            }
            self.socket.set_read_timeout(Some(left))?;
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(UdpQueryError::Timeout(timeout))
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(r) = codec::decode_response(&buf[..n]).filter(|r| r.request_id == id) {
                return Ok(PriceAnswer {
                    request_id: r.request_id,
                    status: r.status,
                    price: r.price,
                    sources: r.sources,
                    ts_ms: r.ts_ms,
                    symbol: String::from_utf8_lossy(r.symbol).into_owned(),
                });
            }
        }
    }
}
