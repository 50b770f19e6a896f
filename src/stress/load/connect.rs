//! How the load loops reach the server: plain TCP, or TLS over it (`--target https://`). The
//! loops are generic over [`Connect`], so a plain run compiles to the same code it always did,
//! with no TLS state, branch or box per connection or request; a TLS run pays rustls's costs and
//! nothing more.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::client::tls::TlsClient;

/// Where a plan's load goes.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `https://`: the TLS every connection speaks.
    pub tls: Option<Tls>,
}

impl Target {
    pub fn plain(addr: SocketAddr) -> Self {
        Self { addr, tls: None }
    }
}

/// `https://ADDR` over TLS, `ADDR` plain (as the report always showed it).
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tls {
            Some(_) => write!(f, "https://{}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// A connection's way to the server, and the stream it gets.
pub trait Connect {
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;
    /// `ws` or `wss`, for the upgrade's URL.
    const WS_SCHEME: &'static str;

    /// A new connection to `addr` ready for requests (over TLS: handshake done), or `None` when
    /// the connect or the handshake failed or took longer than `timeout` (both are the
    /// connection's failure, counted as a connect error).
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> impl Future<Output = Option<Self::Stream>>;
}

/// Plain TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl Connect for Plain {
    type Stream = TcpStream;
    const WS_SCHEME: &'static str = "ws";

    async fn connect(&self, addr: SocketAddr, timeout: Duration) -> Option<TcpStream> {
        tcp(addr, timeout).await
    }
}

/// TLS over TCP, with a configuration made once for the run.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    client: TlsClient,
}

impl Tls {
    pub fn new(client: TlsClient) -> Self {
        Self { connector: TlsConnector::from(Arc::clone(&client.config)), client }
    }

    /// The configuration and server name, for a blocking client to the same server.
    pub fn client(&self) -> &TlsClient {
        &self.client
    }
}

impl Connect for Tls {
    type Stream = TlsStream<TcpStream>;
    const WS_SCHEME: &'static str = "wss";

    async fn connect(&self, addr: SocketAddr, timeout: Duration) -> Option<TlsStream<TcpStream>> {
        // One deadline for both steps: a handshake is part of opening the connection.
        let open = async {
            let stream = tcp(addr, timeout).await?;
            self.connector.connect(self.client.server_name.clone(), stream).await.ok()
        };
        tokio::time::timeout(timeout, open).await.ok().flatten()
    }
}

async fn tcp(addr: SocketAddr, timeout: Duration) -> Option<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            // Requests are small and latency is what we measure: no Nagle delay.
            let _ = stream.set_nodelay(true);
            Some(stream)
        }
        Ok(Err(_)) | Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_shows_its_protocol() {
        let addr: SocketAddr = "127.0.0.1:8443".parse().expect("an address");
        assert_eq!(Target::plain(addr).to_string(), "127.0.0.1:8443");
        let options = crate::client::tls::TlsOptions::new(crate::client::tls::Trust::DangerAcceptInvalidCerts);
        let client = TlsClient::new(&options, "127.0.0.1:8443").expect("a client");
        let tls = Target { addr, tls: Some(Tls::new(client)) };
        assert_eq!(tls.to_string(), "https://127.0.0.1:8443");
    }
}
