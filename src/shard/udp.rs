//! A shard's UDP socket: receive a datagram, answer it (or stay silent), send the answer.

use std::rc::Rc;

use crate::clock::Now;
use crate::http::handler::Context;
use crate::shard::Local;
use crate::udp::codec::{REQUEST_BYTES_READ_MAX, RESPONSE_BYTES_MAX};
use crate::udp::handler;

pub(super) async fn serve(socket: monoio::net::udp::UdpSocket, local: Rc<Local>) {
    let mut inbox = Vec::with_capacity(REQUEST_BYTES_READ_MAX);
    let mut reply = [0u8; RESPONSE_BYTES_MAX];
    let mut outbox = Vec::with_capacity(RESPONSE_BYTES_MAX);
    loop {
        let (result, buf) = socket.recv_from(inbox).await;
        inbox = buf;
        if local.shared.draining() {
            return;
        }
        let Ok((len, peer)) = result else { continue };
        let now = Now::read();
        let answer = {
            local.second.borrow_mut().refresh(now);
            let second = local.second.borrow();
            let ctx = Context { shared: &local.shared, counters: local.counters(), second: &second, now };
            handler::respond(&inbox[..len], &ctx, &mut reply)
        };
        if let Some(answer_len) = answer {
            outbox.clear();
            outbox.extend_from_slice(&reply[..answer_len]);
            let (_, buf) = socket.send_to(outbox, peer).await;
            outbox = buf;
        }
    }
}
