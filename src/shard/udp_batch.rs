//! Batched datagram I/O: one recvmmsg(2) takes up to `batch_max` datagrams and one sendmmsg(2)
//! answers them, over message arrays allocated once per shard and reused forever.

use std::io;
use std::os::fd::RawFd;

use crate::udp::codec::{REQUEST_BYTES_READ_MAX, RESPONSE_BYTES_MAX};

/// The arrays recvmmsg/sendmmsg read and write. Every pointer in the headers points into one of
/// the boxed slices below, which never move or resize, so the headers stay valid for the life of
/// the batch even when the `Batch` value itself moves.
pub struct Batch {
    datagrams: Box<[[u8; REQUEST_BYTES_READ_MAX]]>,
    peers: Box<[libc::sockaddr_storage]>,
    recv_iovecs: Box<[libc::iovec]>,
    recv_headers: Box<[libc::mmsghdr]>,
    replies: Box<[[u8; RESPONSE_BYTES_MAX]]>,
    send_iovecs: Box<[libc::iovec]>,
    send_headers: Box<[libc::mmsghdr]>,
    received: usize,
    queued: usize,
}

#[allow(unsafe_code)]
impl Batch {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
        // bytes are a valid value.
        let zeroed_peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zeroed_header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let empty_iovec = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        let mut batch = Self {
            datagrams: vec![[0u8; REQUEST_BYTES_READ_MAX]; capacity].into_boxed_slice(),
            peers: vec![zeroed_peer; capacity].into_boxed_slice(),
            recv_iovecs: vec![empty_iovec; capacity].into_boxed_slice(),
            recv_headers: vec![zeroed_header; capacity].into_boxed_slice(),
            replies: vec![[0u8; RESPONSE_BYTES_MAX]; capacity].into_boxed_slice(),
            send_iovecs: vec![empty_iovec; capacity].into_boxed_slice(),
            send_headers: vec![zeroed_header; capacity].into_boxed_slice(),
            received: 0,
            queued: 0,
        };
        for i in 0..capacity {
            batch.recv_iovecs[i] =
                libc::iovec { iov_base: batch.datagrams[i].as_mut_ptr().cast(), iov_len: REQUEST_BYTES_READ_MAX };
            let header = &mut batch.recv_headers[i].msg_hdr;
            header.msg_iov = &mut batch.recv_iovecs[i];
            header.msg_iovlen = 1;
            header.msg_name = (&mut batch.peers[i] as *mut libc::sockaddr_storage).cast();
            let header = &mut batch.send_headers[i].msg_hdr;
            header.msg_iov = &mut batch.send_iovecs[i];
            header.msg_iovlen = 1;
        }
        batch
    }

    /// Receives up to `limit` (at most `capacity`) datagrams without blocking. `WouldBlock` when
    /// none is waiting.
    pub fn receive(&mut self, fd: RawFd, limit: usize) -> io::Result<usize> {
        self.received = 0;
        self.queued = 0;
        let limit = limit.clamp(1, self.recv_headers.len());
        for header in self.recv_headers[..limit].iter_mut() {
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_len = 0;
        }
        // SAFETY: every header points at this batch's own iovec, datagram buffer and peer slot,
        // all alive and unaliased for the call; the count passed is at most the array's length.
        let count = unsafe {
            libc::recvmmsg(
                fd,
                self.recv_headers.as_mut_ptr(),
                limit as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if count < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = count as usize;
        Ok(self.received)
    }

    /// Datagram `i` of the last receive, and a reply slot to answer it in.
    pub fn datagram(&mut self, i: usize) -> (&[u8], &mut [u8; RESPONSE_BYTES_MAX]) {
        let len = (self.recv_headers[i].msg_len as usize).min(REQUEST_BYTES_READ_MAX);
        (&self.datagrams[i][..len], &mut self.replies[self.queued])
    }

    /// Queues the reply just written into the slot that [`Batch::datagram`] gave for datagram `i`,
    /// addressed to that datagram's sender.
    pub fn queue_reply(&mut self, i: usize, len: usize) {
        let slot = self.queued;
        self.send_iovecs[slot] = libc::iovec { iov_base: self.replies[slot].as_mut_ptr().cast(), iov_len: len };
        let header = &mut self.send_headers[slot].msg_hdr;
        header.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
        header.msg_namelen = self.recv_headers[i].msg_hdr.msg_namelen;
        self.queued += 1;
    }

    /// Sends every queued reply without blocking; returns how many went out. Replies the socket
    /// has no room for are dropped, as the kernel would drop them anyway.
    pub fn send(&mut self, fd: RawFd) -> usize {
        let mut sent = 0;
        while sent < self.queued {
            // SAFETY: headers [sent, queued) point at this batch's reply buffers and peer slots,
            // set by `queue_reply` after the last receive; the count stays within the array.
            let count = unsafe {
                libc::sendmmsg(
                    fd,
                    self.send_headers[sent..].as_mut_ptr(),
                    (self.queued - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if count <= 0 {
                break;
            }
            sent += count as usize;
        }
        self.queued = 0;
        sent
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests wait on real threads and sockets.
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_receive_takes_no_more_than_its_limit() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        for i in 0..5u8 {
            client.send_to(&[i; 4], server.local_addr().expect("addr")).expect("send");
        }
        let mut batch = Batch::new(8);
        let mut takes = Vec::new();
        for _ in 0..100 {
            match batch.receive(server.as_raw_fd(), 2) {
                Ok(n) => takes.push(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("receive failed: {e}"),
            }
            if takes.iter().sum::<usize>() == 5 {
                break;
            }
        }
        assert_eq!(takes.iter().sum::<usize>(), 5);
        assert!(takes.iter().all(|&n| n <= 2), "{takes:?}");
        // A limit past the capacity is the capacity.
        assert!(matches!(batch.receive(server.as_raw_fd(), 100), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
    }

    #[test]
    fn receives_a_batch_and_answers_each_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let clients: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
        for (i, client) in clients.iter().enumerate() {
            client.send_to(&[i as u8; 10], server.local_addr().expect("addr")).expect("send");
        }
        let mut batch = Batch::new(8);
        let mut got = 0;
        for _ in 0..100 {
            match batch.receive(server.as_raw_fd(), 8) {
                Ok(n) => {
                    for i in 0..n {
                        let (datagram, reply) = batch.datagram(i);
                        let first = datagram[0];
                        reply[0] = first + 100;
                        batch.queue_reply(i, 1);
                    }
                    got += n;
                    assert_eq!(batch.send(server.as_raw_fd()), n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("receive failed: {e}"),
            }
            if got == 3 {
                break;
            }
        }
        assert_eq!(got, 3);
        for (i, client) in clients.iter().enumerate() {
            let mut answer = [0u8; 4];
            client.set_read_timeout(Some(std::time::Duration::from_secs(2))).expect("timeout");
            let n = client.recv(&mut answer).expect("answer");
            assert_eq!(&answer[..n], &[i as u8 + 100]);
        }
    }
}
