//! The UDP load loop: one socket per worker, open loop only. Each request's slot in a fixed ring
//! (indexed by request number) holds its intended send time until its answer, matched by
//! request id, comes back; a request with no answer within the timeout is lost.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::stress::load::{wait_start, Job};
use crate::stress::measure::{Outcome, Recorder, LATE_SEND};
use crate::udp::codec;

/// Requests awaiting an answer per socket: 2^18 slots of 32 bytes (8 MiB). A slot still pending
/// when its number comes round again is counted lost; at 400,000 requests/s over two sockets
/// the ring spans 1.3 s, longer than any sensible UDP timeout.
const RING_SLOTS: usize = 1 << 18;

/// SO_RCVBUF and SO_SNDBUF asked for each socket (8 MiB: 50 ms of answers at 400,000/s).
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

#[derive(Clone, Copy)]
struct Pending {
    /// Request number + 1; 0 marks a free slot.
    k_plus_1: u64,
    intended: Instant,
    sent: Instant,
    warmup: bool,
}

/// One worker: one socket, carrying requests w, w + sockets, ...
pub async fn run_worker(
    job: Arc<Job>,
    mine: Vec<usize>,
    units: usize,
    start: watch::Receiver<Option<Instant>>,
) -> Recorder {
    let mut recorder = Recorder::new();
    let socket = open(job.target).await;
    for _ in &mine {
        job.ready.fetch_add(1, Ordering::AcqRel);
    }
    let t0 = wait_start(start).await;
    let (Some(socket), Some(&w)) = (socket, mine.first()) else {
        return recorder;
    };
    let sockets = units as u64;
    let total = job.level.requests();
    let warmup_until = job.warmup_until(t0);
    let stop_at = (job.schedule_end(t0) + job.timeout).min(job.deadline);
    let mut ring = vec![Pending { k_plus_1: 0, intended: t0, sent: t0, warmup: false }; RING_SLOTS];
    let slot_of = |k: u64| ((k / sockets) as usize) % RING_SLOTS;
    let mut datagram = [0u8; 128];
    let mut answer = [0u8; 512];
    let mut k = w as u64;
    loop {
        // Send everything now due; how many were due at once is the send backlog.
        let now = Instant::now();
        let mut due = 0u64;
        while k < total {
            let intended = job.intended(t0, k);
            if intended > now || intended >= job.deadline {
                break;
            }
            due += 1;
            if now - intended > LATE_SEND {
                recorder.counts.late_sends += 1;
            }
            let symbol = &job.udp_symbols[(k % job.udp_symbols.len() as u64) as usize];
            let Some(len) = codec::encode_request(k as u32, &job.udp_key, symbol, &mut datagram) else {
                // The key or a symbol does not fit the protocol; checked before the run, so
                // this is unreachable, but it must not loop forever.
                return recorder;
            };
            let slot = slot_of(k);
            if ring[slot].k_plus_1 != 0 {
                let old = ring[slot];
                recorder.record(Outcome::UdpLoss, old.intended, old.sent, now, old.warmup);
            }
            let sent = Instant::now();
            recorder.counts.udp_sent += 1;
            if socket.send(&datagram[..len]).await.is_err() {
                recorder.record(Outcome::Io, intended, sent, sent, intended < warmup_until);
            } else {
                ring[slot] = Pending { k_plus_1: k + 1, intended, sent, warmup: intended < warmup_until };
            }
            job.progress.done.fetch_add(1, Ordering::Relaxed);
            k += sockets;
        }
        recorder.counts.backlog_max = recorder.counts.backlog_max.max(due);
        let wake = if k < total { job.intended(t0, k).min(stop_at) } else { stop_at };
        if k >= total && Instant::now() >= stop_at {
            break;
        }
        if Instant::now() >= job.deadline {
            break;
        }
        tokio::select! {
            biased;
            received = socket.recv(&mut answer) => {
                let Ok(n) = received else { continue };
                let done = Instant::now();
                let Some(response) = codec::decode_response(&answer[..n]) else { continue };
                // Request ids are request numbers modulo 2^32; the ring slot must hold that one.
                let id = u64::from(response.request_id);
                let slot = slot_of(id);
                let pending = ring[slot];
                if pending.k_plus_1 == 0 || (pending.k_plus_1 - 1) as u32 != response.request_id {
                    continue;
                }
                ring[slot].k_plus_1 = 0;
                recorder.counts.udp_received += 1;
                let outcome = if done - pending.intended > job.timeout {
                    Outcome::UdpLoss
                } else {
                    Outcome::Udp(response.status as u8)
                };
                if outcome != Outcome::Udp(0) {
                    job.progress.errors.fetch_add(1, Ordering::Relaxed);
                }
                job.progress.observe(done.saturating_duration_since(pending.intended));
                recorder.record(outcome, pending.intended, pending.sent, done, pending.warmup);
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    let now = Instant::now();
    for pending in ring.iter().filter(|p| p.k_plus_1 != 0) {
        recorder.record(Outcome::UdpLoss, pending.intended, pending.sent, now, pending.warmup);
        job.progress.errors.fetch_add(1, Ordering::Relaxed);
    }
    recorder
}

async fn open(target: SocketAddr) -> Option<UdpSocket> {
    let local: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await.ok()?;
    // Answers arrive in bursts while this task is sending; a default-sized receive buffer drops
    // them in our own kernel queue and the loss would be blamed on the server. The kernel caps
    // the size at net.core.rmem_max; whatever remains is caught by the reconciliation.
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.connect(target).await.ok()?;
    Some(socket)
}
