//! The shards' sockets: one SO_REUSEPORT TCP listener and one UDP socket per shard, all bound to
//! the same address so the kernel spreads connections and datagrams across shards.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// One shard's sockets: a TCP listener for each of plain HTTP and HTTPS that is on, and its UDP
/// socket.
pub struct ShardSockets {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
    pub udp: UdpSocket,
}

/// Every shard's sockets, and the addresses they are bound to (port 0 resolved).
pub struct Bound {
    pub shards: Vec<ShardSockets>,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub udp_addr: SocketAddr,
}

/// The addresses to bind: `None` leaves that listener off.
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub udp: SocketAddr,
}

/// Binds `shards` sets of sockets. Port 0 is resolved by the first bind and reused by the rest,
/// so a test's port-0 server still has one address per listener.
pub fn bind(listen: Listen, shards: usize, backlog: u32, udp_buffer_bytes: usize) -> io::Result<Bound> {
    for (addr, what) in [(listen.http, "HTTP"), (listen.https, "HTTPS")] {
        if let Some(addr) = addr {
            ensure_free(addr, Type::STREAM, what)?;
        }
    }
    ensure_free(listen.udp, Type::DGRAM, "UDP")?;
    let mut bound =
        Bound { shards: Vec::new(), http_addr: listen.http, https_addr: listen.https, udp_addr: listen.udp };
    for _ in 0..shards {
        let http = bind_tcp(&mut bound.http_addr, backlog, "HTTP")?;
        let https = bind_tcp(&mut bound.https_addr, backlog, "HTTPS")?;
        let udp = udp_socket(bound.udp_addr, udp_buffer_bytes)
            .map_err(|e| io::Error::new(e.kind(), format!("binding UDP {}: {e}", bound.udp_addr)))?;
        bound.udp_addr = udp.local_addr()?;
        bound.shards.push(ShardSockets { http, https, udp });
    }
    Ok(bound)
}

/// One shard's listener on `addr` when it is on; `addr` becomes the bound address.
fn bind_tcp(addr: &mut Option<SocketAddr>, backlog: u32, what: &str) -> io::Result<Option<TcpListener>> {
    let Some(at) = *addr else { return Ok(None) };
    let listener =
        tcp_listener(at, backlog).map_err(|e| io::Error::new(e.kind(), format!("binding {what} {at}: {e}")))?;
    *addr = Some(listener.local_addr()?);
    Ok(Some(listener))
}

/// Refuses a fixed port that another socket holds. SO_REUSEPORT would otherwise let a second
/// server (or a second copy of this one) join the port silently and take a share of its traffic;
/// a plain bind, without SO_REUSEPORT, fails while anyone else has it. Port 0 is always free.
fn ensure_free(addr: SocketAddr, kind: Type, what: &str) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let taken = |e: io::Error| {
        let hint = if e.kind() == io::ErrorKind::AddrInUse { " (is another server running on it?)" } else { "" };
        io::Error::new(e.kind(), format!("{what} address {addr} is taken{hint}: {e}"))
    };
    let probe = Socket::new(Domain::for_address(addr), kind, None)?;
    if kind == Type::STREAM {
        // With SO_REUSEADDR, TIME_WAIT leftovers of an earlier run do not count as a holder; a
        // bind may still sit beside another listener, so only listen(2) proves the port free.
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into()).map_err(taken)?;
        probe.listen(1).map_err(taken)
    } else {
        probe.bind(&addr.into()).map_err(taken)
    }
}

fn tcp_listener(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

fn udp_socket(addr: SocketAddr, buffer_bytes: usize) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // The kernel caps these at net.core.{r,w}mem_max; a smaller buffer only costs drops under bursts.
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Wakes every shard blocked on these sockets: accept fails and receive returns, so the shards
/// see that the server is draining. The sockets stay open (their owners close them).
pub fn shut_down_read(http: &[TcpListener], udp: &[UdpSocket]) {
    for listener in http {
        let _ = SockRef::from(listener).shutdown(std::net::Shutdown::Both);
    }
    for socket in udp {
        // An unconnected UDP socket reports ENOTCONN but still marks itself shut and wakes readers.
        let _ = SockRef::from(socket).shutdown(std::net::Shutdown::Read);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_another_server_holds_is_refused() {
        // Another pricebeast: SO_REUSEPORT listeners, which a second SO_REUSEPORT bind could join.
        let any: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let first = bind(Listen { http: Some(any), https: Some(any), udp: any }, 1, 16, 1 << 16).expect("first server");
        let taken = first.http_addr;
        let error = bind(Listen { http: taken, https: None, udp: any }, 1, 16, 1 << 16).err().expect("refused");
        assert!(error.to_string().contains("HTTP address") && error.to_string().contains("is taken"), "{error}");
        let error =
            bind(Listen { http: None, https: first.https_addr, udp: any }, 1, 16, 1 << 16).err().expect("refused");
        assert!(error.to_string().contains("HTTPS address"), "{error}");

        let taken_udp = first.udp_addr;
        assert!(bind(Listen { http: Some(any), https: None, udp: taken_udp }, 1, 16, 1 << 16).is_err());
    }

    #[test]
    fn our_own_shards_share_a_fixed_port() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let udp: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let bound =
            bind(Listen { http: Some(free), https: None, udp }, 2, 16, 1 << 16).expect("two shards on one port");
        assert_eq!(bound.shards.len(), 2);
        assert!(bound.shards.iter().all(|s| s.http.is_some() && s.https.is_none()));
        assert_eq!(bound.http_addr, Some(free));
    }
}
