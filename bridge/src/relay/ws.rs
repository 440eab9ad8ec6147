//! The server side of WebSocket framing (RFC 6455 §5) as far as the relay needs it, built for
//! memory: a socket owns no buffer between messages.
//!
//! A general WebSocket library keeps a read buffer and a write buffer per socket, and they grow
//! to the largest message seen and stay that large (with `tungstenite`, a tunnel that carried
//! one 64 KiB message each way kept about 260 KiB until it closed). The relay forwards whole
//! messages and never looks inside them, so here each message is read straight from the socket
//! into one allocation of exactly its size, with room in front for the outgoing header; the
//! payload is unmasked in place, the header written into the room, and the same allocation is
//! written to the other socket in one call and then freed. Between messages a reader holds
//! only a 14-byte header array.
//!
//! What is handled: masking (client frames must be masked), 7/16/64-bit lengths, fragmented
//! binary messages (reassembled, the limit applying to the whole message), ping (answered with
//! pong by the caller), pong (ignored), close (answered by the caller). Reserved bits, unknown
//! opcodes, unmasked frames, fragmented or oversized control frames and stray continuations are
//! protocol errors. Text messages are reported without reading them (the relay refuses them).
//! No extensions are negotiated.
//!
//! [`Reader::next`] is cancel-safe: every byte read is kept in the reader, so a `select!` that
//! drops the call loses nothing and the next call resumes. [`Writer::send`] is not (a frame may
//! be half written); a writer whose send was interrupted refuses further frames.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
const FIN: u8 = 0x80;
/// Longest control-frame payload (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;
/// Longest close reason that fits a control frame beside the 2-byte code.
const MAX_CLOSE_REASON: usize = MAX_CONTROL - 2;

/// What a read produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A whole binary message, already framed to be sent on unchanged.
    Binary(OutFrame),
    /// A text message (its payload is not read).
    Text,
    /// A ping with its payload (answer with [`OutFrame::pong`]).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// Why a read failed; the socket cannot be read again.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    /// The peer disconnected (end of stream or I/O error).
    #[error("connection lost")]
    Lost,
    /// A message is larger than the limit.
    #[error("message too big")]
    TooBig,
    /// The peer broke the framing rules.
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        Self::Lost
    }
}

/// A frame ready to be written as is (server frames are not masked).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct OutFrame(Vec<u8>);

impl std::fmt::Debug for OutFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Payloads are tunnel traffic: never printed.
        write!(f, "OutFrame({} bytes)", self.0.len())
    }
}

/// Length of a server frame header for a payload of `len` bytes.
fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Writes the header of an unmasked final frame into `room` (exactly `header_len(len)` bytes).
fn write_header(room: &mut [u8], opcode: u8, len: usize) {
    room[0] = FIN | opcode;
    match room.len() {
        2 => room[1] = len as u8,
        4 => {
            room[1] = 126;
            room[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            room[1] = 127;
            room[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

impl OutFrame {
    fn with_payload(opcode: u8, payload: &[u8]) -> Self {
        let room = header_len(payload.len());
        let mut v = vec![0u8; room];
        write_header(&mut v, opcode, payload.len());
        v.extend_from_slice(payload);
        Self(v)
    }

    /// A binary message.
    pub(crate) fn binary(payload: &[u8]) -> Self {
        Self::with_payload(OP_BINARY, payload)
    }

    /// The answer to a ping.
    pub(crate) fn pong(payload: &[u8]) -> Self {
        Self::with_payload(OP_PONG, &payload[..payload.len().min(MAX_CONTROL)])
    }

    /// A close frame; the reason is cut to fit (at a character boundary).
    pub(crate) fn close(code: Option<u16>, reason: &str) -> Self {
        let Some(code) = code else {
            return Self::with_payload(OP_CLOSE, &[]);
        };
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        Self::with_payload(OP_CLOSE, &payload)
    }

    /// The payload length (what the peer will receive).
    #[cfg(test)]
    pub(crate) fn payload(&self) -> &[u8] {
        let room = match self.0.get(1).map(|b| b & 0x7F) {
            Some(126) => 4,
            Some(127) => 10,
            _ => 2,
        };
        &self.0[room.min(self.0.len())..]
    }
}

/// XORs `payload` with the 4-byte masking key (RFC 6455 §5.3).
fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        c[0] ^= key[0];
        c[1] ^= key[1];
        c[2] ^= key[2];
        c[3] ^= key[3];
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// A parsed client frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    len: u64,
    mask: [u8; 4],
}

/// How many header bytes are needed given the first two (always masked: client frames).
fn header_need(first_two: [u8; 2]) -> usize {
    let ext = match first_two[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + 4
}

/// Checks the first two bytes: everything that can be refused before reading more.
fn check_start(b: [u8; 2]) -> Result<(), ReadError> {
    if b[0] & 0x70 != 0 {
        return Err(ReadError::Protocol("reserved bits set"));
    }
    if b[1] & 0x80 == 0 {
        return Err(ReadError::Protocol("client frame not masked"));
    }
    let opcode = b[0] & 0x0F;
    let len7 = b[1] & 0x7F;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => Ok(()),
        OP_CLOSE | OP_PING | OP_PONG => {
            if b[0] & FIN == 0 {
                Err(ReadError::Protocol("fragmented control frame"))
            } else if usize::from(len7) > MAX_CONTROL {
                Err(ReadError::Protocol("control frame too long"))
            } else {
                Ok(())
            }
        }
        _ => Err(ReadError::Protocol("unknown opcode")),
    }
}

/// Parses a complete header (`header_need` bytes, start already checked).
fn parse_header(h: &[u8]) -> Result<Header, ReadError> {
    let (len, at) = match h[1] & 0x7F {
        126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(ReadError::Protocol("length has its top bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&h[at..at + 4]);
    Ok(Header {
        fin: h[0] & FIN != 0,
        opcode: h[0] & 0x0F,
        len,
        mask,
    })
}

/// Reads client frames from one socket. Holds no buffer between messages.
pub(crate) struct Reader<R> {
    io: R,
    header: [u8; 14],
    have: usize,
    /// The payload being read: room for the outgoing header, then the payload.
    payload: Option<Vec<u8>>,
    /// A fragmented binary message being reassembled (payload bytes only).
    fragments: Option<Vec<u8>>,
}

impl<R> std::fmt::Debug for Reader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader at a frame boundary.
    pub(crate) fn new(io: R) -> Self {
        Self {
            io,
            header: [0; 14],
            have: 0,
            payload: None,
            fragments: None,
        }
    }

    /// Reads until `header[..need]` is filled.
    async fn fill_header(&mut self, need: usize) -> Result<(), ReadError> {
        while self.have < need {
            let n = self.io.read(&mut self.header[self.have..need]).await?;
            if n == 0 {
                return Err(ReadError::Lost);
            }
            self.have += n;
        }
        Ok(())
    }

    /// Reads the next message or control frame; binary messages up to `max` bytes.
    pub(crate) async fn next(&mut self, max: usize) -> Result<Incoming, ReadError> {
        loop {
            self.fill_header(2).await?;
            let start = [self.header[0], self.header[1]];
            check_start(start)?;
            let opcode = start[0] & 0x0F;
            match (opcode, self.fragments.is_some()) {
                (OP_TEXT, false) => return Ok(Incoming::Text),
                (OP_CONTINUATION, false) => {
                    return Err(ReadError::Protocol("continuation without a message"));
                }
                (OP_TEXT | OP_BINARY, true) => {
                    return Err(ReadError::Protocol("new message inside a fragmented one"));
                }
                _ => {}
            }
            self.fill_header(header_need(start)).await?;
            let h = parse_header(&self.header[..self.have])?;
            let is_control = opcode >= OP_CLOSE;
            let so_far = self.fragments.as_ref().map_or(0, Vec::len);
            let len = usize::try_from(h.len).map_err(|_| ReadError::TooBig)?;
            if !is_control && len > max.saturating_sub(so_far) {
                return Err(ReadError::TooBig);
            }
            // A single-frame binary message gets room for its outgoing header; fragments and
            // control frames are copied into their final frame later.
            let room = if opcode == OP_BINARY && h.fin {
                header_len(len)
            } else {
                0
            };
            // The payload lives in `self` across every await, so a cancelled call resumes.
            let payload = self.payload.get_or_insert_with(|| {
                let mut p = Vec::with_capacity(room + len);
                p.resize(room, 0);
                p
            });
            while payload.len() < room + len {
                let want = (room + len - payload.len()) as u64;
                if (&mut self.io).take(want).read_buf(payload).await? == 0 {
                    return Err(ReadError::Lost);
                }
            }
            let mut payload = self.payload.take().unwrap_or_default();
            // The frame is complete: back to a frame boundary.
            self.have = 0;
            unmask(&mut payload[room..], h.mask);
            match opcode {
                OP_PING => return Ok(Incoming::Ping(payload)),
                OP_PONG => return Ok(Incoming::Pong),
                OP_CLOSE => {
                    return match payload.len() {
                        0 => Ok(Incoming::Close(None)),
                        1 => Err(ReadError::Protocol("close frame of one byte")),
                        _ => Ok(Incoming::Close(Some(u16::from_be_bytes([
                            payload[0], payload[1],
                        ])))),
                    };
                }
                OP_BINARY if h.fin => {
                    write_header(&mut payload[..room], OP_BINARY, len);
                    return Ok(Incoming::Binary(OutFrame(payload)));
                }
                _ => {
                    // First or later fragment of a binary message.
                    let whole = match self.fragments.take() {
                        Some(mut whole) => {
                            whole.extend_from_slice(&payload);
                            whole
                        }
                        None => payload,
                    };
                    if h.fin {
                        return Ok(Incoming::Binary(OutFrame::binary(&whole)));
                    }
                    self.fragments = Some(whole);
                }
            }
        }
    }
}

/// Writes frames to one socket; shared by the two directions of a tunnel (data one way,
/// pong and close answers the other), so each frame is written whole under a lock.
pub(crate) struct Writer<W> {
    io: Mutex<W>,
    /// A send was interrupted mid-frame: the stream is no longer at a frame boundary.
    broken: AtomicBool,
}

impl<W> std::fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("broken", &self.broken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// A writer at a frame boundary.
    pub(crate) fn new(io: W) -> Self {
        Self {
            io: Mutex::new(io),
            broken: AtomicBool::new(false),
        }
    }

    /// Writes one frame in one piece (header and payload together, so Nagle's algorithm never
    /// holds back half a message).
    pub(crate) async fn send(&self, frame: &OutFrame) -> io::Result<()> {
        let mut io = self.io.lock().await;
        if self.broken.load(Ordering::Acquire) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        // Marked broken until the write completes: if this future is dropped half way, it
        // stays broken.
        self.broken.store(true, Ordering::Release);
        io.write_all(&frame.0).await?;
        io.flush().await?;
        self.broken.store(false, Ordering::Release);
        Ok(())
    }

    /// Sends FIN (after the close handshake the server closes the TCP connection first).
    pub(crate) async fn shutdown(&self) {
        let _ = self.io.lock().await.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut v = vec![if fin { FIN } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => v.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&key);
        let mut p = payload.to_vec();
        unmask(&mut p, key);
        v.extend_from_slice(&p);
        v
    }

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Incoming, ReadError>> {
        let mut r = Reader::new(&bytes[..]);
        let mut out = Vec::new();
        loop {
            let item = r.next(max).await;
            // A text message is reported without being read: reading stops there.
            let end = matches!(item, Err(_) | Ok(Incoming::Text));
            out.push(item);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn every_length_form_round_trips_to_a_server_frame() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let bytes = client_frame(true, OP_BINARY, &payload, [1, 2, 3, 4]);
            let got = read_all(bytes, 1 << 20).await;
            let want = OutFrame::binary(&payload);
            assert_eq!(got[0], Ok(Incoming::Binary(want.clone())), "len {len}");
            assert_eq!(want.payload(), &payload[..]);
            assert_eq!(got[1], Err(ReadError::Lost));
        }
    }

    #[tokio::test]
    async fn server_headers_use_the_shortest_length_form() {
        assert_eq!(OutFrame::binary(&[7]).0, vec![0x82, 1, 7]);
        assert_eq!(&OutFrame::binary(&[0; 126]).0[..4], &[0x82, 126, 0, 126]);
        assert_eq!(
            &OutFrame::binary(&[0; 65_536]).0[..10],
            &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(OutFrame::close(Some(1000), "").0, vec![0x88, 2, 3, 0xE8]);
        assert_eq!(OutFrame::close(None, "x").0, vec![0x88, 0]);
        let long = "é".repeat(100);
        let f = OutFrame::close(Some(1001), &long);
        assert_eq!(f.payload().len(), 2 + 122);
        assert!(std::str::from_utf8(&f.payload()[2..]).is_ok());
    }

    #[tokio::test]
    async fn fragments_are_reassembled_and_controls_may_interleave() {
        let mut bytes = client_frame(false, OP_BINARY, b"ab", [9, 9, 9, 9]);
        bytes.extend(client_frame(true, OP_PING, b"hi", [1, 0, 0, 1]));
        bytes.extend(client_frame(false, OP_CONTINUATION, b"cd", [0, 1, 2, 3]));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"e", [5, 5, 5, 5]));
        bytes.extend(client_frame(true, OP_CLOSE, &[3, 0xE8, b'o', b'k'], [2; 4]));
        let got = read_all(bytes, 5).await;
        assert_eq!(got[0], Ok(Incoming::Ping(b"hi".to_vec())));
        assert_eq!(got[1], Ok(Incoming::Binary(OutFrame::binary(b"abcde"))));
        assert_eq!(got[2], Ok(Incoming::Close(Some(1000))));
        // The limit applies to the whole reassembled message.
        let mut bytes = client_frame(false, OP_BINARY, b"abc", [0; 4]);
        bytes.extend(client_frame(true, OP_CONTINUATION, b"def", [0; 4]));
        assert_eq!(read_all(bytes, 5).await[0], Err(ReadError::TooBig));
    }

    #[tokio::test]
    async fn bad_frames_are_typed_errors() {
        let cases: Vec<(Vec<u8>, ReadError)> = vec![
            (
                vec![0x82, 0x01, 0xAA],
                ReadError::Protocol("client frame not masked"),
            ),
            (
                vec![0xC2, 0x80, 0, 0, 0, 0],
                ReadError::Protocol("reserved bits set"),
            ),
            (
                vec![0x83, 0x80, 0, 0, 0, 0],
                ReadError::Protocol("unknown opcode"),
            ),
            (
                vec![0x09, 0x80, 0, 0, 0, 0],
                ReadError::Protocol("fragmented control frame"),
            ),
            (
                vec![0x89, 0xFE, 0, 126],
                ReadError::Protocol("control frame too long"),
            ),
            (
                client_frame(true, OP_CONTINUATION, b"x", [0; 4]),
                ReadError::Protocol("continuation without a message"),
            ),
            (
                client_frame(true, OP_CLOSE, &[3], [0; 4]),
                ReadError::Protocol("close frame of one byte"),
            ),
            (
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ReadError::Protocol("length has its top bit set"),
            ),
            (
                client_frame(true, OP_BINARY, &[0; 11], [0; 4]),
                ReadError::TooBig,
            ),
            (vec![0x82, 0x85, 0, 0], ReadError::Lost),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                read_all(bytes.clone(), 10).await[0],
                Err(want),
                "{bytes:02x?}"
            );
        }
        let mut text = client_frame(true, OP_TEXT, b"hello", [0; 4]);
        text.truncate(2);
        assert_eq!(read_all(text, 10).await[0], Ok(Incoming::Text));
    }

    #[tokio::test]
    async fn reading_is_cancel_safe_one_byte_at_a_time() {
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let bytes = client_frame(true, OP_BINARY, &payload, [7, 6, 5, 4]);
        let (mut tx, rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for b in bytes {
                tx.write_all(&[b]).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut r = Reader::new(rx);
        // Poll with a zero timeout again and again: every cancelled call must lose nothing.
        let got = loop {
            match tokio::time::timeout(std::time::Duration::ZERO, r.next(1000)).await {
                Ok(item) => break item,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        writer.await.unwrap();
        assert_eq!(got, Ok(Incoming::Binary(OutFrame::binary(&payload))));
    }

    #[tokio::test]
    async fn an_interrupted_send_breaks_the_writer() {
        let (tx, _rx) = tokio::io::duplex(4);
        let w = Writer::new(tx);
        let big = OutFrame::binary(&[1; 100]);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), w.send(&big))
                .await
                .is_err()
        );
        assert_eq!(
            w.send(&OutFrame::binary(&[2])).await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
