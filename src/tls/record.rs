//! The TLS record layer after the handshake: one direction's key, sealing or opening records in
//! place in the caller's buffer (RFC 8446 §5 for TLS 1.3; RFC 5288 and RFC 7905 for TLS 1.2's
//! AES-GCM and ChaCha20-Poly1305). rustls negotiates the keys and hands them over; nothing here
//! allocates.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;

/// The most plaintext one record carries (RFC 8446 §5.1).
pub const PLAINTEXT_MAX: usize = 1 << 14;
/// The record header: type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// The longest record a peer may send: TLS 1.2 allows 2048 bytes of expansion (RFC 5246 §6.2.3).
pub const RECORD_MAX: usize = HEADER_LEN + PLAINTEXT_MAX + 2048;
/// What sealing adds to a record's plaintext, at most: header, TLS 1.2's explicit nonce or TLS
/// 1.3's inner content type, and the tag.
pub const SEAL_OVERHEAD_MAX: usize = HEADER_LEN + 8 + 16;

pub const CONTENT_ALERT: u8 = 21;
pub const CONTENT_HANDSHAKE: u8 = 22;
pub const CONTENT_APPLICATION_DATA: u8 = 23;

const TAG_LEN: usize = 16;
const EXPLICIT_NONCE_LEN: usize = 8;

/// The record format of the negotiated version and cipher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The content type inside the encryption, every record typed application data outside.
    Tls13,
    /// AES-GCM: an 8-byte explicit nonce before the ciphertext.
    Tls12Gcm,
    /// ChaCha20-Poly1305: the nonce is the sequence number, as in TLS 1.3.
    Tls12Chacha,
}

/// Why a record could not be opened or sealed. Every one ends the connection.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("a record failed authentication")]
    BadRecordMac,
    #[error("a record is longer than TLS allows")]
    Overflow,
    #[error("a record is malformed")]
    Malformed,
    #[error("the sequence numbers of this key are used up")]
    SequenceExhausted,
    #[error("the negotiated cipher suite is not one this server seals itself")]
    UnsupportedCipher,
}

/// One direction of a connection: its key, its IV and the next record's sequence number.
pub struct Direction {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
    format: Format,
}

impl Direction {
    /// `tls13`: the negotiated version is 1.3.
    pub fn new(secrets: &ConnectionTrafficSecrets, seq: u64, tls13: bool) -> Result<Self, RecordError> {
        let (algorithm, key, iv, gcm) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv, true),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv, true),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&aead::CHACHA20_POLY1305, key, iv, false),
            _ => return Err(RecordError::UnsupportedCipher),
        };
        let key = UnboundKey::new(algorithm, key.as_ref()).map_err(|_| RecordError::UnsupportedCipher)?;
        let iv: [u8; 12] = iv.as_ref().try_into().map_err(|_| RecordError::UnsupportedCipher)?;
        let format = match (tls13, gcm) {
            (true, _) => Format::Tls13,
            (false, true) => Format::Tls12Gcm,
            (false, false) => Format::Tls12Chacha,
        };
        Ok(Self { key: LessSafeKey::new(key), iv, seq, format })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Records sealed or opened with this key so far (the next sequence number).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The IV with the sequence number folded into its last 8 bytes (RFC 8446 §5.3).
    fn nonce(&self) -> [u8; 12] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }

    fn next_seq(&mut self) -> Result<u64, RecordError> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(RecordError::SequenceExhausted)?;
        Ok(seq)
    }

    /// Bytes a record of `plain` bytes of plaintext takes on the wire.
    pub fn sealed_len(&self, plain: usize) -> usize {
        HEADER_LEN
            + plain
            + TAG_LEN
            + match self.format {
                Format::Tls13 => 1,
                Format::Tls12Gcm => EXPLICIT_NONCE_LEN,
                Format::Tls12Chacha => 0,
            }
    }

    /// Seals one record of `content_type` carrying `plain` (at most [`PLAINTEXT_MAX`] bytes) at
    /// the start of `out`, which must hold [`Self::sealed_len`] bytes. Returns that length.
    pub fn seal(&mut self, content_type: u8, plain: &[u8], out: &mut [u8]) -> Result<usize, RecordError> {
        debug_assert!(plain.len() <= PLAINTEXT_MAX);
        let total = self.sealed_len(plain.len());
        if out.len() < total || plain.len() > PLAINTEXT_MAX {
            return Err(RecordError::Overflow);
        }
        let nonce_bytes = self.nonce();
        let seq = self.next_seq()?;
        let body_len = total - HEADER_LEN;
        let outer_type = if self.format == Format::Tls13 { CONTENT_APPLICATION_DATA } else { content_type };
        let [len_hi, len_lo] = (body_len as u16).to_be_bytes();
        out[..HEADER_LEN].copy_from_slice(&[outer_type, 3, 3, len_hi, len_lo]);
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        let tag = match self.format {
            Format::Tls13 => {
                let inner = &mut out[HEADER_LEN..HEADER_LEN + plain.len() + 1];
                inner[..plain.len()].copy_from_slice(plain);
                inner[plain.len()] = content_type;
                let aad = [outer_type, 3, 3, len_hi, len_lo];
                self.key.seal_in_place_separate_tag(nonce, Aad::from(aad), inner)
            }
            Format::Tls12Gcm | Format::Tls12Chacha => {
                let start = HEADER_LEN + if self.format == Format::Tls12Gcm { EXPLICIT_NONCE_LEN } else { 0 };
                if self.format == Format::Tls12Gcm {
                    out[HEADER_LEN..start].copy_from_slice(&nonce_bytes[4..]);
                }
                let body = &mut out[start..start + plain.len()];
                body.copy_from_slice(plain);
                let aad = tls12_aad(seq, content_type, plain.len());
                self.key.seal_in_place_separate_tag(nonce, Aad::from(aad), body)
            }
        }
        .map_err(|_| RecordError::Malformed)?;
        out[total - TAG_LEN..total].copy_from_slice(tag.as_ref());
        Ok(total)
    }

    /// Opens the record `record` (header included, exactly one record) in place. Returns its
    /// content type and where its plaintext now lies within `record`.
    pub fn open(&mut self, record: &mut [u8]) -> Result<(u8, std::ops::Range<usize>), RecordError> {
        if record.len() < HEADER_LEN {
            return Err(RecordError::Malformed);
        }
        let header: [u8; HEADER_LEN] = [record[0], record[1], record[2], record[3], record[4]];
        let body_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if record.len() != HEADER_LEN + body_len {
            return Err(RecordError::Malformed);
        }
        if body_len > RECORD_MAX - HEADER_LEN {
            return Err(RecordError::Overflow);
        }
        let seq = self.seq;
        match self.format {
            Format::Tls13 => {
                // TLS 1.3 allows 256 bytes of expansion (RFC 8446 §5.2).
                if body_len > PLAINTEXT_MAX + 256 {
                    return Err(RecordError::Overflow);
                }
                if header[0] != CONTENT_APPLICATION_DATA || body_len < TAG_LEN + 1 {
                    return Err(RecordError::Malformed);
                }
                let nonce = Nonce::assume_unique_for_key(self.nonce());
                let plain = self
                    .key
                    .open_in_place(nonce, Aad::from(header), &mut record[HEADER_LEN..])
                    .map_err(|_| RecordError::BadRecordMac)?;
                // The content type is the last byte that is not padding.
                let Some(end) = plain.iter().rposition(|&b| b != 0) else {
                    return Err(RecordError::Malformed);
                };
                if end > PLAINTEXT_MAX {
                    return Err(RecordError::Overflow);
                }
                let content_type = plain[end];
                self.next_seq()?;
                Ok((content_type, HEADER_LEN..HEADER_LEN + end))
            }
            Format::Tls12Gcm | Format::Tls12Chacha => {
                let explicit = if self.format == Format::Tls12Gcm { EXPLICIT_NONCE_LEN } else { 0 };
                if body_len < explicit + TAG_LEN {
                    return Err(RecordError::Malformed);
                }
                let plain_len = body_len - explicit - TAG_LEN;
                if plain_len > PLAINTEXT_MAX {
                    return Err(RecordError::Overflow);
                }
                let nonce_bytes = if explicit > 0 {
                    let mut nonce = [0u8; 12];
                    nonce[..4].copy_from_slice(&self.iv[..4]);
                    nonce[4..].copy_from_slice(&record[HEADER_LEN..HEADER_LEN + EXPLICIT_NONCE_LEN]);
                    nonce
                } else {
                    self.nonce()
                };
                let aad = tls12_aad(seq, header[0], plain_len);
                let start = HEADER_LEN + explicit;
                self.key
                    .open_in_place(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(aad), &mut record[start..])
                    .map_err(|_| RecordError::BadRecordMac)?;
                self.next_seq()?;
                Ok((header[0], start..start + plain_len))
            }
        }
    }
}

/// TLS 1.2's additional data: sequence number, type, version, plaintext length (RFC 5246 §6.2.3.3).
fn tls12_aad(seq: u64, content_type: u8, plain_len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = content_type;
    aad[9] = 3;
    aad[10] = 3;
    aad[11..].copy_from_slice(&(plain_len as u16).to_be_bytes());
    aad
}

/// The length of the first whole record in `bytes`, if one is whole; an error if its header
/// cannot begin a TLS record.
pub fn whole_record(bytes: &[u8]) -> Result<Option<usize>, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Ok(None);
    }
    if !(20..=24).contains(&bytes[0]) || bytes[1] != 3 {
        return Err(RecordError::Malformed);
    }
    let len = HEADER_LEN + usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    if len > RECORD_MAX {
        return Err(RecordError::Overflow);
    }
    Ok((bytes.len() >= len).then_some(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn secrets(kind: u8) -> ConnectionTrafficSecrets {
        // AES-128 keys come only from a handshake (session.rs's tests cover every suite).
        let iv = Iv::new([7u8; 12]);
        match kind {
            0 => ConnectionTrafficSecrets::Aes256Gcm { key: AeadKey::from([2u8; 32]), iv },
            _ => ConnectionTrafficSecrets::Chacha20Poly1305 { key: AeadKey::from([3u8; 32]), iv },
        }
    }

    fn pair(kind: u8, tls13: bool) -> (Direction, Direction) {
        let s = secrets(kind);
        (Direction::new(&s, 0, tls13).expect("sealer"), Direction::new(&s, 0, tls13).expect("opener"))
    }

    #[test]
    fn every_format_opens_what_it_sealed() {
        for kind in 0..2 {
            for tls13 in [true, false] {
                let (mut seal, mut open) = pair(kind, tls13);
                for len in [0usize, 1, 100, PLAINTEXT_MAX] {
                    let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
                    let mut out = vec![0u8; seal.sealed_len(len)];
                    let n = seal.seal(CONTENT_APPLICATION_DATA, &plain, &mut out).expect("seal");
                    assert_eq!(n, out.len());
                    assert_eq!(whole_record(&out), Ok(Some(n)));
                    let (kind_out, range) = open.open(&mut out).expect("open");
                    assert_eq!(kind_out, CONTENT_APPLICATION_DATA);
                    assert_eq!(&out[range], &plain[..]);
                }
                assert_eq!(seal.seq(), 4);
                assert_eq!(open.seq(), 4);
            }
        }
    }

    #[test]
    fn a_flipped_bit_or_a_replayed_record_fails() {
        for tls13 in [true, false] {
            let (mut seal, mut open) = pair(0, tls13);
            let mut first = vec![0u8; seal.sealed_len(5)];
            seal.seal(CONTENT_APPLICATION_DATA, b"hello", &mut first).expect("seal");
            let mut flipped = first.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert_eq!(open.open(&mut flipped), Err(RecordError::BadRecordMac));
            // The opener did not move past the failed record; the original still opens, once.
            let mut replay = first.clone();
            assert!(open.open(&mut first).is_ok());
            assert_eq!(open.open(&mut replay).err(), Some(RecordError::BadRecordMac));
        }
    }

    #[test]
    fn headers_that_are_not_tls_are_refused() {
        assert_eq!(whole_record(b"GET / HTTP/1.1\r\n"), Err(RecordError::Malformed));
        assert_eq!(whole_record(&[23, 3, 3, 0xff, 0xff]), Err(RecordError::Overflow));
        assert_eq!(whole_record(&[23, 3, 3, 0, 10, 1]), Ok(None));
    }
}
