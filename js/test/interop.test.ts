/**
 * JS ↔ JS: two js-libp2p nodes with this muxer over TCP + noise on 127.0.0.1, the cases that
 * tests/interop_js.rs runs between this package and the Rust crate, with the streams opened by
 * the dialer and by the listener.
 */

import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import type { Connection, Stream } from '@libp2p/interface'
import { mplexHalfclose, PROTOCOL_ID, type HalfcloseStream } from '../src/index.js'

const ECHO = '/echo/1.0.0'
/** The server writes `<count>` bytes of the pattern (-1: until stopped), then closes writing. */
const WRITE = '/write/1.0.0'
/** The server reads 1000 bytes, then closes reading with code 9. */
const STOP = '/stop/1.0.0'
/** The server reads a line, then waits for a reset (after answering one byte), or resets with code 78. */
const RESET = '/reset/1.0.0'
const LIMITS = { maxInboundStreams: 256, maxOutboundStreams: 256 }
const CHUNK = 64 * 1024

function pattern (offset: number, len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len)
  for (let i = 0; i < len; i++) out[i] = (Math.imul(offset + i, 2654435761) >>> 24) ^ seed
  return out
}

async function send (stream: Stream, data: Uint8Array): Promise<void> {
  if (!stream.send(data)) await stream.onDrain()
}

async function readAll (stream: Stream, limit = Infinity): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  let total = 0
  for await (const chunk of stream) {
    const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray()
    parts.push(bytes)
    total += bytes.length
    if (total >= limit) break
  }
  return Buffer.concat(parts)
}

/** What a server saw, by case: `name -> (fields)`. */
const seen = new Map<string, (fields: Record<string, unknown>) => void>()
function report (name: string): Promise<Record<string, unknown>> {
  return new Promise(resolve => seen.set(name, resolve))
}

async function line (stream: Stream): Promise<{ text: string, rest: Uint8Array }> {
  let buf = new Uint8Array(0)
  for await (const chunk of stream) {
    buf = Buffer.concat([buf, chunk instanceof Uint8Array ? chunk : chunk.subarray()])
    const nl = buf.indexOf(10)
    if (nl !== -1) return { text: Buffer.from(buf.subarray(0, nl)).toString(), rest: buf.subarray(nl + 1) }
  }
  throw new Error('EOF before a line')
}

async function node (): Promise<Libp2p> {
  const n = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [mplexHalfclose({ streamOptions: { maxReadBufferLength: 64 * 1024 * 1024 } })],
    connectionMonitor: { enabled: false }
  })
  await n.handle(ECHO, async (stream) => {
    for await (const chunk of stream) await send(stream, chunk instanceof Uint8Array ? chunk : chunk.subarray())
    await stream.close()
  }, LIMITS)
  await n.handle(WRITE, async (stream) => {
    const { text } = await line(stream)
    const [name, countText] = text.split(' ')
    const count = Number(countText)
    const limit = count < 0 ? 1024 * 1024 * 1024 : count
    let sent = 0
    let writeEnd = 'closed'
    let writeCode: unknown
    try {
      while (sent < limit) {
        const len = Math.min(CHUNK, limit - sent)
        await send(stream, pattern(sent, len, 7))
        sent += len
        await new Promise(resolve => setImmediate(resolve))
      }
      await stream.close()
    } catch (err) {
      writeEnd = (err as Error).name
      writeCode = (err as { code?: unknown }).code
    }
    seen.get(name)?.({ sent, writeEnd, writeCode })
  }, LIMITS)
  await n.handle(STOP, async (stream) => {
    await readAll(stream, 1000)
    await (stream as HalfcloseStream).closeRead({ code: 9 })
    await stream.close()
  }, LIMITS)
  await n.handle(RESET, async (stream) => {
    const closed = new Promise<Error | undefined>(resolve => stream.addEventListener('close', (e) => { resolve(e.error) }, { once: true }))
    const { text } = await line(stream)
    const [name, action] = text.split(' ')
    if (action === 'reset') {
      stream.abort(Object.assign(new Error('reset by the server'), { code: 78 }))
      return
    }
    // The line is read: the client may reset now (a reset drops unread data, the line too).
    stream.send(new Uint8Array([1]))
    const error = await closed
    seen.get(name)?.({ error: error?.name, code: (stream as HalfcloseStream).resetCode })
  }, LIMITS)
  return n
}

async function echo (connection: Connection, length: number, seed: number): Promise<void> {
  const stream = await connection.newStream(ECHO, LIMITS)
  const data = pattern(0, length, seed)
  const writing = (async () => {
    for (let at = 0; at < data.length; at += CHUNK) await send(stream, data.subarray(at, at + CHUNK))
    await stream.close()
  })()
  const [, echoed] = await Promise.all([writing, readAll(stream)])
  assert.ok(Buffer.from(echoed).equals(data), `echo of ${length} bytes: ${echoed.length} came back`)
}

for (const opener of ['dialer', 'listener'] as const) {
  describe(`JS ↔ JS over TCP + noise, streams opened by the ${opener}`, () => {
    let dialer: Libp2p
    let listener: Libp2p
    let connection: Connection

    before(async () => {
      dialer = await node()
      listener = await node()
      const accepted = new Promise<Connection>(resolve => {
        listener.addEventListener('connection:open', (e) => { resolve(e.detail) }, { once: true })
      })
      const dialed = await dialer.dial(listener.getMultiaddrs()[0])
      assert.equal(dialed.multiplexer, PROTOCOL_ID)
      connection = opener === 'dialer' ? dialed : await accepted
      assert.equal(connection.multiplexer, PROTOCOL_ID)
    })

    after(async () => {
      await dialer.stop()
      await listener.stop()
    })

    it('echoes 1 MiB and 16 MiB with close-write', async () => {
      await echo(connection, 1024 * 1024, 1)
      await echo(connection, 16 * 1024 * 1024, 2)
    })

    it('echoes on 100 concurrent streams', async () => {
      await Promise.all(Array.from({ length: 100 }, async (_, i) => { await echo(connection, 64 * 1024 + i, i) }))
    })

    it('close-read stops the writer with StreamStoppedError and the code, each way', async () => {
      // We close reading while the server writes.
      const name = `stop-${opener}`
      const server = report(name)
      const stream = await connection.newStream(WRITE, LIMITS)
      await send(stream, Buffer.from(`${name} -1\n`))
      const got = await readAll(stream, 1000)
      assert.ok(Buffer.from(got.subarray(0, 1000)).equals(pattern(0, 1000, 7)))
      await (stream as HalfcloseStream).closeRead({ code: 42 })
      await stream.close()
      const { writeEnd, writeCode } = await server
      assert.equal(writeEnd, 'StreamStoppedError')
      assert.equal(writeCode, 42)

      // The server closes reading while we write.
      const sink = await connection.newStream(STOP, LIMITS) as HalfcloseStream
      let error: Error | undefined
      try {
        for (let sent = 0; sent < 1024 * 1024 * 1024; sent += CHUNK) {
          await send(sink, pattern(sent, CHUNK, 3))
          await new Promise(resolve => setImmediate(resolve))
        }
      } catch (err) {
        error = err as Error
      }
      assert.equal(error?.name, 'StreamStoppedError')
      assert.equal((error as { code?: unknown }).code, 9)
      // Its Close arrives: the stream ends cleanly.
      assert.equal((await readAll(sink)).length, 0)
    })

    it('reset codes go each way', async () => {
      const name = `reset-${opener}`
      const server = report(name)
      const ours = await connection.newStream(RESET, LIMITS)
      await send(ours, Buffer.from(`${name} wait\n`))
      await readAll(ours, 1)
      ours.abort(Object.assign(new Error('reset by the client'), { code: 77 }))
      assert.deepEqual(await server, { error: 'StreamResetError', code: 77 })

      const theirs = await connection.newStream(RESET, LIMITS) as HalfcloseStream
      const closed = new Promise<Error | undefined>(resolve => theirs.addEventListener('close', (e) => { resolve(e.error) }, { once: true }))
      await send(theirs, Buffer.from('x reset\n'))
      assert.equal((await closed)?.name, 'StreamResetError')
      assert.equal(theirs.resetCode, 78)
    })

    it('a stalled stream holds its writer at the window while 16 MiB echo beside it', async () => {
      const name = `stalled-${opener}`
      const server = report(name)
      const stalled = await connection.newStream(WRITE, LIMITS)
      await send(stalled, Buffer.from(`${name} ${4 * 1024 * 1024}\n`))
      await echo(connection, 16 * 1024 * 1024, 9)
      // Nobody read it: the writer was held at the stream's initial window (less the few
      // bytes of multistream-select that went first).
      const held = (stalled as HalfcloseStream).bufferedBytes
      assert.ok(held <= 256 * 1024 && held > 255 * 1024, `held ${held}`)
      assert.equal((stalled as HalfcloseStream).receiveWindow, 256 * 1024)
      const data = await readAll(stalled)
      assert.ok(Buffer.from(data).equals(pattern(0, 4 * 1024 * 1024, 7)), `stalled: ${data.length} bytes`)
      await stalled.close()
      assert.deepEqual(await server, { sent: 4 * 1024 * 1024, writeEnd: 'closed', writeCode: undefined })
    })
  })
}
