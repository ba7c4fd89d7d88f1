/**
 * The wire format of PROTOCOL.md §2–4: varints, frame heads, extension bodies, and a streaming
 * decoder that cuts frames out of the bytes as they arrive.
 *
 * Values that fit in 53 bits are JavaScript numbers; larger ones (a peer may use stream numbers
 * up to 2⁶¹ − 1, and codes and nonces up to 2⁶⁴ − 1) are bigints. {@link Uint} is either; no
 * value is ever both, so a `Map` keyed by them never holds one stream twice.
 *
 * @module
 */

import { Uint8ArrayList } from 'uint8arraylist'
import { ProtocolViolationError } from './errors.js'

/** An unsigned integer of up to 64 bits: a number up to 2⁵³ − 1, a bigint above. */
export type Uint = number | bigint

/** The largest frame body (PROTOCOL.md §2). */
export const MAX_FRAME_BODY = 1024 * 1024
/** The largest credit a stream may hold (PROTOCOL.md §6). */
export const MAX_CREDIT = 2 ** 32 - 1

/** The frame flags of PROTOCOL.md §2. */
export const Flag = {
  NewStream: 0,
  MessageReceiver: 1,
  MessageInitiator: 2,
  CloseReceiver: 3,
  CloseInitiator: 4,
  ResetReceiver: 5,
  ResetInitiator: 6,
  Extension: 7
} as const

/** The extension ops of PROTOCOL.md §4. */
export const Op = {
  CloseRead: 0,
  WindowUpdate: 1,
  Ping: 2,
  Pong: 3
} as const

/** Which protocol the connection negotiated (PROTOCOL.md §1). */
export type Mode = 'extension' | 'plain'

/**
 * A frame, as sent or as received. `initiator` is whether the frame's *sender* opened the
 * stream: on receipt, `initiator: true` names a stream the peer opened.
 */
export type Frame =
  | { type: 'new-stream', num: Uint, name: Uint8Array | Uint8ArrayList }
  | { type: 'message', num: Uint, initiator: boolean, data: Uint8Array | Uint8ArrayList }
  | { type: 'close', num: Uint, initiator: boolean }
  | { type: 'reset', num: Uint, initiator: boolean, code: Uint }
  | { type: 'close-read', num: Uint, initiator: boolean, code: Uint }
  | { type: 'window-update', num: Uint, initiator: boolean, credit: number }
  | { type: 'ping', nonce: Uint }
  | { type: 'pong', nonce: Uint }

const SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER)

/** A bigint as a {@link Uint}: a number when it fits. */
export function toUint (value: bigint): Uint {
  return value <= SAFE_BIG ? Number(value) : value
}

/** How many bytes the varint of `value` takes. */
export function varintLength (value: Uint): number {
  if (typeof value === 'number') {
    let len = 1
    while (value >= 128) {
      value = Math.floor(value / 128)
      len++
    }
    return len
  }
  let len = 1
  while (value >= 128n) {
    value >>= 7n
    len++
  }
  return len
}

/** Writes the varint of `value` at `offset`; returns the offset after it. */
export function writeVarint (value: Uint, buf: Uint8Array, offset: number): number {
  if (typeof value === 'number') {
    if (value < 0 || !Number.isInteger(value)) {
      throw new RangeError(`not an unsigned integer: ${value}`)
    }
    while (value >= 128) {
      buf[offset++] = (value % 128) | 0x80
      value = Math.floor(value / 128)
    }
    buf[offset++] = value
    return offset
  }
  if (value < 0n || value >= 1n << 64n) {
    throw new RangeError(`not a 64-bit unsigned integer: ${value}`)
  }
  while (value >= 128n) {
    buf[offset++] = Number(value & 127n) | 0x80
    value >>= 7n
  }
  buf[offset++] = Number(value)
  return offset
}

/** The varint of `value` on its own. */
export function encodeVarint (value: Uint): Uint8Array {
  const buf = new Uint8Array(varintLength(value))
  writeVarint(value, buf, 0)
  return buf
}

/** What {@link readVarint} found: a value and the bytes it took, or too few bytes yet. */
export type VarintRead = { value: Uint, length: number } | undefined

/**
 * Reads a varint from `buf` at `offset`, up to `end`. Returns `undefined` if the bytes end
 * before the varint does (and it could still be valid). Throws a
 * {@link ProtocolViolationError} for a varint of more than 10 bytes, one above 2⁶⁴ − 1
 * (`VarintOverflow`), or one not minimally encoded (`VarintNotMinimal`).
 */
export function readVarint (buf: Uint8Array, offset: number, end: number = buf.length): VarintRead {
  // Fast path: up to 7 bytes (49 bits) in plain arithmetic.
  let value = 0
  let scale = 1
  for (let i = 0; i < 7; i++) {
    if (offset + i >= end) return undefined
    const byte = buf[offset + i]
    value += (byte & 0x7f) * scale
    if ((byte & 0x80) === 0) {
      if (byte === 0 && i > 0) throw notMinimal()
      return { value, length: i + 1 }
    }
    scale *= 128
  }
  let big = BigInt(value)
  for (let i = 7; i < 10; i++) {
    if (offset + i >= end) return undefined
    const byte = buf[offset + i]
    if (i === 9 && byte > 1) {
      throw new ProtocolViolationError('VarintOverflow', 'varint longer than 10 bytes or above 2^64-1')
    }
    big |= BigInt(byte & 0x7f) << BigInt(7 * i)
    if ((byte & 0x80) === 0) {
      if (byte === 0) throw notMinimal()
      return { value: toUint(big), length: i + 1 }
    }
  }
  // Unreachable: the 10th byte either ended the varint or was above 1.
  throw new ProtocolViolationError('VarintOverflow', 'varint longer than 10 bytes or above 2^64-1')
}

function notMinimal (): ProtocolViolationError {
  return new ProtocolViolationError('VarintNotMinimal', 'varint not minimally encoded')
}

/** The 3-bit flag and 61-bit stream number of a header value. */
function splitHeader (header: Uint): { num: Uint, flag: number } {
  if (typeof header === 'number') {
    return { num: Math.floor(header / 8), flag: header % 8 }
  }
  return { num: toUint(header >> 3n), flag: Number(header & 7n) }
}

function joinHeader (num: Uint, flag: number): Uint {
  if (typeof num === 'number' && num < 2 ** 49) return num * 8 + flag
  return (BigInt(num) << 3n) | BigInt(flag)
}

function flagOf (frame: Frame): number {
  switch (frame.type) {
    case 'new-stream': return Flag.NewStream
    case 'message': return frame.initiator ? Flag.MessageInitiator : Flag.MessageReceiver
    case 'close': return frame.initiator ? Flag.CloseInitiator : Flag.CloseReceiver
    case 'reset': return frame.initiator ? Flag.ResetInitiator : Flag.ResetReceiver
    default: return Flag.Extension
  }
}

/** The extension op and payload of a flag-7 frame, or undefined for the other frames. */
function extensionOf (frame: Frame): { num: Uint, side: number, op: number, value?: Uint } | undefined {
  switch (frame.type) {
    case 'close-read': return { num: frame.num, side: frame.initiator ? 1 : 0, op: Op.CloseRead, value: frame.code }
    case 'window-update': return { num: frame.num, side: frame.initiator ? 1 : 0, op: Op.WindowUpdate, value: frame.credit }
    case 'ping': return { num: 0, side: 0, op: Op.Ping, value: frame.nonce }
    case 'pong': return { num: 0, side: 0, op: Op.Pong, value: frame.nonce }
    default: return undefined
  }
}

/** Bodies up to this size are copied behind their head, larger ones are sent as they are. */
const COPY_LIMIT = 8 * 1024
/** A large body in more pieces than this is copied into one buffer when sent. */
const MAX_SENT_PIECES = 8

/** How one frame is laid out: what is written in line (head, small body), and a large body. */
interface Layout {
  header: Uint
  bodyLength: number
  /** Written in line after the head: a small body, or an extension frame's fields. */
  inline: Uint8Array | Uint8ArrayList | { opAndSide: number, value?: Uint } | undefined
  /** A body over {@link COPY_LIMIT}, sent as it is after the head. */
  large: Uint8Array | Uint8ArrayList | undefined
  /** Bytes written in line. */
  size: number
}

function layout (frame: Frame, mode: Mode): Layout {
  const ext = extensionOf(frame)
  if (ext !== undefined) {
    if (mode === 'plain') throw new Error(`${frame.type} does not exist in plain mplex`)
    const opAndSide = ext.op * 2 + ext.side
    const bodyLength = varintLength(opAndSide) + (ext.value === undefined ? 0 : varintLength(ext.value))
    const header = joinHeader(ext.num, Flag.Extension)
    const inline = { opAndSide, value: ext.value }
    return { header, bodyLength, inline, large: undefined, size: varintLength(header) + varintLength(bodyLength) + bodyLength }
  }
  const header = joinHeader((frame as { num: Uint }).num, flagOf(frame))
  let body: Uint8Array | Uint8ArrayList | undefined
  if (frame.type === 'new-stream') body = frame.name
  else if (frame.type === 'message') body = frame.data
  else if (frame.type === 'reset' && mode === 'extension' && frame.code !== 0) body = encodeVarint(frame.code)
  const bodyLength = body?.byteLength ?? 0
  if (bodyLength > MAX_FRAME_BODY) throw new RangeError(`frame body of ${bodyLength} bytes exceeds 1 MiB`)
  const headLength = varintLength(header) + varintLength(bodyLength)
  // A large body goes as it is, unless it is made of many small pieces (many small writes):
  // those are copied together, so that a frame costs its bytes and a few arrays.
  if (bodyLength > COPY_LIMIT && !(body instanceof Uint8ArrayList && morePiecesThan(body, MAX_SENT_PIECES))) return { header, bodyLength, inline: undefined, large: body, size: headLength }
  return { header, bodyLength, inline: body, large: undefined, size: headLength + bodyLength }
}

function morePiecesThan (list: Uint8ArrayList, limit: number): boolean {
  let pieces = 0
  for (const _ of list) if (++pieces > limit) return true
  return false
}

/** Writes the in-line part of `frame` at `at`; returns the offset after it. */
function writeInline (frame: Layout, buf: Uint8Array, at: number): number {
  at = writeVarint(frame.bodyLength, buf, writeVarint(frame.header, buf, at))
  const inline = frame.inline
  if (inline === undefined) return at
  if (inline instanceof Uint8Array) {
    buf.set(inline, at)
    return at + inline.byteLength
  }
  if (inline instanceof Uint8ArrayList) {
    for (const part of inline) {
      buf.set(part, at)
      at += part.byteLength
    }
    return at
  }
  at = writeVarint(inline.opAndSide, buf, at)
  return inline.value === undefined ? at : writeVarint(inline.value, buf, at)
}

/**
 * Encodes `frames`, in order, for one write on a connection in `mode`: heads and small bodies
 * written together into one buffer per run (so that many small frames cost their bytes, not an
 * array each), and each large body handed on as it is, never copied. A Reset in plain mode has
 * an empty body; a Reset with code 0 has one in both modes. Extension frames cannot be sent in
 * plain mode.
 */
export function encodeFrames (frames: Frame[], mode: Mode): Uint8Array[] {
  const layouts = frames.map(frame => layout(frame, mode))
  const out: Uint8Array[] = []
  let start = 0
  while (start < layouts.length) {
    // A run ends with the first frame whose body goes as it is (its head is in the run).
    let end = start
    let size = 0
    do {
      size += layouts[end].size
      end++
    } while (end < layouts.length && layouts[end - 1].large === undefined)
    const buf = new Uint8Array(size)
    let at = 0
    for (let i = start; i < end; i++) at = writeInline(layouts[i], buf, at)
    out.push(buf)
    const large = layouts[end - 1].large
    if (large instanceof Uint8Array) out.push(large)
    else if (large !== undefined) for (const piece of large) out.push(piece)
    start = end
  }
  return out
}

/** {@link encodeFrames} for one frame: the head (and a small body) in one buffer, then a large body. */
export function encodeFrame (frame: Frame, mode: Mode): Uint8Array[] {
  return encodeFrames([frame], mode)
}

/** A frame whose body is still arriving: as views of its pieces, or copied into `buf`. */
interface PendingBody {
  num: Uint
  flag: number
  length: number
  pieces: Uint8Array[]
  buf: Uint8Array | undefined
  fill: number
}

/** The largest head: two varints of 10 bytes. */
const MAX_HEAD = 20
/** The first size of a buffer for a body that arrives in pieces, and its least growth. */
const BODY_STEP = 64 * 1024
/** A body in at most this many pieces is handed out as views of them. */
const MAX_BODY_PIECES = 8

/**
 * Cuts frames out of a byte stream. Feed it chunks with {@link FrameDecoder.push} and take
 * frames with {@link FrameDecoder.next}; {@link FrameDecoder.end} checks that the stream did
 * not end inside a frame.
 *
 * Chunks are parsed as frames are asked for, one frame at a time, in time linear in their
 * length however the peer cuts the stream (a frame of 1 MiB in 1-byte pieces costs 1 MiB of
 * copying, not a million array shifts); a chunk of a million tiny frames costs no memory per
 * frame until each is taken, so a caller that stops taking frames holds only the chunk.
 * A frame's length is checked from its head, before any of its body is buffered. A body that
 * lies whole in one chunk is handed out as a view of it (the caller copies what it keeps: a
 * 1-byte frame must not keep a 64 KiB chunk alive); one that arrives in a few pieces (a 64 KiB
 * frame across two noise messages) as a list of views of them, not copied; one that arrives in
 * more pieces than {@link MAX_BODY_PIECES} is copied into a buffer of its own that grows as the
 * body arrives, never on the peer's word alone (at most {@link BODY_STEP} ahead of it), and ends
 * exactly the body's size. What the decoder holds beyond the frames not yet taken is at most one
 * frame (1 MiB + 20 bytes), or the chunks of its few pieces.
 *
 * An error in the stream is reported by `next()` once the frames before it were taken.
 */
export class FrameDecoder {
  private readonly mode: Mode
  /** Head bytes of the next frame, while fewer than a whole head arrived. */
  private readonly headBytes = new Uint8Array(MAX_HEAD)
  private headFill = 0
  /** A frame whose body is arriving in pieces. */
  private body: PendingBody | undefined
  /** Chunks pushed, parsed up to `input[inputIndex]` at `inputOffset`. */
  private input: Uint8Array[] = []
  private inputIndex = 0
  private inputOffset = 0
  /** The frame the parse just completed. */
  private ready: Frame | undefined
  private error: ProtocolViolationError | undefined

  constructor (mode: Mode) {
    this.mode = mode
  }

  /** Appends bytes read from the connection. */
  push (chunk: Uint8Array | Uint8ArrayList): void {
    if (this.error !== undefined) return
    if (chunk instanceof Uint8Array) {
      if (chunk.byteLength > 0) this.input.push(chunk)
    } else {
      for (const part of chunk) if (part.byteLength > 0) this.input.push(part)
    }
  }

  /**
   * The next complete frame, or `undefined` until more bytes arrive. Reserved extension ops
   * are skipped. Throws a {@link ProtocolViolationError} for bad input, after the frames
   * before it.
   */
  next (): Frame | undefined {
    if (this.error !== undefined) throw this.error
    while (this.inputIndex < this.input.length) {
      const chunk = this.input[this.inputIndex]
      try {
        this.inputOffset = this.parse(chunk, this.inputOffset)
      } catch (e) {
        if (e instanceof ProtocolViolationError) {
          this.error = e
          this.input = []
          this.inputIndex = 0
        }
        throw e
      }
      if (this.inputOffset >= chunk.byteLength) {
        this.inputIndex++
        this.inputOffset = 0
      }
      const frame = this.ready
      if (frame !== undefined) {
        this.ready = undefined
        if (this.inputIndex >= 64 && 2 * this.inputIndex >= this.input.length) {
          this.input.splice(0, this.inputIndex)
          this.inputIndex = 0
        }
        return frame
      }
    }
    this.input = []
    this.inputIndex = 0
    return undefined
  }

  /**
   * The stream ended: throws `TruncatedFrame` if it ended inside a frame (frames not yet taken
   * are dropped).
   */
  end (): void {
    while (this.next() !== undefined) {}
    if (this.headFill > 0 || this.body !== undefined) {
      throw new ProtocolViolationError('TruncatedFrame', 'connection closed in the middle of a frame')
    }
  }

  /** Parses `chunk` from `at` until a frame is ready or the chunk ends; returns where it got. */
  private parse (chunk: Uint8Array, at: number): number {
    while (at < chunk.byteLength && this.ready === undefined) {
      const body = this.body
      if (body !== undefined) {
        at += this.fillBody(body, chunk, at)
        continue
      }
      // A head: from the chunk itself when no head bytes wait, else gathered first.
      let bytes: Uint8Array
      let from: number
      if (this.headFill === 0) {
        bytes = chunk
        from = at
      } else {
        const take = Math.min(MAX_HEAD - this.headFill, chunk.byteLength - at)
        this.headBytes.set(chunk.subarray(at, at + take), this.headFill)
        bytes = this.headBytes.subarray(0, this.headFill + take)
        from = 0
      }
      const head = this.readHead(bytes, from)
      if (head === undefined) {
        // Incomplete: keep what there is of the head (at most 20 bytes: a longer varint is an
        // error already).
        if (this.headFill === 0) {
          this.headBytes.set(chunk.subarray(at), 0)
          this.headFill = chunk.byteLength - at
        } else {
          this.headFill = bytes.byteLength
        }
        return chunk.byteLength
      }
      // Where the body starts in this chunk.
      const bodyStart = this.headFill === 0 ? at + head.headLength : at + head.headLength - this.headFill
      this.headFill = 0
      at = bodyStart
      if (chunk.byteLength - at >= head.bodyLength) {
        this.emit(head.num, head.flag, chunk.subarray(at, at + head.bodyLength))
        at += head.bodyLength
      } else {
        this.body = { num: head.num, flag: head.flag, length: head.bodyLength, pieces: [], buf: undefined, fill: 0 }
      }
    }
    return at
  }

  /** Takes what `chunk` has of the body from `at`; returns how many bytes it took. */
  private fillBody (body: PendingBody, chunk: Uint8Array, at: number): number {
    const take = Math.min(body.length - body.fill, chunk.byteLength - at)
    const piece = chunk.subarray(at, at + take)
    if (body.buf === undefined && body.pieces.length < MAX_BODY_PIECES) {
      body.pieces.push(piece)
    } else {
      if (body.buf === undefined) {
        // Too many pieces to keep as views: copy them, and what follows, into one buffer.
        body.buf = new Uint8Array(Math.min(body.length, body.fill + BODY_STEP))
        let filled = 0
        for (const p of body.pieces) {
          body.buf.set(p, filled)
          filled += p.byteLength
        }
        body.pieces = []
      }
      if (body.fill + take > body.buf.byteLength) {
        // Grow as the body arrives: to twice what arrived, at least a step more, at most its size.
        const size = Math.min(body.length, Math.max(2 * (body.fill + take), body.fill + take + BODY_STEP))
        const grown = new Uint8Array(size)
        grown.set(body.buf.subarray(0, body.fill))
        body.buf = grown
      }
      body.buf.set(piece, body.fill)
    }
    body.fill += take
    if (body.fill === body.length) {
      this.body = undefined
      this.emit(body.num, body.flag, body.buf ?? new Uint8ArrayList(...body.pieces))
    }
    return take
  }

  private readHead (bytes: Uint8Array, from: number): { num: Uint, flag: number, headLength: number, bodyLength: number } | undefined {
    const header = readVarint(bytes, from)
    if (header === undefined) return undefined
    const length = readVarint(bytes, from + header.length)
    if (length === undefined) return undefined
    const bodyLength = length.value
    if (typeof bodyLength !== 'number' || bodyLength > MAX_FRAME_BODY) {
      throw new ProtocolViolationError('FrameTooLarge', `frame body of ${bodyLength} bytes exceeds the 1 MiB limit`)
    }
    const { num, flag } = splitHeader(header.value)
    if (flag === Flag.Extension && this.mode === 'plain') {
      throw new ProtocolViolationError('ExtensionFrameInPlainMode', 'extension frame (flag 7) on a plain-mplex connection')
    }
    return { num, flag, headLength: header.length + length.length, bodyLength }
  }

  private emit (num: Uint, flag: number, body: Uint8Array | Uint8ArrayList): void {
    this.ready = this.toFrame(num, flag, body)
  }

  private toFrame (num: Uint, flag: number, body: Uint8Array | Uint8ArrayList): Frame | undefined {
    switch (flag) {
      case Flag.NewStream: return { type: 'new-stream', num, name: body }
      case Flag.MessageReceiver:
      case Flag.MessageInitiator:
        return { type: 'message', num, initiator: flag === Flag.MessageInitiator, data: body }
      case Flag.CloseReceiver:
      case Flag.CloseInitiator:
        return { type: 'close', num, initiator: flag === Flag.CloseInitiator }
      case Flag.ResetReceiver:
      case Flag.ResetInitiator:
        return { type: 'reset', num, initiator: flag === Flag.ResetInitiator, code: this.resetCode(body.subarray()) }
      default:
        return parseExtension(num, body.subarray())
    }
  }

  private resetCode (body: Uint8Array): Uint {
    // Plain mplex: the body is ignored and the code is 0 (PROTOCOL.md §3).
    if (this.mode === 'plain' || body.byteLength === 0) return 0
    let code: VarintRead
    try {
      code = readVarint(body, 0)
    } catch {
      code = undefined
    }
    if (code === undefined) {
      throw new ProtocolViolationError('MalformedResetCode', 'malformed reset code in Reset frame')
    }
    return code.value
  }
}

/**
 * Parses a flag-7 body (PROTOCOL.md §4); `undefined` for a reserved op. A body that ends before
 * its op or a required field is `MalformedExtension`; an invalid varint in it is the varint's
 * own violation (`VarintOverflow`, `VarintNotMinimal`), as in the Rust implementation.
 */
export function parseExtension (num: Uint, body: Uint8Array): Frame | undefined {
  const field = (at: number, what: string): { value: Uint, length: number } => {
    const read = readVarint(body, at)
    if (read === undefined) {
      throw new ProtocolViolationError('MalformedExtension', `malformed extension frame: ${what}`)
    }
    return read
  }
  const opAndSide = field(0, 'missing op')
  // An op beyond 2^52 is reserved like any op from 4 up.
  const value = opAndSide.value
  const initiator = typeof value === 'number' ? value % 2 === 1 : (value & 1n) === 1n
  const op = typeof value === 'number' ? Math.floor(value / 2) : Number.MAX_SAFE_INTEGER
  const at = opAndSide.length
  const rest = at < body.byteLength
  switch (op) {
    case Op.CloseRead:
      return { type: 'close-read', num, initiator, code: rest ? field(at, 'close-read code').value : 0 }
    case Op.WindowUpdate: {
      const credit = field(at, 'window update without credit').value
      if (credit === 0) {
        throw new ProtocolViolationError('MalformedExtension', 'malformed extension frame: window update of 0 bytes')
      }
      // Credit above 2^53 overflows any stream's window all the same: the stream reports it.
      return { type: 'window-update', num, initiator, credit: typeof credit === 'number' ? credit : Number.MAX_SAFE_INTEGER }
    }
    case Op.Ping:
      return { type: 'ping', nonce: field(at, 'ping without nonce').value }
    case Op.Pong:
      return { type: 'pong', nonce: field(at, 'pong without nonce').value }
    default:
      return undefined
  }
}
