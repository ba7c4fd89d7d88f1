//! Frames <-> bytes. The only place that knows about varints and flag numbers.
//!
//! Layout (see `PROTOCOL.md`): `uvarint(stream_num << 3 | flag)`, `uvarint(body_len)`, body.

use asynchronous_codec::{Decoder, Encoder};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use unsigned_varint::encode;

use crate::{
    error::{ConnectionError, ProtocolViolation},
    frame::{Frame, MAX_FRAME_BODY, Mode, StreamId},
};

const FLAG_NEW_STREAM: u64 = 0;
const FLAG_MESSAGE_RECEIVER: u64 = 1;
const FLAG_MESSAGE_INITIATOR: u64 = 2;
const FLAG_CLOSE_RECEIVER: u64 = 3;
const FLAG_CLOSE_INITIATOR: u64 = 4;
const FLAG_RESET_RECEIVER: u64 = 5;
const FLAG_RESET_INITIATOR: u64 = 6;
const FLAG_EXTENSION: u64 = 7;

const OP_CLOSE_READ: u64 = 0;
const OP_WINDOW_UPDATE: u64 = 1;
const OP_PING: u64 = 2;
const OP_PONG: u64 = 3;

/// Encodes and decodes frames for one connection in one [`Mode`], as an
/// `asynchronous_codec` `Encoder` and `Decoder`.
///
/// # Errors
///
/// Decoding fails with [`ConnectionError::ProtocolViolation`] on bytes that are not a frame of
/// this mode: a varint longer than 10 bytes or not minimal, a body longer than
/// [`MAX_FRAME_BODY`] (before any of it is read), flag 7 in plain-mplex mode, a malformed
/// extension body, or a frame cut short at EOF. Nothing is buffered for a claimed length: the
/// decoder waits for bytes as they come. Encoding never fails. A decoded frame's stream id is
/// already in the receiver's view (see [`Frame::as_seen_by_peer`]).
#[derive(Debug, Clone)]
pub struct Codec {
    mode: Mode,
}

impl Codec {
    /// A codec for a connection in `mode`.
    pub fn new(mode: Mode) -> Self {
        Self { mode }
    }
}

/// The most bytes a varint of a 64-bit value takes.
const MAX_VARINT_LEN: usize = 10;

/// Why a varint is not a valid one.
fn varint_violation(kind: VarintError) -> ProtocolViolation {
    match kind {
        VarintError::Overflow => ProtocolViolation::VarintOverflow,
        VarintError::NotMinimal => ProtocolViolation::VarintNotMinimal,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VarintError {
    Overflow,
    NotMinimal,
}

/// Decodes the unsigned LEB128 varint at the front of `buf`: its value and length, or `None`
/// if `buf` ends before it does.
///
/// Written here rather than taken from `unsigned-varint`, whose 0.8 decoder accepts a tenth
/// byte above 1 and drops its high bits (`ff ff ff ff ff ff ff ff ff 02` decodes as 2^63 - 1,
/// and `80 80 80 80 80 80 80 80 80 02`, 2^64, as 0). Here the tenth byte may only be 0 or 1,
/// which is what fits in 64 bits: anything else, a continuation bit included, is an overflow as
/// soon as that byte is seen. A last byte of 0 after others is a non-minimal encoding.
fn decode_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, VarintError> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(VarintError::Overflow);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(VarintError::NotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Ok(None)
}

/// Reads one varint from the front of `buf`: `Ok(None)` if more bytes are needed.
fn peek_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, ProtocolViolation> {
    decode_varint(buf).map_err(varint_violation)
}

/// Reads one complete varint from a frame body.
fn body_varint(body: &mut Bytes, what: &'static str) -> Result<u64, ProtocolViolation> {
    match decode_varint(body).map_err(varint_violation)? {
        Some((value, used)) => {
            body.advance(used);
            Ok(value)
        }
        None => Err(ProtocolViolation::MalformedExtension(what)),
    }
}

/// An optional trailing error code: absent means 0.
fn optional_code(body: &mut Bytes, what: &'static str) -> Result<u64, ProtocolViolation> {
    if body.is_empty() {
        Ok(0)
    } else {
        body_varint(body, what)
    }
}

/// The stream id as we see it, given the wire number and whether the sender opened the stream.
fn received_id(num: u64, sender_is_initiator: bool) -> StreamId {
    if sender_is_initiator {
        StreamId::remote(num)
    } else {
        StreamId::local(num)
    }
}

impl Codec {
    fn parse(&self, header: u64, mut body: Bytes) -> Result<Frame, ProtocolViolation> {
        let num = header >> 3;
        let frame = match header & 7 {
            FLAG_NEW_STREAM => Frame::NewStream {
                id: StreamId::remote(num),
                name: body,
            },
            FLAG_MESSAGE_RECEIVER => Frame::Data {
                id: StreamId::local(num),
                data: body,
            },
            FLAG_MESSAGE_INITIATOR => Frame::Data {
                id: StreamId::remote(num),
                data: body,
            },
            FLAG_CLOSE_RECEIVER => Frame::Close {
                id: StreamId::local(num),
            },
            FLAG_CLOSE_INITIATOR => Frame::Close {
                id: StreamId::remote(num),
            },
            flag @ (FLAG_RESET_RECEIVER | FLAG_RESET_INITIATOR) => {
                let id = received_id(num, flag == FLAG_RESET_INITIATOR);
                let code = match self.mode {
                    // Plain mplex Resets are empty; tolerate a body from lenient peers.
                    Mode::PlainMplex => 0,
                    Mode::Extension => optional_code(&mut body, "reset code")
                        .map_err(|_| ProtocolViolation::MalformedResetCode)?,
                };
                Frame::Reset { id, code }
            }
            _ => {
                if self.mode == Mode::PlainMplex {
                    return Err(ProtocolViolation::ExtensionFrameInPlainMode);
                }
                let op_and_side = body_varint(&mut body, "missing op")?;
                let id = received_id(num, op_and_side & 1 == 1);
                match op_and_side >> 1 {
                    OP_CLOSE_READ => Frame::CloseRead {
                        id,
                        code: optional_code(&mut body, "close-read code")?,
                    },
                    OP_WINDOW_UPDATE => {
                        let credit = body_varint(&mut body, "window update without credit")?;
                        if credit == 0 {
                            return Err(ProtocolViolation::MalformedExtension(
                                "window update of 0 bytes",
                            ));
                        }
                        Frame::WindowUpdate { id, credit }
                    }
                    // About the connection: the stream number and side are ignored.
                    OP_PING => Frame::Ping {
                        nonce: body_varint(&mut body, "ping without nonce")?,
                    },
                    OP_PONG => Frame::Pong {
                        nonce: body_varint(&mut body, "pong without nonce")?,
                    },
                    op => Frame::UnknownExtension { id, op },
                }
            }
        };
        Ok(frame)
    }
}

/// The start of a frame: its header varint and the length of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    /// `stream_num << 3 | flag`.
    header: u64,
    /// Bytes taken by the two varints.
    pub(crate) head_len: usize,
    /// The body length, at most [`MAX_FRAME_BODY`].
    pub(crate) body_len: usize,
}

impl FrameHead {
    /// Head and body together.
    pub(crate) fn frame_len(&self) -> usize {
        self.head_len + self.body_len
    }
}

impl Codec {
    /// Reads the head of the frame at the front of `buf`: `Ok(None)` if more bytes are needed.
    /// A body over 1 MiB is an error as soon as its length is read, before any of it arrives.
    pub(crate) fn decode_head(&self, buf: &[u8]) -> Result<Option<FrameHead>, ProtocolViolation> {
        let Some((header, header_len)) = peek_varint(buf)? else {
            return Ok(None);
        };
        let Some((len, len_len)) = peek_varint(&buf[header_len..])? else {
            return Ok(None);
        };
        if len > MAX_FRAME_BODY as u64 {
            return Err(ProtocolViolation::FrameTooLarge { len });
        }
        Ok(Some(FrameHead {
            header,
            head_len: header_len + len_len,
            body_len: len as usize,
        }))
    }

    /// The frame with head `head` and body `body` (exactly `head.body_len` bytes).
    pub(crate) fn decode_body(
        &self,
        head: FrameHead,
        body: Bytes,
    ) -> Result<Frame, ProtocolViolation> {
        debug_assert_eq!(body.len(), head.body_len);
        self.parse(head.header, body)
    }
}

impl Decoder for Codec {
    type Item = Frame;
    type Error = ConnectionError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ConnectionError> {
        let Some(head) = self.decode_head(src)? else {
            return Ok(None);
        };
        if src.len() < head.frame_len() {
            // Nothing is reserved for the claimed length: the caller reads more as it comes.
            return Ok(None);
        }
        src.advance(head.head_len);
        let body = src.split_to(head.body_len).freeze();
        Ok(Some(self.decode_body(head, body)?))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ConnectionError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtocolViolation::TruncatedFrame.into()),
        }
    }
}

fn put_varint(dst: &mut BytesMut, value: u64) {
    dst.put_slice(encode::u64(value, &mut encode::u64_buffer()));
}

fn varint_len(value: u64) -> usize {
    encode::u64(value, &mut encode::u64_buffer()).len()
}

/// `flag` for a frame we send: the receiver variant if the peer opened the stream.
fn sent_flag(id: StreamId, receiver_flag: u64) -> u64 {
    match id.opener() {
        crate::frame::Opener::Local => receiver_flag + 1,
        crate::frame::Opener::Remote => receiver_flag,
    }
}

fn sender_is_initiator(id: StreamId) -> u64 {
    u64::from(id.opener() == crate::frame::Opener::Local)
}

impl Codec {
    fn put_frame(dst: &mut BytesMut, id: StreamId, flag: u64, body: &[u8]) {
        dst.reserve(20 + body.len());
        Self::put_head(dst, id, flag, body.len());
        dst.put_slice(body);
    }

    /// The two varints in front of a body of `body_len` bytes (at most 20 bytes).
    fn put_head(dst: &mut BytesMut, id: StreamId, flag: u64, body_len: usize) {
        put_varint(dst, (id.num() << 3) | flag);
        put_varint(dst, body_len as u64);
    }

    /// Encodes `frame` into `dst`, except the body of a Data frame longer than `copy_limit`:
    /// that body is returned, for the caller to send right after `dst`'s bytes without copying.
    pub(crate) fn encode_split(
        &mut self,
        frame: Frame,
        dst: &mut BytesMut,
        copy_limit: usize,
    ) -> Option<Bytes> {
        match frame {
            Frame::Data { id, data } if data.len() > copy_limit => {
                debug_assert!(data.len() <= MAX_FRAME_BODY);
                dst.reserve(20);
                Self::put_head(dst, id, sent_flag(id, FLAG_MESSAGE_RECEIVER), data.len());
                Some(data)
            }
            frame => {
                self.put(frame, dst);
                None
            }
        }
    }

    fn put_extension(dst: &mut BytesMut, id: StreamId, op: u64, value: Option<u64>) {
        Self::put_extension_raw(dst, id.num(), (op << 1) | sender_is_initiator(id), value);
    }

    /// A frame about the connection: stream number 0, side bit 0.
    fn put_connection_extension(dst: &mut BytesMut, op: u64, value: u64) {
        Self::put_extension_raw(dst, 0, op << 1, Some(value));
    }

    fn put_extension_raw(dst: &mut BytesMut, num: u64, op_and_side: u64, value: Option<u64>) {
        let len = varint_len(op_and_side) + value.map_or(0, varint_len);
        dst.reserve(30);
        put_varint(dst, (num << 3) | FLAG_EXTENSION);
        put_varint(dst, len as u64);
        put_varint(dst, op_and_side);
        if let Some(value) = value {
            put_varint(dst, value);
        }
    }
}

impl Encoder for Codec {
    type Item<'a> = Frame;
    type Error = ConnectionError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ConnectionError> {
        self.put(frame, dst);
        Ok(())
    }
}

impl Codec {
    fn put(&self, frame: Frame, dst: &mut BytesMut) {
        match frame {
            Frame::NewStream { id, name } => Self::put_frame(dst, id, FLAG_NEW_STREAM, &name),
            Frame::Data { id, data } => {
                debug_assert!(data.len() <= MAX_FRAME_BODY);
                Self::put_frame(dst, id, sent_flag(id, FLAG_MESSAGE_RECEIVER), &data)
            }
            Frame::Close { id } => {
                Self::put_frame(dst, id, sent_flag(id, FLAG_CLOSE_RECEIVER), &[])
            }
            Frame::Reset { id, code } => {
                let flag = sent_flag(id, FLAG_RESET_RECEIVER);
                if code == 0 || self.mode == Mode::PlainMplex {
                    Self::put_frame(dst, id, flag, &[]);
                } else {
                    let mut buf = encode::u64_buffer();
                    Self::put_frame(dst, id, flag, encode::u64(code, &mut buf));
                }
            }
            Frame::CloseRead { id, code } => {
                debug_assert_eq!(self.mode, Mode::Extension);
                let code = (code != 0).then_some(code);
                Self::put_extension(dst, id, OP_CLOSE_READ, code)
            }
            Frame::WindowUpdate { id, credit } => {
                debug_assert_eq!(self.mode, Mode::Extension);
                Self::put_extension(dst, id, OP_WINDOW_UPDATE, Some(credit))
            }
            Frame::Ping { nonce } => {
                debug_assert_eq!(self.mode, Mode::Extension);
                Self::put_connection_extension(dst, OP_PING, nonce)
            }
            Frame::Pong { nonce } => {
                debug_assert_eq!(self.mode, Mode::Extension);
                Self::put_connection_extension(dst, OP_PONG, nonce)
            }
            Frame::UnknownExtension { id, op } => Self::put_extension(dst, id, op, None),
        }
    }
}
