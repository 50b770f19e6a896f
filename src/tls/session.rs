//! An established TLS connection: the two directions' keys (`record`) and what TLS still asks
//! of a connection after its handshake: alerts, TLS 1.3 key updates (the client's, and ours
//! before a key's confidentiality limit), close_notify. Works on the connection's own buffers:
//! opening leaves the plaintext where the ciphertext was, sealing appends to the output.

use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};

use super::record::{
    self, Direction, RecordError, CONTENT_ALERT, CONTENT_APPLICATION_DATA, CONTENT_HANDSHAKE, PLAINTEXT_MAX,
};

/// A record that ends a connection, or a key rustls would not give.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the client sent alert {0}")]
    Alert(u8),
    #[error("the client sent a message TLS does not allow here")]
    Unexpected,
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Handshake type of a TLS 1.3 KeyUpdate (RFC 8446 §4.6.3).
const KEY_UPDATE: u8 = 24;
const ALERT_CLOSE_NOTIFY: u8 = 0;
const ALERT_USER_CANCELED: u8 = 90;

/// Sealing starts a key update (TLS 1.3) or refuses to go on (TLS 1.2) this many records before
/// the cipher's confidentiality limit.
const LIMIT_MARGIN: u64 = 1024;

/// What one `open` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The plaintext bytes now at the start of the buffer.
    pub plain_len: usize,
    /// The client sent close_notify: it sends nothing more.
    pub peer_closed: bool,
}

pub struct Session {
    kernel: KernelConnection<ServerConnectionData>,
    tx: Direction,
    rx: Direction,
    tls13: bool,
    /// Sealed records a key may carry before it must be replaced (or the connection end).
    tx_limit: u64,
    /// The client asked for a key update: ours goes out before the next record we seal.
    owe_key_update: bool,
}

impl Session {
    /// The record layer of a connection whose handshake rustls has completed.
    pub fn new(secrets: ExtractedSecrets, kernel: KernelConnection<ServerConnectionData>) -> Result<Self, TlsError> {
        let tls13 = kernel.protocol_version() == ProtocolVersion::TLSv1_3;
        let limit = match kernel.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls13(suite) => suite.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(suite) => suite.common.confidentiality_limit,
        };
        let (tx_seq, tx) = &secrets.tx;
        let (rx_seq, rx) = &secrets.rx;
        Ok(Self {
            tx: Direction::new(tx, *tx_seq, tls13)?,
            rx: Direction::new(rx, *rx_seq, tls13)?,
            kernel,
            tls13,
            tx_limit: limit.saturating_sub(LIMIT_MARGIN),
            owe_key_update: false,
        })
    }

    /// "TLSv1.3" or "TLSv1.2".
    pub fn version(&self) -> &'static str {
        if self.tls13 {
            "TLSv1.3"
        } else {
            "TLSv1.2"
        }
    }

    pub fn cipher_suite(&self) -> rustls::CipherSuite {
        self.kernel.negotiated_cipher_suite().suite()
    }

    /// `buf` holds `plain_len` bytes of plaintext, then ciphertext as read. Opens every whole
    /// record in place and moves its plaintext to follow the first; what is left of the
    /// ciphertext (part of a record) follows that. A record that fails ends the connection.
    pub fn open(&mut self, buf: &mut Vec<u8>, plain_len: usize) -> Result<Opened, TlsError> {
        let mut read = plain_len;
        let mut write = plain_len;
        let mut peer_closed = false;
        while let Some(len) = record::whole_record(&buf[read..])? {
            if peer_closed {
                // Nothing may follow close_notify.
                return Err(TlsError::Unexpected);
            }
            let (content_type, range) = self.rx.open(&mut buf[read..read + len])?;
            let (start, end) = (read + range.start, read + range.end);
            match content_type {
                CONTENT_APPLICATION_DATA => {
                    buf.copy_within(start..end, write);
                    write += end - start;
                }
                CONTENT_ALERT => match buf[start..end] {
                    [_, ALERT_CLOSE_NOTIFY] => peer_closed = true,
                    [_, ALERT_USER_CANCELED] => {}
                    [_, description] => return Err(TlsError::Alert(description)),
                    _ => return Err(TlsError::Unexpected),
                },
                CONTENT_HANDSHAKE if self.tls13 => self.take_handshake(start, end, buf)?,
                // TLS 1.2 renegotiation is not offered; anything else has no place here.
                _ => return Err(TlsError::Unexpected),
            }
            read += len;
        }
        let left = buf.len() - read;
        buf.copy_within(read.., write);
        buf.truncate(write + left);
        Ok(Opened { plain_len: write, peer_closed })
    }

    /// Post-handshake messages of TLS 1.3 a server accepts: KeyUpdate. Each must be whole in its
    /// record, which every client does.
    fn take_handshake(&mut self, start: usize, end: usize, buf: &[u8]) -> Result<(), TlsError> {
        let mut message = &buf[start..end];
        while !message.is_empty() {
            match message {
                [KEY_UPDATE, 0, 0, 1, requested, rest @ ..] if *requested <= 1 => {
                    let (seq, secrets) = self.kernel.update_rx_secret()?;
                    self.rx = Direction::new(&secrets, seq, true)?;
                    self.owe_key_update |= *requested == 1;
                    message = rest;
                }
                _ => return Err(TlsError::Unexpected),
            }
        }
        Ok(())
    }

    /// The most bytes sealing `plain` bytes appends: its records, and a key update before them.
    pub fn sealed_len_max(&self, plain: usize) -> usize {
        let records = plain.div_ceil(PLAINTEXT_MAX).max(1);
        plain + records * record::SEAL_OVERHEAD_MAX + record::SEAL_OVERHEAD_MAX + 8
    }

    /// Seals as much of `plain` as fits in `out`'s spare capacity, whole records of at most 16
    /// KiB, appended to `out`. Returns the plaintext bytes taken (all of them when `out` has
    /// room for [`Self::sealed_len_max`]).
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, TlsError> {
        let mut taken = 0;
        while taken < plain.len() {
            self.rekey_if_due(out)?;
            let room = out.capacity() - out.len();
            let overhead = self.tx.sealed_len(0);
            if room <= overhead {
                break;
            }
            let chunk = (plain.len() - taken).min(PLAINTEXT_MAX).min(room - overhead);
            self.push_record(CONTENT_APPLICATION_DATA, &plain[taken..taken + chunk], out)?;
            taken += chunk;
        }
        Ok(taken)
    }

    /// Appends a close_notify alert, so the client knows the response was not cut short.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        self.push_record(CONTENT_ALERT, &[1, ALERT_CLOSE_NOTIFY], out)
    }

    fn push_record(&mut self, content_type: u8, plain: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        let at = out.len();
        let len = self.tx.sealed_len(plain.len());
        out.resize(at + len, 0);
        match self.tx.seal(content_type, plain, &mut out[at..]) {
            Ok(_) => Ok(()),
            Err(e) => {
                out.truncate(at);
                Err(e.into())
            }
        }
    }

    /// A key update owed to the client, or due at the key's limit, goes out before the next
    /// record: sealed with the old key, everything after with the new one.
    fn rekey_if_due(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        let due = self.tx.seq() >= self.tx_limit;
        if !self.owe_key_update && !due {
            return Ok(());
        }
        if !self.tls13 {
            return Err(RecordError::SequenceExhausted.into());
        }
        self.push_record(CONTENT_HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
        let (seq, secrets) = self.kernel.update_tx_secret()?;
        self.tx = Direction::new(&secrets, seq, true)?;
        self.owe_key_update = false;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn set_tx_limit(&mut self, limit: u64) {
        self.tx_limit = limit;
    }
}
