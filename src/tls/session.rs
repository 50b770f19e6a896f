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

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::sync::Arc;

    use proptest::prelude::*;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::server::UnbufferedServerConnection;
    use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, SupportedCipherSuite};

    use super::*;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A server configuration on a fresh self-signed certificate, and a client that trusts it
    /// offering only `suite`.
    fn configs(suite: SupportedCipherSuite) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let (cert_pem, key_pem) = crate::cli::tls::generate(&["localhost".into()], 1).expect("a test certificate");
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        server.enable_secret_extraction = true;
        let mut roots = RootCertStore::empty();
        roots.add(cert).expect("root");
        let mut only = rustls::crypto::ring::default_provider();
        only.cipher_suites = vec![suite];
        let client = ClientConfig::builder_with_provider(Arc::new(only))
            .with_protocol_versions(&[suite.version()])
            .expect("client versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// Runs a handshake in memory: a rustls client against the unbuffered server the shards
    /// use, until the server could hand over its keys. Returns the session and the client.
    fn handshake(suite: SupportedCipherSuite) -> (Session, ClientConnection) {
        let (server_config, client_config) = configs(suite);
        let mut client =
            ClientConnection::new(client_config, ServerName::try_from("localhost").expect("name")).expect("client");
        let mut server = UnbufferedServerConnection::new(server_config).expect("server");
        let mut to_server: Vec<u8> = Vec::new();
        let mut out = vec![0u8; 16 * 1024];
        let mut out_len = 0;
        for _ in 0..100 {
            while client.wants_write() {
                client.write_tls(&mut to_server).expect("client writes");
            }
            let UnbufferedStatus { discard, state } = server.process_tls_records(&mut to_server);
            let mut done = false;
            match state.expect("server state") {
                ConnectionState::EncodeTlsData(mut encode) => match encode.encode(&mut out[out_len..]) {
                    Ok(n) => out_len += n,
                    Err(EncodeError::InsufficientSize(_)) => panic!("16 KiB holds a test flight"),
                    Err(e) => panic!("{e}"),
                },
                ConnectionState::TransmitTlsData(transmit) => {
                    let mut flight = &out[..out_len];
                    while !flight.is_empty() {
                        client.read_tls(&mut flight).expect("client reads");
                        client.process_new_packets().expect("client accepts the flight");
                    }
                    out_len = 0;
                    transmit.done();
                }
                ConnectionState::BlockedHandshake => {}
                ConnectionState::WriteTraffic(_) => done = true,
                other => panic!("unexpected {other:?}"),
            }
            to_server.drain(..discard);
            if done && !server.is_handshaking() {
                let (secrets, kernel) = server.dangerous_into_kernel_connection().expect("keys");
                return (Session::new(secrets, kernel).expect("session"), client);
            }
        }
        panic!("the handshake did not finish");
    }

    /// Every suite the server offers an ECDSA certificate with (the RSA ones of TLS 1.2 need an
    /// RSA certificate and use the same record layer).
    fn suites() -> Vec<SupportedCipherSuite> {
        let ecdsa = |s: &SupportedCipherSuite| format!("{:?}", s.suite()).contains("ECDSA");
        rustls::crypto::ring::default_provider()
            .cipher_suites
            .into_iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)) || ecdsa(s))
            .collect()
    }

    /// What the client sends, as TLS bytes.
    fn client_sends(client: &mut ClientConnection, plain: &[u8]) -> Vec<u8> {
        client.writer().write_all(plain).expect("client plaintext");
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("client writes");
        }
        wire
    }

    /// What the client reads of what the server sealed.
    fn client_reads(client: &mut ClientConnection, mut wire: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        while !wire.is_empty() {
            // A record at a time, so the client's plaintext buffer never fills.
            let record = crate::tls::record::whole_record(wire).expect("a record").expect("whole");
            let mut one = &wire[..record];
            wire = &wire[record..];
            while !one.is_empty() {
                client.read_tls(&mut one).expect("client reads");
                client.process_new_packets().expect("the server's records open");
            }
            let mut chunk = [0u8; 4096];
            loop {
                match client.reader().read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        plain
    }

    #[test]
    fn every_suite_talks_both_ways_with_a_rustls_client() {
        for suite in suites() {
            let (mut session, mut client) = handshake(suite);
            assert_eq!(session.cipher_suite(), suite.suite());
            // A request in, split across three records.
            let mut buf = Vec::with_capacity(64 * 1024);
            for part in [&b"GET /health HTTP/1.1\r\n"[..], b"Host: x\r\n", b"\r\n"] {
                buf.extend(client_sends(&mut client, part));
            }
            let opened = session.open(&mut buf, 0).expect("opens");
            assert_eq!(&buf[..opened.plain_len], b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", "{suite:?}");
            assert!(!opened.peer_closed);
            // A response out, longer than one record.
            let response: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
            let mut sealed = Vec::with_capacity(session.sealed_len_max(response.len()));
            assert_eq!(session.seal(&response, &mut sealed).expect("seals"), response.len());
            assert!(sealed.len() <= session.sealed_len_max(response.len()));
            let read = client_reads(&mut client, &sealed);
            assert_eq!(read.len(), response.len(), "{suite:?}");
            assert!(read == response, "{suite:?}: the bytes differ");
        }
    }

    #[test]
    fn a_client_key_update_is_followed_both_ways() {
        for suite in suites().into_iter().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))) {
            let (mut session, mut client) = handshake(suite);
            client.refresh_traffic_keys().expect("client key update");
            let mut buf = client_sends(&mut client, b"after the update");
            let opened = session.open(&mut buf, 0).expect("opens with the new key");
            assert_eq!(&buf[..opened.plain_len], b"after the update");
            let mut sealed = Vec::with_capacity(256);
            session.seal(b"answer", &mut sealed).expect("seals");
            assert_eq!(client_reads(&mut client, &sealed), b"answer");
            // Our own update at the key's limit: the client follows it.
            session.set_tx_limit(session.tx.seq());
            let mut sealed = Vec::with_capacity(256);
            session.seal(b"rekeyed", &mut sealed).expect("seals after a key update");
            assert_eq!(client_reads(&mut client, &sealed), b"rekeyed");
        }
    }

    #[test]
    fn tls12_at_the_key_limit_refuses_to_seal() {
        let suite = suites().into_iter().find(|s| matches!(s, SupportedCipherSuite::Tls12(_))).expect("a 1.2 suite");
        let (mut session, _client) = handshake(suite);
        session.set_tx_limit(0);
        let mut sealed = Vec::with_capacity(256);
        assert!(session.seal(b"x", &mut sealed).is_err());
    }

    #[test]
    fn close_notify_both_ways() {
        let suite = suites()[0];
        let (mut session, mut client) = handshake(suite);
        client.send_close_notify();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("client writes");
        }
        let opened = session.open(&mut wire, 0).expect("opens");
        assert!(opened.peer_closed);
        let mut sealed = Vec::with_capacity(64);
        session.close_notify(&mut sealed).expect("seals");
        let mut rd = &sealed[..];
        client.read_tls(&mut rd).expect("reads");
        let state = client.process_new_packets().expect("accepts");
        assert!(state.peer_has_closed());
    }

    #[test]
    fn garbage_and_tampering_end_the_connection() {
        let (mut session, mut client) = handshake(suites()[0]);
        let mut wire = client_sends(&mut client, b"hello");
        let last = wire.len() - 1;
        wire[last] ^= 0x55;
        assert!(session.open(&mut wire, 0).is_err());
        let mut garbage = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        assert!(session.open(&mut garbage, 0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// However the client's records arrive (any split into reads), the plaintext comes out
        /// whole, in order, after what was already there.
        #[test]
        fn records_open_whatever_the_reads(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..6),
            cuts in proptest::collection::vec(1usize..700, 1..40),
            suite_index in 0usize..6,
        ) {
            let all = suites();
            let (mut session, mut client) = handshake(all[suite_index % all.len()]);
            let mut wire = Vec::new();
            for message in &messages {
                wire.extend(client_sends(&mut client, message));
            }
            let expected: Vec<u8> = messages.concat();
            let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
            let mut plain_len = 0;
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < wire.len() {
                let n = (*cut.next().expect("cycle")).min(wire.len() - at);
                buf.extend_from_slice(&wire[at..at + n]);
                at += n;
                plain_len = session.open(&mut buf, plain_len).expect("opens").plain_len;
                prop_assert_eq!(&buf[..plain_len], &expected[..plain_len]);
            }
            prop_assert_eq!(plain_len, expected.len());
            prop_assert_eq!(buf.len(), expected.len());
        }
    }
}
