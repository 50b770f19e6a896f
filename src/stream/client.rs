//! What a client sends on an open stream, through tungstenite's protocol core: masking, control
//! frames, fragments and size limits are its job; this module turns its messages into what the
//! stream does next. No socket here: bytes in, replies and decisions out.

use std::io::{self, Read, Write};

use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

/// tungstenite's first buffer for client bytes: enough for a pong or a close. It grows to the
/// largest message a client sends (at most `stream.message_bytes_max`); every idle stream holds one.
const READ_CHUNK: usize = 128;

/// What the stream must do after some client bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep streaming.
    Continue,
    /// The client closed (its close reply is in `replies`), or the connection is done.
    Closed,
    /// Refuse the client with this close code: 1002 protocol error, 1003 binary message, 1007
    /// bad UTF-8, 1009 message too big.
    Refuse(u16),
}

/// One stream's client side.
pub struct ClientReader {
    ws: WebSocketContext,
}

impl ClientReader {
    pub fn new(message_bytes_max: usize) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_CHUNK)
            .write_buffer_size(0)
            .max_message_size(Some(message_bytes_max))
            .max_frame_size(Some(message_bytes_max));
        Self { ws: WebSocketContext::new(Role::Server, Some(config)) }
    }

    /// Feeds `bytes` (as read from the socket) and acts on every whole message: text messages go
    /// to `on_text`, which may answer with a text message of its own; pongs and close replies are
    /// appended, framed, to `replies`.
    pub fn take_in(
        &mut self,
        bytes: &[u8],
        replies: &mut Vec<u8>,
        mut on_text: impl FnMut(&[u8]) -> Option<String>,
    ) -> Next {
        let mut pipe = Pipe { input: bytes, output: replies };
        let next = loop {
            match self.ws.read(&mut pipe) {
                Ok(Message::Text(text)) => {
                    if let Some(answer) = on_text(text.as_bytes()) {
                        crate::stream::frames::text(pipe.output, &answer);
                    }
                }
                Ok(Message::Binary(_)) => break Next::Refuse(1003),
                Ok(Message::Close(_)) => break Next::Closed,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break Next::Continue,
                Err(tungstenite::Error::Capacity(_)) => break Next::Refuse(1009),
                Err(tungstenite::Error::Utf8(_)) => break Next::Refuse(1007),
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => break Next::Closed,
                Err(_) => break Next::Refuse(1002),
            }
            // Pongs for the pings just read, in order with any answer above.
            let _ = self.ws.flush(&mut pipe);
        };
        // The pong or close reply tungstenite queued (a refusal's close frame is the stream's own).
        let _ = self.ws.flush(&mut pipe);
        next
    }
}

/// Client bytes in, tungstenite's replies out.
struct Pipe<'a> {
    input: &'a [u8],
    output: &'a mut Vec<u8>,
}

impl Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            // Not the end of the stream: the socket simply has nothing more yet.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.input.read(buf)
    }
}

impl Write for Pipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client frame, masked.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        assert!(payload.len() < 126);
        out.push(0x80 | payload.len() as u8);
        let mask = [1, 2, 3, 4];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn texts_pings_and_closes() {
        let mut reader = ClientReader::new(64);
        let mut replies = Vec::new();
        let mut texts = Vec::new();
        let bytes = [frame(true, 0x1, b"hello"), frame(true, 0x9, b"p")].concat();
        // Split anywhere, the same messages come out.
        let (a, b) = bytes.split_at(3);
        assert_eq!(reader.take_in(a, &mut replies, |t| Some(String::from_utf8_lossy(t).into())), Next::Continue);
        assert_eq!(
            reader.take_in(b, &mut replies, |t| {
                texts.push(t.to_vec());
                Some("answer".into())
            }),
            Next::Continue
        );
        assert_eq!(texts, [b"hello".to_vec()]);
        // The answer, then the pong echoing "p".
        assert_eq!(&replies[..2], &[0x81, 6]);
        assert_eq!(&replies[8..], &[0x8a, 1, b'p']);
        replies.clear();
        assert_eq!(reader.take_in(&frame(true, 0x8, &1000u16.to_be_bytes()), &mut replies, |_| None), Next::Closed);
        assert_eq!(replies, [0x88, 2, 0x03, 0xe8], "the close echoed");
    }

    #[test]
    fn refusals_carry_their_close_codes() {
        let refuse = |bytes: Vec<u8>| ClientReader::new(16).take_in(&bytes, &mut Vec::new(), |_| None);
        assert_eq!(refuse(frame(true, 0x2, b"x")), Next::Refuse(1003));
        assert_eq!(refuse(frame(true, 0x1, b"\xff")), Next::Refuse(1007));
        assert_eq!(refuse(frame(true, 0x1, &[b'a'; 17])), Next::Refuse(1009));
        assert_eq!(
            refuse([frame(false, 0x1, &[b'a'; 10]), frame(true, 0x0, &[b'a'; 10])].concat()),
            Next::Refuse(1009)
        );
        assert_eq!(refuse(vec![0x81, 0x01, b'x']), Next::Refuse(1002), "unmasked");
        assert_eq!(refuse(frame(false, 0x9, b"")), Next::Refuse(1002), "fragmented control frame");
        assert_eq!(refuse(frame(true, 0x0, b"x")), Next::Refuse(1002), "continuation of nothing");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_replies_stay_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
        ) {
            let mut reader = ClientReader::new(256);
            let mut replies = Vec::new();
            for chunk in &chunks {
                let next = reader.take_in(chunk, &mut replies, |t| Some(format!("{}", t.len())));
                if next != Next::Continue {
                    break;
                }
            }
            // Each reply answers a frame of the input; none can outgrow what came in by much.
            let input: usize = chunks.iter().map(Vec::len).sum();
            prop_assert!(replies.len() <= 16 * (input + 1));
        }
    }
}
