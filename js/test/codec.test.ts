/**
 * The codec against PROTOCOL.md §2–4: varints differentially against a bigint reference, frame
 * round trips whatever the chunking, and every malformed input with its named violation.
 */

import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Uint8ArrayList } from 'uint8arraylist'
import {
  encodeFrame, encodeFrames, encodeVarint, FrameDecoder, MAX_FRAME_BODY, readVarint, type Frame, type Mode, type Uint
} from '../src/codec.js'
import { ProtocolViolationError } from '../src/errors.js'

/** The reference: LEB128 in bigints, with the rules of PROTOCOL.md §2 spelled out. */
function referenceVarint (bytes: number[]): { value: bigint, length: number } | 'incomplete' | 'VarintOverflow' | 'VarintNotMinimal' {
  let value = 0n
  for (let i = 0; i < bytes.length; i++) {
    if (i === 10) return 'VarintOverflow'
    value |= BigInt(bytes[i] & 0x7f) << BigInt(7 * i)
    if ((bytes[i] & 0x80) === 0) {
      if (value >= 1n << 64n) return 'VarintOverflow'
      if (i > 0 && bytes[i] === 0) return 'VarintNotMinimal'
      return { value, length: i + 1 }
    }
  }
  return bytes.length >= 10 ? 'VarintOverflow' : 'incomplete'
}

function ours (bytes: number[]): ReturnType<typeof referenceVarint> {
  try {
    const read = readVarint(Uint8Array.from(bytes), 0)
    if (read === undefined) return 'incomplete'
    return { value: BigInt(read.value), length: read.length }
  } catch (e) {
    assert.ok(e instanceof ProtocolViolationError)
    return e.kind as 'VarintOverflow' | 'VarintNotMinimal'
  }
}

function kindOf (fn: () => unknown): string {
  try {
    fn()
  } catch (e) {
    assert.ok(e instanceof ProtocolViolationError, `not a protocol violation: ${String(e)}`)
    assert.equal(e.name, `${e.kind}Error`)
    return e.kind
  }
  return 'no error'
}

/** A deterministic generator, so that a failure repeats. */
function rng (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0
    return state / 2 ** 32
  }
}

describe('varints', () => {
  it('decode as the reference does on every edge input: each length, each boundary, each last byte', () => {
    let checked = 0
    const edgeBytes = [0x00, 0x01, 0x02, 0x7e, 0x7f, 0x80, 0x81, 0xfe, 0xff]
    // Every prefix of continuation bytes followed by every last byte, lengths 1 to 11.
    for (let len = 1; len <= 11; len++) {
      for (const fill of edgeBytes) {
        for (let last = 0; last < 256; last++) {
          const bytes = [...Array(len - 1).fill(fill | 0x80), last]
          assert.deepEqual(ours(bytes), referenceVarint(bytes), `bytes ${bytes}`)
          checked++
        }
      }
    }
    // Random byte strings biased to the edges.
    const next = rng(1)
    for (let n = 0; n < 200_000; n++) {
      const len = Math.floor(next() * 13)
      const bytes = Array.from({ length: len }, () => next() < 0.5 ? edgeBytes[Math.floor(next() * edgeBytes.length)] : Math.floor(next() * 256))
      assert.deepEqual(ours(bytes), referenceVarint(bytes), `bytes ${bytes}`)
      checked++
    }
    assert.ok(checked > 220_000)
  })

  it('round-trip every power-of-two boundary up to 2^64 - 1, as numbers below 2^53 and bigints above', () => {
    for (let bits = 0; bits <= 64; bits++) {
      for (const delta of [-1n, 0n, 1n]) {
        const big = (1n << BigInt(bits)) + delta
        if (big < 0n || big >= 1n << 64n) continue
        const value: Uint = big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big
        const bytes = encodeVarint(value)
        const read = readVarint(bytes, 0)
        assert.deepEqual(read, { value, length: bytes.length })
        assert.equal(typeof read?.value, big <= BigInt(Number.MAX_SAFE_INTEGER) ? 'number' : 'bigint')
      }
    }
    assert.equal(encodeVarint((1n << 64n) - 1n).length, 10)
    assert.throws(() => encodeVarint(1n << 64n), RangeError)
    assert.throws(() => encodeVarint(-1), RangeError)
  })
})

function decodeAll (bytes: Uint8Array, mode: Mode, chunk: number): Frame[] {
  const decoder = new FrameDecoder(mode)
  const frames: Frame[] = []
  for (let at = 0; at < bytes.length; at += chunk) {
    decoder.push(bytes.subarray(at, Math.min(bytes.length, at + chunk)))
    for (let frame = decoder.next(); frame !== undefined; frame = decoder.next()) frames.push(frame)
  }
  decoder.end()
  return frames
}

function concat (parts: Uint8Array[]): Uint8Array {
  return new Uint8ArrayList(...parts).subarray()
}

/** A frame with its bodies as base64 strings, to compare (fast for 1 MiB bodies). */
function plain (frame: Frame): unknown {
  const out: Record<string, unknown> = { ...frame }
  for (const key of ['name', 'data']) {
    const v = out[key] as Uint8Array | Uint8ArrayList | undefined
    if (v !== undefined) out[key] = Buffer.from(v instanceof Uint8Array ? v : v.subarray()).toString('base64')
  }
  return out
}

describe('frames', () => {
  const body = (len: number): Uint8Array => Uint8Array.from({ length: len }, (_, i) => (i * 31) & 0xff)
  const big = (1n << 61n) - 1n
  const extension: Frame[] = [
    { type: 'new-stream', num: 0, name: new TextEncoder().encode('0') },
    { type: 'new-stream', num: big, name: new Uint8Array() },
    { type: 'message', num: 7, initiator: true, data: body(1) },
    { type: 'message', num: 7, initiator: false, data: body(8 * 1024) },
    { type: 'message', num: 2 ** 40, initiator: false, data: body(8 * 1024 + 1) },
    { type: 'message', num: 3, initiator: true, data: body(MAX_FRAME_BODY) },
    { type: 'close', num: 1, initiator: true },
    { type: 'close', num: big, initiator: false },
    { type: 'reset', num: 5, initiator: true, code: 0 },
    { type: 'reset', num: 5, initiator: false, code: (1n << 64n) - 1n },
    { type: 'close-read', num: 9, initiator: false, code: 0 },
    { type: 'close-read', num: 9, initiator: true, code: 42 },
    { type: 'window-update', num: 4, initiator: true, credit: 2 ** 32 - 1 },
    { type: 'ping', nonce: 0 },
    { type: 'pong', nonce: 2n ** 63n }
  ]

  it('round-trip in extension mode whatever the chunking', () => {
    const bytes = concat(extension.flatMap(f => encodeFrame(f, 'extension')))
    // Byte by byte too: the 1 MiB body then arrives in a million pieces, which must cost a
    // copy each, not a pass over what is buffered (a quadratic decoder would not finish).
    for (const chunk of [1, 2, 3, 7, 20, 4096, 65_537, bytes.length]) {
      assert.deepEqual(decodeAll(bytes, 'extension', chunk).map(plain), extension.map(plain), `chunks of ${chunk}`)
    }
  })

  it('round-trip in plain mode, where a Reset carries no code', () => {
    const frames = extension.filter(f => ['new-stream', 'message', 'close', 'reset'].includes(f.type))
    const bytes = concat(frames.flatMap(f => encodeFrame(f, 'plain')))
    const expected = frames.map(f => f.type === 'reset' ? { ...f, code: 0 } : f)
    assert.deepEqual(decodeAll(bytes, 'plain', 5).map(plain), expected.map(plain))
    assert.throws(() => encodeFrame({ type: 'ping', nonce: 1 }, 'plain'))
  })

  it('encode the bytes mplex peers send', () => {
    // NewStream "0" on stream 0; Message from the initiator of stream 1; Close from the receiver.
    assert.deepEqual(concat(encodeFrame(extension[0], 'plain')), Uint8Array.from([0x00, 0x01, 0x30]))
    assert.deepEqual(concat(encodeFrame({ type: 'message', num: 1, initiator: true, data: Uint8Array.from([9]) }, 'plain')), Uint8Array.from([0x0a, 0x01, 0x09]))
    assert.deepEqual(concat(encodeFrame({ type: 'close', num: 1, initiator: false }, 'plain')), Uint8Array.from([0x0b, 0x00]))
    // A Reset with code 0 is empty in both modes; CloseRead with code 0 from the initiator.
    assert.deepEqual(concat(encodeFrame({ type: 'reset', num: 2, initiator: true, code: 0 }, 'extension')), Uint8Array.from([0x16, 0x00]))
    assert.deepEqual(concat(encodeFrame({ type: 'close-read', num: 2, initiator: true, code: 0 }, 'extension')), Uint8Array.from([0x17, 0x02, 0x01, 0x00]))
  })

  it('encode a batch of frames as the frames one by one, small ones in one buffer per run', () => {
    const big = body(8 * 1024 + 1)
    const batch: Frame[] = [
      ...Array.from({ length: 1000 }, (_, nonce) => ({ type: 'pong', nonce }) as Frame),
      { type: 'message', num: 1, initiator: true, data: big },
      { type: 'close', num: 1, initiator: true },
      { type: 'message', num: 2, initiator: false, data: new Uint8ArrayList(body(3), body(4)) }
    ]
    const parts = encodeFrames(batch, 'extension')
    // The 1,000 Pongs and the large frame's head; its body as it is; the Close and the small Message.
    assert.equal(parts.length, 3)
    assert.equal(parts[1], big)
    assert.deepEqual(concat(parts), concat(batch.flatMap(f => encodeFrame(f, 'extension'))))
  })

  it('send a large body as its own part, not copied', () => {
    const data = body(8 * 1024 + 1)
    const parts = encodeFrame({ type: 'message', num: 1, initiator: true, data }, 'extension')
    assert.equal(parts.length, 2)
    assert.equal(parts[1], data)
  })
})

describe('malformed input', () => {
  const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b)
  const decode = (input: Uint8Array, mode: Mode = 'extension'): Frame[] => decodeAll(input, mode, input.length)

  it('a frame over 1 MiB is refused from its head alone', () => {
    const head = concat([encodeVarint(2 * 8 + 2), encodeVarint(MAX_FRAME_BODY + 1)])
    const decoder = new FrameDecoder('extension')
    decoder.push(head)
    assert.equal(kindOf(() => decoder.next()), 'FrameTooLarge')
    assert.equal(kindOf(() => decode(concat([bytes(0x02), encodeVarint((1n << 64n) - 1n)]))), 'FrameTooLarge')
  })

  it('varints that overflow or are not minimal, in the header, the length and extension fields', () => {
    assert.equal(kindOf(() => decode(bytes(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 0x00))), 'VarintOverflow')
    assert.equal(kindOf(() => decode(bytes(...Array(11).fill(0x80)))), 'VarintOverflow')
    assert.equal(kindOf(() => decode(bytes(0x82, 0x00, 0x00))), 'VarintNotMinimal')
    assert.equal(kindOf(() => decode(bytes(0x02, 0x81, 0x00))), 'VarintNotMinimal')
    // A WindowUpdate whose credit is not minimal.
    assert.equal(kindOf(() => decode(bytes(0x0f, 0x03, 0x02, 0x85, 0x00))), 'VarintNotMinimal')
  })

  it('flag 7 on a plain connection is refused from its head alone', () => {
    const decoder = new FrameDecoder('plain')
    decoder.push(bytes(0x0f, 0x7f))
    assert.equal(kindOf(() => decoder.next()), 'ExtensionFrameInPlainMode')
  })

  it('malformed extension bodies, for any stream number', () => {
    for (const num of [0, 1, 12345]) {
      const h = num * 8 + 7
      const frame = (...body: number[]): Uint8Array => concat([encodeVarint(h), encodeVarint(body.length), Uint8Array.from(body)])
      assert.equal(kindOf(() => decode(frame())), 'MalformedExtension', 'no op')
      assert.equal(kindOf(() => decode(frame(0x80))), 'MalformedExtension', 'truncated op')
      assert.equal(kindOf(() => decode(frame(0x02))), 'MalformedExtension', 'window update without credit')
      assert.equal(kindOf(() => decode(frame(0x03, 0x00))), 'MalformedExtension', 'window update of 0')
      assert.equal(kindOf(() => decode(frame(0x04))), 'MalformedExtension', 'ping without nonce')
      assert.equal(kindOf(() => decode(frame(0x06))), 'MalformedExtension', 'pong without nonce')
      assert.equal(kindOf(() => decode(frame(0x00, 0x80))), 'MalformedExtension', 'truncated close-read code')
    }
  })

  it('a reset code that is not a complete varint', () => {
    assert.equal(kindOf(() => decode(bytes(0x0d, 0x01, 0x80))), 'MalformedResetCode')
    assert.equal(kindOf(() => decode(bytes(0x0d, 0x02, 0x80, 0x00))), 'MalformedResetCode')
    // Plain mode ignores a Reset's body.
    assert.deepEqual(decode(bytes(0x0d, 0x01, 0x80), 'plain'), [{ type: 'reset', num: 1, initiator: false, code: 0 }])
  })

  it('a stream that ends inside a frame is truncated, at any cut', () => {
    const whole = concat(encodeFrame({ type: 'message', num: 3, initiator: true, data: new Uint8Array(300) }, 'extension'))
    for (let cut = 1; cut < whole.length; cut++) {
      assert.equal(kindOf(() => decode(whole.subarray(0, cut))), 'TruncatedFrame', `cut at ${cut}`)
    }
  })

  it('later versions: reserved ops are skipped, bytes after a known payload ignored', () => {
    // op 4 (reserved) with junk, then CloseRead with code 5 and a trailing field, then
    // WindowUpdate 10 with trailing bytes.
    const frames = decode(bytes(0x0f, 0x03, 0x08, 0xff, 0x7f, 0x0f, 0x03, 0x01, 0x05, 0x09, 0x0f, 0x03, 0x02, 0x0a, 0x00))
    assert.deepEqual(frames, [
      { type: 'close-read', num: 1, initiator: true, code: 5 },
      { type: 'window-update', num: 1, initiator: false, credit: 10 }
    ])
  })
})
