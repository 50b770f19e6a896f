//! The shards' sockets: one SO_REUSEPORT TCP listener and one UDP socket per shard, all bound to
//! the same address so the kernel spreads connections and datagrams across shards.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Every shard's sockets, and the addresses they are bound to (port 0 resolved).
pub struct Bound {
    pub http: Vec<TcpListener>,
    pub udp: Vec<UdpSocket>,
    pub http_addr: SocketAddr,
    pub udp_addr: SocketAddr,
}

/// Binds `shards` listeners and UDP sockets. Port 0 is resolved by the first bind and reused by the
/// rest, so a test's port-0 server still has one address.
pub fn bind(
    http: SocketAddr,
    udp: SocketAddr,
    shards: usize,
    backlog: u32,
    udp_buffer_bytes: usize,
) -> io::Result<Bound> {
    ensure_free(http, Type::STREAM, "HTTP")?;
    ensure_free(udp, Type::DGRAM, "UDP")?;
    let mut bound = Bound { http: Vec::new(), udp: Vec::new(), http_addr: http, udp_addr: udp };
    for _ in 0..shards {
        let listener = tcp_listener(bound.http_addr, backlog)
            .map_err(|e| io::Error::new(e.kind(), format!("binding HTTP {}: {e}", bound.http_addr)))?;
        bound.http_addr = listener.local_addr()?;
        bound.http.push(listener);
        let socket = udp_socket(bound.udp_addr, udp_buffer_bytes)
            .map_err(|e| io::Error::new(e.kind(), format!("binding UDP {}: {e}", bound.udp_addr)))?;
        bound.udp_addr = socket.local_addr()?;
        bound.udp.push(socket);
    }
    Ok(bound)
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
        let first =
            bind("127.0.0.1:0".parse().expect("literal"), "127.0.0.1:0".parse().expect("literal"), 1, 16, 1 << 16)
                .expect("first server");
        let taken = first.http_addr;
        let udp: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let error = bind(taken, udp, 1, 16, 1 << 16).err().expect("refused");
        assert!(error.to_string().contains("is taken"), "{error}");

        let taken_udp = first.udp_addr;
        let http: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        assert!(bind(http, taken_udp, 1, 16, 1 << 16).is_err());
    }

    #[test]
    fn our_own_shards_share_a_fixed_port() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let udp: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let bound = bind(free, udp, 2, 16, 1 << 16).expect("two shards on one port");
        assert_eq!(bound.http.len(), 2);
        assert_eq!(bound.http_addr, free);
    }
}
