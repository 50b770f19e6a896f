//! The WebSocket opening handshake (RFC 6455 section 4.2): which upgrade requests are acceptable,
//! and the 101 that accepts one. The accept key itself is tungstenite's.

use crate::buf::FixedBuf;

/// The only protocol version there is (RFC 6455 section 4.1).
pub const VERSION: &[u8] = b"13";

/// The headers of a WebSocket opening handshake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Upgrade<'b> {
    /// `Upgrade` lists `websocket`.
    pub websocket: bool,
    /// `Connection` lists `upgrade`.
    pub connection: bool,
    pub key: Option<&'b [u8]>,
    pub version: Option<&'b [u8]>,
}

/// Why an upgrade request cannot be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not an upgrade to WebSocket at all (426: the client must upgrade).
    NotUpgrade,
    /// A `Sec-WebSocket-Version` other than 13 (426, naming 13).
    Version,
    /// `Sec-WebSocket-Key` missing or not 16 bytes in base64 (400).
    Key,
}

/// Checks the handshake headers and returns the client's key.
pub fn check<'b>(upgrade: &Upgrade<'b>) -> Result<&'b [u8], Refusal> {
    if !upgrade.websocket || !upgrade.connection {
        return Err(Refusal::NotUpgrade);
    }
    if upgrade.version != Some(VERSION) {
        return Err(Refusal::Version);
    }
    match upgrade.key {
        Some(key) if is_nonce(key) => Ok(key),
        _ => Err(Refusal::Key),
    }
}

/// Sixteen bytes in base64: 22 characters and `==`.
fn is_nonce(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The 101 Switching Protocols response for a checked key.
pub fn write_accept(out: &mut FixedBuf, key: &[u8]) {
    let accept = tungstenite::handshake::derive_accept_key(key);
    out.put(b"HTTP/1.1 101 Switching Protocols\r\nServer: pricebeast\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.put(accept.as_bytes());
    out.put(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(key: &'static [u8], version: &'static [u8]) -> Upgrade<'static> {
        Upgrade { websocket: true, connection: true, key: Some(key), version: Some(version) }
    }

    #[test]
    fn accepts_the_rfc_example_with_its_accept_key() {
        let key = check(&upgrade(b"dGhlIHNhbXBsZSBub25jZQ==", b"13")).expect("valid");
        let mut out = FixedBuf::with_capacity(512);
        write_accept(&mut out, key);
        let text = std::str::from_utf8(out.as_slice()).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{text}");
        // RFC 6455 section 1.3's worked example.
        assert!(text.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn refuses_what_is_not_a_version_13_upgrade() {
        assert_eq!(check(&Upgrade::default()), Err(Refusal::NotUpgrade));
        let mut no_connection = upgrade(b"dGhlIHNhbXBsZSBub25jZQ==", b"13");
        no_connection.connection = false;
        assert_eq!(check(&no_connection), Err(Refusal::NotUpgrade));
        assert_eq!(check(&upgrade(b"dGhlIHNhbXBsZSBub25jZQ==", b"8")), Err(Refusal::Version));
        assert_eq!(check(&upgrade(b"short==", b"13")), Err(Refusal::Key));
        assert_eq!(check(&upgrade(b"dGhlIHNhbXBsZSBub25jZQ!=", b"13")), Err(Refusal::Key));
        let mut no_key = upgrade(b"", b"13");
        no_key.key = None;
        assert_eq!(check(&no_key), Err(Refusal::Key));
    }
}
