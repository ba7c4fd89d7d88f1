/**
 * The js-libp2p adapter over an in-process connection pair: close-read on the wire and its
 * distinct error, reset codes both ways, and what a hostile peer can make it hold, counted in
 * bytes of memory (heap and array buffers), not in payload.
 *
 * Run with `--expose-gc` (the package's test script does): memory is measured after a
 * collection.
 */

import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { multiaddrConnectionPair } from '@libp2p/utils'
import type { MultiaddrConnection, Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { encodeFrame, FrameDecoder, type Frame } from '../src/codec.js'
import { INITIAL_WINDOW } from '../src/flow.js'
import { HalfcloseStream, HalfcloseStreamMuxer, ProtocolViolationError, StreamStoppedError } from '../src/index.js'

/** Yields to the event loop until `done()` holds; fails after `rounds` turns. */
async function until (done: () => boolean, what: string, rounds = 100_000): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    if (done()) return
    await new Promise(resolve => setImmediate(resolve))
  }
  assert.fail(`never happened: ${what}`)
}

function muxers (): { dialer: HalfcloseStreamMuxer, listener: HalfcloseStreamMuxer, incoming: HalfcloseStream[] } {
  const [outbound, inbound] = multiaddrConnectionPair()
  const dialer = new HalfcloseStreamMuxer(outbound)
  const listener = new HalfcloseStreamMuxer(inbound)
  const incoming: HalfcloseStream[] = []
  listener.addEventListener('stream', (evt) => { incoming.push(evt.detail) })
  return { dialer, listener, incoming }
}

function closeEvent (stream: Stream): Promise<Error | undefined> {
  return new Promise(resolve => {
    stream.addEventListener('close', (evt) => { resolve(evt.error) }, { once: true })
  })
}

describe('close-read and reset codes between two muxers', () => {
  it('close-read reaches the writer: its writes fail with StreamStoppedError and the code; what it read stays', async () => {
    const { dialer, incoming } = muxers()
    const stream = await dialer.createStream()
    await until(() => incoming.length === 1, 'the stream arrives')
    const remote = incoming[0]
    const received: Uint8Array[] = []
    stream.addEventListener('message', (evt) => { received.push(evt.data.subarray()) })
    remote.send(new TextEncoder().encode('before'))
    await until(() => received.length === 1, 'data arrives')
    await stream.closeRead({ code: 42 })
    await until(() => remote.stoppedCode !== undefined, 'the close-read arrives')
    assert.throws(() => remote.send(new Uint8Array([1])), (e: unknown) => e instanceof StreamStoppedError && e.code === 42 && e.name === 'StreamStoppedError')
    assert.equal(remote.writeStatus, 'closed')
    // The writer's side answered with Close: the closer's read side learns the direction ended.
    await until(() => stream.remoteWriteStatus === 'closed', 'the Close that answers close-read')
    assert.equal(new TextDecoder().decode(received[0]), 'before')
  })

  it('a `for await` loop waiting on a stream ends when the stream closes reading', async () => {
    const { dialer, incoming } = muxers()
    const stream = await dialer.createStream()
    await until(() => incoming.length === 1, 'the stream arrives')
    let ended = false
    const reading = (async () => {
      for await (const chunk of stream) void chunk
      ended = true
    })()
    await new Promise(resolve => setImmediate(resolve))
    await stream.closeRead({ code: 3 })
    await until(() => ended, 'the loop ends')
    await reading
    await until(() => incoming[0].stoppedCode === 3, 'the peer learns')
  })

  it('a stream that only writes still reads the peer after close-read elsewhere: the other direction is unaffected', async () => {
    const { dialer, incoming } = muxers()
    const stream = await dialer.createStream()
    await until(() => incoming.length === 1, 'the stream arrives')
    const remote = incoming[0]
    const got: string[] = []
    remote.addEventListener('message', (evt) => { got.push(new TextDecoder().decode(evt.data.subarray())) })
    await remote.closeRead({ code: 1 })
    await until(() => stream.stoppedCode === 1, 'the dialer learns')
    // The dialer can no longer write, but the listener still writes to it.
    const back: string[] = []
    stream.addEventListener('message', (evt) => { back.push(new TextDecoder().decode(evt.data.subarray())) })
    remote.send(new TextEncoder().encode('still flowing'))
    await until(() => back.length === 1, 'data the other way')
    assert.deepEqual(back, ['still flowing'])
    assert.deepEqual(got, [])
  })

  it('reset codes go both ways, numbers and 64-bit bigints', async () => {
    for (const code of [7, 2 ** 60, 2n ** 64n - 1n]) {
      const { dialer, incoming } = muxers()
      const stream = await dialer.createStream()
      await until(() => incoming.length === 1, 'the stream arrives')
      const closed = closeEvent(incoming[0])
      stream.abort(Object.assign(new Error('giving up'), { code }))
      const error = await closed
      assert.equal(error?.name, 'StreamResetError')
      // Codes above 2^53 - 1 arrive as bigints.
      const expected = typeof code === 'number' && !Number.isSafeInteger(code) ? BigInt(code) : code
      assert.equal(incoming[0].resetCode, expected)
      assert.equal(stream.resetCode, expected)
    }
  })
})

/** A hostile peer: raw frames into one end of a pair whose other end runs our muxer. */
function hostile (): { peer: MultiaddrConnection, muxer: HalfcloseStreamMuxer, send: (frames: Frame[]) => void } {
  const [peer, ours] = multiaddrConnectionPair()
  const muxer = new HalfcloseStreamMuxer(ours)
  // The application takes streams and never reads them.
  muxer.addEventListener('stream', () => {})
  const send = (frames: Frame[]): void => {
    const out = new Uint8ArrayList()
    for (const frame of frames) out.append(...encodeFrame(frame, 'extension'))
    peer.send(out)
  }
  return { peer, muxer, send }
}

function memory (): number {
  const gc = (globalThis as { gc?: () => void }).gc
  assert.ok(gc !== undefined, 'run with --expose-gc')
  gc()
  gc()
  const usage = process.memoryUsage()
  return usage.heapUsed + usage.arrayBuffers
}

/**
 * A hostile peer fills a stream's window in 64 KiB frames while the application's `for await`
 * loop takes one message and then never finishes its body (with a `message` listener beside
 * it if `withListener`). Returns what the loop pulled, what the listener saw, and the credit
 * our side granted back.
 */
async function stalledLoop (withListener: boolean): Promise<{ pulled: number, listened: number, granted: number }> {
  const { peer, muxer, send } = hostile()
  // What our side grants, read from its frames.
  let granted = 0
  const decoder = new FrameDecoder('extension')
  peer.addEventListener('message', (evt) => {
    decoder.push(evt.data)
    for (let f = decoder.next(); f !== undefined; f = decoder.next()) if (f.type === 'window-update') granted += f.credit
  })
  let stream: HalfcloseStream | undefined
  muxer.addEventListener('stream', (evt) => { stream = evt.detail })
  send([{ type: 'new-stream', num: 0, name: new Uint8Array() }])
  await until(() => stream !== undefined, 'the stream opens')
  let listened = 0
  if (withListener) stream!.addEventListener('message', (evt) => { listened += evt.data.byteLength })
  let pulled = 0
  void (async () => {
    for await (const chunk of stream!) {
      pulled += chunk.byteLength
      await new Promise(() => {})
    }
  })()
  const body = new Uint8Array(64 * 1024)
  for (let i = 0; i < 4; i++) send([{ type: 'message', num: 0, initiator: true, data: body }])
  await until(() => pulled > 0 && stream!.bufferedBytes === INITIAL_WINDOW - pulled, 'the window arrives')
  for (let i = 0; i < 100; i++) await new Promise(resolve => setImmediate(resolve))
  return { pulled, listened, granted }
}

describe('a hostile peer, measured as memory', () => {
  it('a reader that stalls inside `for await` holds the peer at the window: no credit goes back for data it did not pull', async () => {
    const { pulled, granted } = await stalledLoop(false)
    assert.equal(pulled, 64 * 1024)
    // 64 KiB pulled is under half the window: nothing granted; the peer may send nothing more.
    assert.equal(granted, 0)
  })

  it('a connection that ends inside a frame ends its streams with TruncatedFrameError', async () => {
    const { peer, muxer, send } = hostile()
    send([{ type: 'new-stream', num: 0, name: new Uint8Array() }])
    await until(() => muxer.streams.length === 1, 'the stream opens')
    const closed = closeEvent(muxer.streams[0])
    // A Message head announcing 100 bytes, and 10 of them.
    peer.send(Uint8Array.from([0x02, 100, ...new Uint8Array(10)]))
    await peer.close()
    const error = await closed
    assert.ok(error instanceof ProtocolViolationError, `closed with ${error?.name}`)
    assert.equal(error.name, 'TruncatedFrameError')
  })

  it('a window of 1-byte frames on a stream nobody reads costs about the window, not an array per byte', async () => {
    const { muxer, send } = hostile()
    send([0, 1].map(num => ({ type: 'new-stream', num, name: new Uint8Array() }) as Frame))
    await until(() => muxer.streams.length === 2, 'the streams open')
    const one = new Uint8Array([7])
    const flood = async (num: number): Promise<void> => {
      const ref = { local: false, num }
      for (let sent = 0; sent < INITIAL_WINDOW; sent += 4096) {
        send(Array.from({ length: 4096 }, () => ({ type: 'message', num, initiator: true, data: one }) as Frame))
        await until(() => muxer.core.buffered(ref) >= sent + 4096, 'the frames arrive')
      }
      assert.equal(muxer.core.buffered(ref), INITIAL_WINDOW)
    }
    // The first flood warms the code up; the second is measured.
    await flood(0)
    const before = memory()
    await flood(1)
    const held = memory() - before
    // 262,144 bytes of data; at 1 byte per frame an array each would be tens of megabytes.
    assert.ok(held < INITIAL_WINDOW + 128 * 1024, `held ${held} bytes for ${INITIAL_WINDOW} bytes of data`)
    // One byte beyond the credit ends the connection with a named violation.
    const closed = closeEvent(muxer.streams[1])
    send([{ type: 'message', num: 1, initiator: true, data: one }])
    const error = await closed
    assert.ok(error instanceof ProtocolViolationError)
    assert.equal(error.name, 'CreditExceededError')
  })

  it('16 streams of frames of 64 KiB + 1 cost their data and a constant', async () => {
    const { muxer, send } = hostile()
    const streams = 16
    send(Array.from({ length: streams }, (_, num) => ({ type: 'new-stream', num, name: new Uint8Array() }) as Frame))
    await until(() => muxer.streams.length === streams, 'the streams open')
    const before = memory()
    const body = new Uint8Array(65_537).fill(3)
    for (let num = 0; num < streams; num++) {
      send([1, 2, 3].map(() => ({ type: 'message', num, initiator: true, data: body }) as Frame))
    }
    await until(() => Array.from({ length: streams }, (_, num) => muxer.core.buffered({ local: false, num })).every(n => n === 3 * 65_537), 'the frames arrive')
    const held = memory() - before
    const data = streams * 3 * 65_537
    assert.ok(held < data + 256 * 1024, `held ${held} bytes for ${data} bytes of data`)
  })

  it('a peer that floods Pings and never reads: answers stop being queued, reading stops', async () => {
    const { peer, muxer, send } = hostile()
    let answered = 0
    const ours = (muxer as unknown as { maConn: MultiaddrConnection }).maConn
    const realSend = ours.send.bind(ours)
    ours.send = (data) => { answered += data.byteLength; return realSend(data) }
    // The peer stops reading: our sends queue up on our side.
    peer.pause()
    const readStatus = (): string => (ours as unknown as { readStatus: string }).readStatus
    // Pings until our side stops reading (a socket then stops being read, and TCP holds the
    // peer back; this in-process pair would go on delivering).
    let pings = 0
    for (let round = 0; round < 200 && readStatus() !== 'paused'; round++) {
      // 50,000 Pings a chunk: answers leave in batches while one chunk is handled, so the
      // limit stops it inside the first.
      send(Array.from({ length: 50_000 }, () => ({ type: 'ping', nonce: pings++ }) as Frame))
      await new Promise(resolve => setImmediate(resolve))
    }
    assert.equal(readStatus(), 'paused', `${pings} pings, ${answered} bytes answered`)
    assert.equal(muxer.status, 'open')
    // At most 1024 + 4 × 128 answers past the connection's backpressure, a batch over, and
    // the batches before it: 13 bytes a Pong, gathered into one buffer per write.
    assert.ok(answered < 64 * 1024, `${answered} bytes of answers queued`)
  })
})

describe('writes, as js-libp2p applications make them', () => {
  /** Byte `i` of a stream: a pattern that shows loss, duplication and reordering. */
  const patternByte = (i: number): number => (i * 7 + Math.floor(i / 251)) & 255

  /** Writes `total` bytes in writes of `size`, waiting for drain when `send` says so. */
  async function write (stream: Stream, total: number, size: number): Promise<{ waits: number, earlyWakes: number }> {
    let waits = 0
    let earlyWakes = 0
    let drains = 0
    stream.addEventListener('drain', () => { drains++ })
    for (let at = 0; at < total; at += size) {
      const chunk = new Uint8Array(Math.min(size, total - at))
      for (let i = 0; i < chunk.length; i++) chunk[i] = patternByte(at + i)
      if (!stream.send(chunk)) {
        waits++
        const drainsBefore = drains
        await stream.onDrain()
        // `onDrain` resolves when the stream drained, not before.
        if (drains === drainsBefore) earlyWakes++
      }
    }
    await stream.close()
    return { waits, earlyWakes }
  }

  async function readChecked (stream: Stream): Promise<number> {
    let at = 0
    for await (const chunk of stream) {
      for (const byte of chunk.subarray()) {
        if (byte !== patternByte(at)) assert.fail(`byte ${at} is ${byte}, not ${patternByte(at)}`)
        at++
      }
    }
    return at
  }

  for (const size of [1, 30, 16 * 1024 + 1, 64 * 1024 + 1]) {
    it(`4 MiB in writes of ${size} bytes that wait for drain arrive whole, in order, and end with close`, { timeout: 120_000 }, async () => {
      // 1- and 30-byte writes once lost data (js-libp2p put back what the muxer could not take
      // yet with a call of one argument per write, which overflowed the stack) or crashed
      // when encoded; and `onDrain` resolved at once after the first drain.
      const { dialer, incoming } = muxers()
      const stream = await dialer.createStream()
      await until(() => incoming.length === 1, 'the stream arrives')
      const total = 4 * 1024 * 1024
      const [written, read] = await Promise.all([write(stream, total, size), readChecked(incoming[0])])
      assert.equal(read, total)
      assert.ok(written.waits > 0, 'the writer met a full stream')
      assert.equal(written.earlyWakes, 0)
    })
  }

  it('a million 1-byte writes cost about their bytes while they wait, not an array per byte', { timeout: 120_000 }, async () => {
    const { dialer, incoming } = muxers()
    const stream = await dialer.createStream()
    await until(() => incoming.length === 1, 'the stream arrives')
    const remote = incoming[0]
    const before = memory()
    // Nobody reads: the writer fills the window and the stream's queue, then waits.
    const one = new Uint8Array([1])
    let sent = 0
    for (; sent < 1_000_000; sent++) {
      if (!stream.send(one)) break
    }
    await until(() => remote.bufferedBytes === INITIAL_WINDOW, 'the window fills')
    const held = memory() - before
    // The window's bytes at the reader, gathered, and what the writer queued past the
    // window (js-libp2p's queue, an array per write until `send` says no).
    assert.ok(sent < INITIAL_WINDOW + 64 * 1024, `send took ${sent} writes before saying no`)
    assert.ok(held < 4 * 1024 * 1024, `held ${held} bytes`)
  })
})

describe('readers of one stream: loops, listeners and how the stream ends', () => {
  /** Reads `stream` with `for await`, collecting text; the promise says how the loop ended. */
  async function collect (stream: Stream, into: string[], onChunk?: (n: number) => Promise<void> | void): Promise<string> {
    try {
      for await (const chunk of stream) {
        into.push(new TextDecoder().decode(chunk.subarray()))
        await onChunk?.(into.length)
      }
      return 'end'
    } catch (err) {
      return (err as Error).name
    }
  }

  async function openPair (): Promise<{ writer: HalfcloseStream, reader: HalfcloseStream, dialer: HalfcloseStreamMuxer, listener: HalfcloseStreamMuxer }> {
    const { dialer, listener, incoming } = muxers()
    const writer = await dialer.createStream()
    await until(() => incoming.length === 1, 'the stream arrives')
    return { writer, reader: incoming[0], dialer, listener }
  }

  const text = (s: string): Uint8Array => new TextEncoder().encode(s)

  it('a `message` listener added while a loop reads takes nothing from the loop: both see the messages', async () => {
    const { writer, reader } = await openPair()
    const looped: string[] = []
    const listened: string[] = []
    const loop = collect(reader, looped, (n) => {
      if (n === 1) reader.addEventListener('message', (evt) => { listened.push(new TextDecoder().decode(evt.data.subarray())) })
    })
    for (const word of ['one', 'two', 'three']) {
      writer.send(text(word))
      await until(() => looped.at(-1) === word, `the loop reads ${word}`)
    }
    await writer.close()
    assert.equal(await loop, 'end')
    assert.deepEqual(looped, ['one', 'two', 'three'])
    assert.deepEqual(listened, ['two', 'three'])
  })

  it('two loops reading at once each get every message, in order, and both end', async () => {
    const { writer, reader } = await openPair()
    const first: string[] = []
    const second: string[] = []
    const loops = [collect(reader, first), collect(reader, second)]
    for (const word of ['a', 'b', 'c']) {
      writer.send(text(word))
      await until(() => first.at(-1) === word && second.at(-1) === word, `both read ${word}`)
    }
    await writer.close()
    assert.deepEqual(await Promise.all(loops), ['end', 'end'])
    assert.deepEqual(first, ['a', 'b', 'c'])
    assert.deepEqual(second, ['a', 'b', 'c'])
  })

  it('a loop that stalls holds the peer at the window also with a `message` listener beside it', async () => {
    const { pulled, listened, granted } = await stalledLoop(true)
    // The listener saw what the loop took, and no more: js-libp2p's own iterator would have
    // queued everything the listener saw, and credit gone back for it without end.
    assert.equal(pulled, 64 * 1024)
    assert.equal(listened, 64 * 1024)
    assert.equal(granted, 0)
  })

  it("the peer's Close then Reset while a loop waits: all the data, then a clean end (§5, Finished + Reset)", async () => {
    const { muxer, send } = hostile()
    let stream: HalfcloseStream | undefined
    muxer.addEventListener('stream', (evt) => { stream = evt.detail })
    send([{ type: 'new-stream', num: 0, name: new Uint8Array() }])
    await until(() => stream !== undefined, 'the stream opens')
    const got: string[] = []
    const loop = collect(stream!, got)
    await new Promise(resolve => setImmediate(resolve))
    // A plain-mplex habit: a stream written to the end is given up with Close, then Reset.
    send([
      { type: 'message', num: 0, initiator: true, data: text('all of it') },
      { type: 'close', num: 0, initiator: true },
      { type: 'reset', num: 0, initiator: true, code: 5 }
    ])
    assert.equal(await loop, 'end')
    assert.deepEqual(got, ['all of it'])
    assert.equal(stream!.resetCode, 5)
  })

  it('a Reset without Close that came before any loop started: a later loop fails with StreamResetError', async () => {
    const { writer, reader } = await openPair()
    writer.send(text('cut off'))
    writer.abort(new Error('gone'))
    await until(() => reader.status === 'reset', 'the Reset arrives')
    assert.equal(await collect(reader, []), 'StreamResetError')
  })

  for (const side of ['reader', 'writer'] as const) {
    it(`a connection lost (on the ${side}'s side) before the peer closed the stream: the loop fails with ConnectionClosedError`, async () => {
      const [outbound, inbound] = multiaddrConnectionPair()
      const dialer = new HalfcloseStreamMuxer(outbound)
      const listener = new HalfcloseStreamMuxer(inbound)
      const incoming: HalfcloseStream[] = []
      listener.addEventListener('stream', (evt) => { incoming.push(evt.detail) })
      const writer = await dialer.createStream()
      await until(() => incoming.length === 1, 'the stream arrives')
      const got: string[] = []
      const loop = collect(incoming[0], got)
      writer.send(text('some'))
      await until(() => got.length === 1, 'data arrives')
      ;(side === 'reader' ? inbound : outbound).abort(new Error('the link failed'))
      assert.equal(await loop, 'ConnectionClosedError')
    })
  }
})

describe('writers waiting for drain, and closing', () => {
  /** Our stream to a hostile peer that grants nothing beyond the initial window. */
  async function blockedWriter (init: { maxWriteBufferLength?: number } = {}): Promise<{ stream: HalfcloseStream, send: (frames: Frame[]) => void }> {
    const { muxer, send } = hostile()
    const stream = await muxer.createStream(init)
    const chunk = new Uint8Array(64 * 1024)
    while (stream.send(chunk)) {}
    return { stream, send }
  }

  it('a writer that awaits onDrain queues at most one write, however little each grant lets through', async () => {
    const { stream, send } = await blockedWriter()
    const chunk = new Uint8Array(64 * 1024)
    let queuedMost = 0
    const writing = (async () => {
      for (;;) {
        await stream.onDrain()
        stream.send(chunk)
        queuedMost = Math.max(queuedMost, stream.writeBufferLength)
      }
    })()
    writing.catch(() => {})
    // 2,000 grants of 1 byte: js-libp2p's own onDrain let a write in after each, so the
    // queue grew by 64 KiB per grant (a 12 KB trickle of grants queued 197 MB).
    for (let i = 0; i < 2000; i++) {
      send([{ type: 'window-update', num: 0, initiator: false, credit: 1 }])
      await new Promise(resolve => setImmediate(resolve))
    }
    assert.ok(queuedMost <= chunk.length, `queued ${queuedMost} bytes`)
    stream.abort(new Error('done'))
  })

  it('onDrain on a stream that ended fails with its error instead of waiting for good', { timeout: 10_000 }, async () => {
    const { stream } = await blockedWriter()
    const waiting = stream.onDrain()
    stream.abort(Object.assign(new Error('given up'), { code: 3 }))
    await assert.rejects(waiting, /given up/)
    await assert.rejects(stream.onDrain(), /given up/)
  })

  it('a write beyond maxWriteBufferLength aborts the stream, and the writer waiting for drain learns it', { timeout: 10_000 }, async () => {
    const { stream } = await blockedWriter({ maxWriteBufferLength: 300_000 })
    // js-libp2p aborts the stream and returns false: the usual `await onDrain()` must not hang.
    assert.equal(stream.send(new Uint8Array(1024 * 1024)), false)
    await assert.rejects(stream.onDrain(), (err: Error) => err.name === 'StreamBufferError')
  })

  for (const [ending, end] of [
    ['a local abort', (s: HalfcloseStream) => { s.abort(new Error('given up')) }],
    ['a lost connection', (s: HalfcloseStream) => { s.onTransportClosed() }]
  ] as const) {
    it(`close() with writes still queued settles with the error at ${ending}`, { timeout: 10_000 }, async () => {
      const { stream } = await blockedWriter()
      // js-libp2p's close waits for a drain after the stream ended: it never settled.
      const closing = stream.close()
      await new Promise(resolve => setImmediate(resolve))
      end(stream)
      await assert.rejects(closing)
    })
  }
})

describe('what a reader keeps alive', () => {
  it('1-byte messages handed to stalled loops keep their bytes alive, not the chunks they came in', async () => {
    const { muxer, send } = hostile()
    const streams: HalfcloseStream[] = []
    muxer.addEventListener('stream', (evt) => { streams.push(evt.detail) })
    const readers = 16
    send(Array.from({ length: 2 * readers }, (_, num) => ({ type: 'new-stream' as const, num, name: new Uint8Array() })))
    await until(() => streams.length === 2 * readers, 'the streams open')
    const held: unknown[] = []
    for (const stream of streams.slice(0, readers)) {
      void (async () => {
        for await (const message of stream) {
          held.push(message)
          await new Promise(() => {})
        }
      })()
    }
    await new Promise(resolve => setImmediate(resolve))
    const before = memory()
    // Each chunk: a 1-byte message for a stalled loop, and 16,000 1-byte messages for a stream
    // nobody reads (gathered into buffers of their size): 48 KB that the loop's message must
    // not keep alive.
    let data = 0
    for (let i = 0; i < readers; i++) {
      const frames: Frame[] = [{ type: 'message', num: i, initiator: true, data: new Uint8Array([7]) }]
      for (let k = 0; k < 16_000; k++) frames.push({ type: 'message', num: readers + i, initiator: true, data: new Uint8Array([1]) })
      data += 16_001
      send(frames)
      await new Promise(resolve => setImmediate(resolve))
    }
    await until(() => held.length === readers, 'every loop holds its message')
    const grew = memory() - before
    assert.ok(grew < 2 * data + 64 * 1024, `${grew} bytes for ${data} bytes of data`)
  })
})

describe('opening streams', () => {
  function limited (maxStreams: number): { dialer: HalfcloseStreamMuxer, outbound: MultiaddrConnection } {
    const [outbound, inbound] = multiaddrConnectionPair()
    const dialer = new HalfcloseStreamMuxer(outbound, { maxStreams })
    new HalfcloseStreamMuxer(inbound, { maxStreams }).addEventListener('stream', () => {})
    return { dialer, outbound }
  }

  it('at the stream limit createStream waits for a stream to end; a waiter that gives up does not take the next one', async () => {
    const { dialer } = limited(1)
    const first = await dialer.createStream()
    const givesUp = new AbortController()
    const a = dialer.createStream({ signal: givesUp.signal })
    let bOpened: Stream | undefined
    const b = dialer.createStream().then(stream => { bOpened = stream })
    await new Promise(resolve => setImmediate(resolve))
    givesUp.abort(new Error('gave up'))
    await assert.rejects(a, /gave up/)
    assert.equal(bOpened, undefined, 'nothing ended yet')
    first.abort(new Error('done with it'))
    await b
    assert.equal((bOpened as Stream | undefined)?.status, 'open')
  })

  it('an aborted signal rejects createStream at once, below the limit and at it', async () => {
    const { dialer } = limited(1)
    await assert.rejects(dialer.createStream({ signal: AbortSignal.abort(new Error('already')) }), /already/)
    await dialer.createStream()
    await assert.rejects(dialer.createStream({ signal: AbortSignal.abort(new Error('already')) }), /already/)
  })

  it('createStream fails once the connection is closing, instead of opening a stream that goes nowhere', async () => {
    const { dialer, outbound } = limited(128)
    await dialer.createStream()
    const closing = outbound.close()
    await assert.rejects(dialer.createStream(), (e: Error) => e.name === 'ConnectionClosedError' || e.name === 'MuxerClosedError')
    await closing
  })
})

describe('logging', () => {
  it("a stream logs through the muxer's logger with its scope in front, and creates no logger of its own", async () => {
    const { dialer } = muxers()
    const lines: string[] = []
    let scopesMade = 0
    let enabled = true
    const sink = (kind: string) => Object.assign((formatter: string, ...args: unknown[]) => {
      lines.push(`${kind} ${formatter} ${args.join(' ')}`.trim())
    }, { enabled: true })
    const base = Object.assign(sink('log'), {
      // A logger's methods may use `this` (no `enabled` of their own: taken as enabled).
      kind: 'error',
      error (this: { kind: string }, formatter: string, ...args: unknown[]) {
        lines.push(`${this.kind} ${formatter} ${args.join(' ')}`.trim())
      },
      trace: Object.assign(() => { lines.push('a disabled trace was called') }, { enabled: false }),
      newScope: () => { scopesMade++; return base }
    })
    Object.defineProperty(base, 'enabled', { get: () => enabled })
    ;(dialer as unknown as { log: unknown }).log = base
    const stream = await dialer.createStream()
    lines.length = 0
    const scope = stream.log.newScope('mss:select')
    stream.log('hello %d', 1)
    scope('%s', 'negotiated')
    scope.error('failed %s', 'x')
    stream.log({ an: 'object' })
    scope.trace('not shown')
    // A `%` in a scope is text, not a format.
    stream.log.newScope('50%s')('done %d', 2)
    assert.equal((stream.log.error as unknown as { enabled: boolean }).enabled, true)
    assert.equal((stream.log.trace as unknown as { enabled: boolean }).enabled, false)
    enabled = false
    stream.log('not shown either')
    assert.equal(stream.log.enabled, false)
    assert.deepEqual(lines, [
      `log ${stream.id} hello %d 1`,
      `log ${stream.id}:mss:select %s negotiated`,
      `error ${stream.id}:mss:select failed %s x`,
      `log ${stream.id} %O [object Object]`,
      `log ${stream.id}:50%%s done %d 2`
    ])
    assert.equal(scopesMade, 0)
  })
})

describe('how writes leave', () => {
  it('a new stream is announced at once, in the microtasks after createStream, before its first data', async () => {
    const { dialer } = muxers()
    const written: Uint8Array[] = []
    const send = dialer.send.bind(dialer)
    dialer.send = (data) => {
      written.push(data.subarray())
      return send(data)
    }
    await dialer.createStream()
    // Let the microtasks queued so far run, and no event-loop turn: js-libp2p writes the
    // protocol negotiation only later, and a peer sets the stream up meanwhile.
    for (let i = 0; i < 10; i++) await Promise.resolve()
    assert.equal(written.length, 1, 'the NewStream left on its own')
    const frames = new FrameDecoder('extension')
    frames.push(written[0])
    assert.equal(frames.next()?.type, 'new-stream')
    assert.equal(frames.next(), undefined)
  })

  it('a writer that awaits each 64 KiB write has its writes gathered into few connection writes', async () => {
    const { dialer, incoming } = muxers()
    let connectionWrites = 0
    const send = dialer.send.bind(dialer)
    dialer.send = (data) => {
      connectionWrites++
      return send(data)
    }
    const stream = await dialer.createStream()
    await until(() => incoming.length === 1, 'the stream arrives')
    let read = 0
    const reading = (async () => { for await (const chunk of incoming[0]) read += chunk.byteLength })()
    const chunk = new Uint8Array(64 * 1024)
    const writes = 64
    const before = connectionWrites
    // The usual application loop: an awaited helper per write, which yields to microtasks.
    const write = async (): Promise<void> => { if (!stream.send(chunk)) await stream.onDrain() }
    for (let i = 0; i < writes; i++) await write()
    await stream.close()
    await reading
    assert.equal(read, writes * chunk.length)
    // Each write left in a connection write of its own (64 and more); now they leave in
    // batches of up to 1 MiB (4 MiB: a handful, with the window updates' turns between).
    assert.ok(connectionWrites - before <= writes / 4, `${connectionWrites - before} connection writes for ${writes} writes`)
  })

  it('sixteen writers woken together leave in connection writes of 1 MiB and one write per writer at most', async () => {
    const { dialer, incoming } = muxers()
    let largest = 0
    const send = dialer.send.bind(dialer)
    dialer.send = (data) => {
      largest = Math.max(largest, data.byteLength)
      return send(data)
    }
    const writers = 16
    const streams = []
    for (let i = 0; i < writers; i++) streams.push(await dialer.createStream())
    await until(() => incoming.length === writers, 'the streams arrive')
    let read = 0
    const reading = incoming.map(async (stream) => { for await (const chunk of stream) read += chunk.byteLength })
    const chunk = new Uint8Array(64 * 1024)
    const perWriter = 2 * 1024 * 1024
    await Promise.all(streams.map(async (stream) => {
      for (let sent = 0; sent < perWriter; sent += chunk.length) if (!stream.send(chunk)) await stream.onDrain()
      await stream.close()
    }))
    await Promise.all(reading)
    assert.equal(read, writers * perWriter)
    // A batch closes at 1 MiB, but each writer woken when it leaves adds its write to the next
    // (measured: 1.8 MB here, 9 MiB with 128 writers). Bounded by the writers, not the data.
    assert.ok(largest <= 1024 * 1024 + writers * (chunk.length + 64), `a connection write of ${largest} bytes`)
  })
})
