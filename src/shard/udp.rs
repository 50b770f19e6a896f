//! A shard's UDP socket: wait until readable, take a batch of datagrams, answer each (or stay
//! silent), send the answers as one batch.

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use crate::counters::Counter;
use crate::shard::udp_batch::Batch;
use crate::shard::Local;
use crate::udp::handler;

pub(super) async fn serve(socket: monoio::net::udp::UdpSocket, local: Rc<Local>) {
    let fd = socket.as_raw_fd();
    // Room for the largest batch any profile asks for; each receive takes what the one in force
    // says.
    let mut batch = Batch::new(local.shared.tuning.udp_batch_capacity());
    loop {
        // Not relaxed: on epoll this re-checks with poll(2), so readiness consumed by our own
        // recvmmsg below is never mistaken for new data.
        if let Err(e) = socket.readable(false).await {
            tracing::warn!(shard = local.index, "UDP readiness failed: {e}");
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        loop {
            if local.shared.draining() {
                return;
            }
            let limit = local.shared.tuning.udp_batch_max();
            let received = match batch.receive(fd, limit) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here (ECONNREFUSED): nothing to do.
                    tracing::debug!(shard = local.index, "UDP receive: {e}");
                    break;
                }
            };
            local.counters().stream_add(crate::counters::StreamCounter::UdpBatches, 1);
            answer(&mut batch, received, &local);
            let sent = batch.send(fd) as u64;
            local.counters().add(Counter::UdpPacketsSent, sent);
            if received < limit {
                break;
            }
        }
    }
}

fn answer(batch: &mut Batch, received: usize, local: &Local) {
    local.with_context(|ctx, _| {
        for i in 0..received {
            let (datagram, reply) = batch.datagram(i);
            if let Some(len) = handler::respond(datagram, ctx, reply) {
                batch.queue_reply(i, len);
            }
        }
    });
}
