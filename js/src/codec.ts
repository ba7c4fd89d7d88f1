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
/** The largest stream number (61 bits). */
export const MAX_STREAM_NUM = (1n << 61n) - 1n

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

/**
 * Encodes `frame` for a connection in `mode`: the head (and, for small bodies, the body) in one
 * buffer, and a large body as its own part, never copied. A Reset in plain mode has an empty
 * body; a Reset with code 0 has one in both modes. Extension frames cannot be sent in plain
 * mode.
 */
export function encodeFrame (frame: Frame, mode: Mode): Uint8Array[] {
  const ext = extensionOf(frame)
  if (ext !== undefined) {
    if (mode === 'plain') throw new Error(`${frame.type} does not exist in plain mplex`)
    const opAndSide = ext.op * 2 + ext.side
    const bodyLength = varintLength(opAndSide) + (ext.value === undefined ? 0 : varintLength(ext.value))
    const header = joinHeader(ext.num, Flag.Extension)
    const buf = new Uint8Array(varintLength(header) + varintLength(bodyLength) + bodyLength)
    let at = writeVarint(header, buf, 0)
    at = writeVarint(bodyLength, buf, at)
    at = writeVarint(opAndSide, buf, at)
    if (ext.value !== undefined) writeVarint(ext.value, buf, at)
    return [buf]
  }
  const header = joinHeader((frame as { num: Uint }).num, flagOf(frame))
  let body: Uint8Array | Uint8ArrayList | undefined
  if (frame.type === 'new-stream') body = frame.name
  else if (frame.type === 'message') body = frame.data
  else if (frame.type === 'reset' && mode === 'extension' && frame.code !== 0) body = encodeVarint(frame.code)
  const bodyLength = body?.byteLength ?? 0
  if (bodyLength > MAX_FRAME_BODY) throw new RangeError(`frame body of ${bodyLength} bytes exceeds 1 MiB`)
  const headLength = varintLength(header) + varintLength(bodyLength)
  if (body === undefined || bodyLength > COPY_LIMIT) {
    const head = new Uint8Array(headLength)
    writeVarint(bodyLength, head, writeVarint(header, head, 0))
    if (body === undefined || bodyLength === 0) return [head]
    return body instanceof Uint8Array ? [head, body] : [head, ...body]
  }
  const buf = new Uint8Array(headLength + bodyLength)
  const at = writeVarint(bodyLength, buf, writeVarint(header, buf, 0))
  buf.set(body instanceof Uint8Array ? body : body.subarray(), at)
  return [buf]
}

/** Bodies up to this size are copied behind their head, larger ones are sent as they are. */
const COPY_LIMIT = 8 * 1024

/**
 * Cuts frames out of a byte stream. Feed it chunks with {@link FrameDecoder.push} and take
 * frames with {@link FrameDecoder.next}; {@link FrameDecoder.end} checks that the stream did
 * not end inside a frame.
 *
 * A frame's length is checked from its head, before any of its body is buffered; a body is
 * handed out as a view of the chunks it arrived in (the caller copies what it keeps: a 1-byte
 * frame must not keep a 64 KiB chunk alive). What the decoder holds is the bytes pushed and not
 * yet handed out: at most one frame (1 MiB + 20 bytes) once the caller has taken every frame.
 */
export class FrameDecoder {
  private readonly buffer = new Uint8ArrayList()
  private readonly mode: Mode

  constructor (mode: Mode) {
    this.mode = mode
  }

  /** Bytes held: pushed and not yet handed out. */
  get buffered (): number {
    return this.buffer.byteLength
  }

  /** Appends bytes read from the connection. */
  push (chunk: Uint8Array | Uint8ArrayList): void {
    this.buffer.append(chunk)
  }

  /**
   * The next complete frame, or `undefined` until more bytes arrive. Reserved extension ops
   * are consumed and skipped. Throws a {@link ProtocolViolationError} for bad input.
   */
  next (): Frame | undefined {
    for (;;) {
      const buffer = this.buffer
      const available = buffer.byteLength
      if (available === 0) return undefined
      // Two varints take at most 20 bytes; copy at most that many when the head straddles chunks.
      const first = buffer[Symbol.iterator]().next().value as Uint8Array
      const head = first.byteLength >= 20 || first.byteLength === available
        ? first
        : buffer.subarray(0, Math.min(20, available))
      const header = readVarint(head, 0)
      if (header === undefined) return undefined
      const length = readVarint(head, header.length)
      if (length === undefined) return undefined
      const bodyLength = length.value
      if (typeof bodyLength !== 'number' || bodyLength > MAX_FRAME_BODY) {
        throw new ProtocolViolationError('FrameTooLarge', `frame body of ${bodyLength} bytes exceeds the 1 MiB limit`)
      }
      const { num, flag } = splitHeader(header.value)
      if (flag === Flag.Extension && this.mode === 'plain') {
        throw new ProtocolViolationError('ExtensionFrameInPlainMode', 'extension frame (flag 7) on a plain-mplex connection')
      }
      const headLength = header.length + length.length
      if (available < headLength + bodyLength) return undefined
      const body = buffer.sublist(headLength, headLength + bodyLength)
      buffer.consume(headLength + bodyLength)
      const frame = this.toFrame(num, flag, body)
      if (frame !== undefined) return frame
    }
  }

  /** The stream ended: throws `TruncatedFrame` if it ended inside a frame. */
  end (): void {
    if (this.buffer.byteLength > 0) {
      throw new ProtocolViolationError('TruncatedFrame', 'connection closed in the middle of a frame')
    }
  }

  private toFrame (num: Uint, flag: number, body: Uint8ArrayList): Frame | undefined {
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
        return { type: 'reset', num, initiator: flag === Flag.ResetInitiator, code: this.resetCode(body) }
      default:
        return parseExtension(num, body.subarray())
    }
  }

  private resetCode (body: Uint8ArrayList): Uint {
    // Plain mplex: the body is ignored and the code is 0 (PROTOCOL.md §3).
    if (this.mode === 'plain' || body.byteLength === 0) return 0
    const bytes = body.subarray(0, Math.min(10, body.byteLength))
    let code: VarintRead
    try {
      code = readVarint(bytes, 0)
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
