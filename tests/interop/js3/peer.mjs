// The js-libp2p 3.x peer of tests/interop_js.rs: TCP + noise + @libp2p/mplex, and optionally
// @chainsafe/libp2p-yamux. The same cases and reports as ../js/peer.mjs (the 2.x peer), written
// with the 3.x stream API: streams are event targets, written with `send` (which asks the
// writer to wait for `drain` when the buffer is full), read as async iterables, closed for
// writing with `close` and reset with `abort`.
//
//   node peer.mjs listen [options]          prints `listening <multiaddr>`, waits for one connection
//   node peer.mjs dial <multiaddr> [options]
//
//   --muxers mplex|yamux,mplex|mplex,yamux|halfclose
//                                           the muxers it offers, in its order (default: mplex);
//                                           halfclose is this repository's TypeScript package
//                                           (js/, built), /mplex-halfclose/1.0.0
//   --cases all|echo|small-echo             its own cases: all of them, the echoes only, or the
//                                           echoes without the 16 MiB one
//   --new-stream-rate N                     mplex: the NewStreams per second from the Rust side
//                                           beyond which it closes the connection (js-libp2p
//                                           3.x's default is 5; 2.x applied it only beyond
//                                           its stream limit)

import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { mplex } from '@libp2p/mplex'
import { yamux } from '@chainsafe/libp2p-yamux'
import { noise } from '@chainsafe/libp2p-noise'
import { multiaddr } from '@multiformats/multiaddr'

const ECHO = '/echo/1.0.0'
const OBSERVE = '/observe/1.0.0'
const RESET = '/reset/1.0.0'
const STREAM_LIMITS = { maxInboundStreams: 256, maxOutboundStreams: 256 }
const READ_BUFFER = 64 * 1024 * 1024
const CHUNK = 64 * 1024
// Writing "until reset" stops here, so that a peer that never resets cannot keep it going.
const UNTIL_RESET_CAP = 1024 * 1024 * 1024

function report (fields) {
  const pairs = Object.entries(fields).map(([k, v]) => `${k}=${String(v).replace(/\s+/g, '_')}`)
  process.stdout.write(`report ${pairs.join(' ')}\n`)
}

/** The test pattern, as `pattern` in tests/common/mod.rs: byte i of a stream with seed s. */
function pattern (offset, len, seed) {
  const out = new Uint8Array(len)
  for (let i = 0; i < len; i++) {
    out[i] = (Math.imul(offset + i, 2654435761) >>> 24) ^ seed
  }
  return out
}

function bytesOf (chunk) {
  return chunk instanceof Uint8Array ? chunk : chunk.subarray()
}

/** The name of the error that ended something (StreamResetError, ...), or `ok`. */
function endOf (err) {
  return err == null ? 'ok' : (err.name ?? 'Error')
}

/** Sends `data`, waiting for the stream to drain when it asks to. */
async function send (stream, data) {
  if (!stream.send(data)) {
    await stream.onDrain()
  }
}

/** Reads a stream through one iterator: a first line, then chunks. */
class Reader {
  constructor (stream) {
    this.iterator = stream[Symbol.asyncIterator]()
    this.leftover = new Uint8Array(0)
  }

  async next () {
    if (this.leftover.length > 0) {
      const chunk = this.leftover
      this.leftover = new Uint8Array(0)
      return chunk
    }
    const { done, value } = await this.iterator.next()
    return done ? null : bytesOf(value)
  }

  async line () {
    let text = ''
    for (;;) {
      const chunk = await this.next()
      if (chunk == null) throw new Error(`EOF before a line, after '${text}'`)
      const newline = chunk.indexOf(10)
      if (newline === -1) {
        text += Buffer.from(chunk).toString()
        continue
      }
      text += Buffer.from(chunk.subarray(0, newline)).toString()
      this.leftover = chunk.subarray(newline + 1)
      return text
    }
  }

  /** Reads to EOF; returns the byte count and whether every byte matched pattern `seed`. */
  async drain (seed) {
    let received = 0
    let intact = true
    for (let chunk = await this.next(); chunk != null; chunk = await this.next()) {
      if (intact && !equal(chunk, pattern(received, chunk.length, seed))) intact = false
      received += chunk.length
    }
    return { received, intact }
  }

  async readAll () {
    const parts = []
    for (let chunk = await this.next(); chunk != null; chunk = await this.next()) parts.push(chunk)
    return Buffer.concat(parts)
  }
}

function equal (a, b) {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b)
}

/** The code an error carries (a close-read's or a reset's), as report fields. */
function codeOf (err, key) {
  return err?.code === undefined ? {} : { [key]: String(err.code) }
}

/** Resolves with the error (or null) that ends `stream`, from its 'close' event. */
function closed (stream) {
  return new Promise((resolve) => {
    stream.addEventListener('close', (event) => resolve(event.error ?? null), { once: true })
  })
}

/**
 * Writes `count` bytes of pattern `seed` (count -1: until the stream is reset), then closes
 * writing. `writeEnd` is `closed`, `StreamResetError` if a reset came first, or the error.
 */
async function sendPattern (stream, count, seed, ended) {
  const limit = count < 0 ? UNTIL_RESET_CAP : count
  let end = null
  const CLOSED = new Error('closed')
  ended.then((err) => { end = err ?? CLOSED })
  let sent = 0
  try {
    while (sent < limit && end == null) {
      const len = Math.min(CHUNK, limit - sent)
      await send(stream, pattern(sent, len, seed))
      sent += len
      // A turn of the event loop per chunk lets a reset that arrived be seen.
      await new Promise((resolve) => setImmediate(resolve))
    }
    if (end === CLOSED) {
      // The stream ended cleanly while we still wrote (the peer closed writing and stopped
      // reading): report what a writer's next write meets.
      try {
        stream.send(new Uint8Array(1))
      } catch (err) {
        return { sent, writeEnd: endOf(err), ...codeOf(err, 'writeCode') }
      }
    }
    if (end != null) return { sent, writeEnd: endOf(end) }
    await stream.close()
  } catch (err) {
    // StreamStoppedError (the peer closed reading) carries the peer's code.
    const cause = end === CLOSED || end == null ? err : end
    return { sent, writeEnd: endOf(cause), ...codeOf(cause, 'writeCode') }
  }
  return { sent, writeEnd: 'closed' }
}

// --- the three protocols, served to the Rust side ---

async function serveEcho (stream) {
  try {
    for await (const chunk of stream) {
      await send(stream, bytesOf(chunk))
    }
    await stream.close()
  } catch (err) {
    report({ case: 'echo-server-failed', error: endOf(err), message: err.message })
  }
}

async function serveObserve (stream) {
  const ended = closed(stream)
  const reader = new Reader(stream)
  const [name, countText] = (await reader.line()).split(' ')
  const writing = sendPattern(stream, Number(countText), 7, ended)
  let read
  try {
    read = { ...(await reader.drain(3)), readEnd: 'eof' }
  } catch (err) {
    read = { received: -1, intact: false, readEnd: endOf(err) }
  }
  const written = await writing
  const resetCode = stream.resetCode === undefined ? {} : { resetCode: String(stream.resetCode) }
  report({ case: name, ...read, ...written, ...resetCode })
}

async function serveReset (stream) {
  const reader = new Reader(stream)
  // `<case>` or `<case> <code>`: the reset carries the code (the extension sends it).
  const [name, code] = (await reader.line()).split(' ')
  stream.abort(Object.assign(new Error('reset by the js peer'), code === undefined ? {} : { code: Number(code) }))
  report({ case: name, resetSent: true })
}

// --- the js peer's own cases, against the same protocols on the Rust side ---

/** Echoes `length` bytes through the Rust side; throws, saying where, if they differ. */
async function echoRoundTrip (connection, length, seed) {
  const stream = await connection.newStream(ECHO, STREAM_LIMITS)
  const data = pattern(0, length, seed)
  const writing = (async () => {
    for (let at = 0; at < data.length; at += CHUNK) await send(stream, data.subarray(at, at + CHUNK))
    await stream.close()
  })()
  const [, echoed] = await Promise.all([writing, new Reader(stream).readAll()])
  if (!equal(echoed, data)) {
    let at = 0
    while (at < Math.min(echoed.length, data.length) && echoed[at] === data[at]) at++
    throw new Error(`echo of ${length} bytes: ${echoed.length} came back, first difference at ${at}`)
  }
  return true
}

async function runOwnCases (connection, which) {
  const echoes = [
    ['js-echo', async () => ({ ok: await echoRoundTrip(connection, 1024 * 1024, 1) })],
    ['js-echo-100', async () => {
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) => echoRoundTrip(connection, 64 * 1024 + i, i)))
      return { ok: results.every(Boolean), streams: results.length }
    }],
    ['js-echo-16m', async () => ({ ok: await echoRoundTrip(connection, 16 * 1024 * 1024, 5) })]
  ]
  const others = [
    ['js-resets', async () => {
      // The Rust side reads this stream; its read must fail as a reset.
      const stream = await connection.newStream(OBSERVE, STREAM_LIMITS)
      await send(stream, Buffer.from('js-resets 0\n'))
      await send(stream, pattern(0, 4096, 3))
      // The Rust side answers with nothing but its own close; wait for it, then reset.
      await new Reader(stream).readAll()
      stream.abort(new Error('reset by the js peer'))
      return { resetSent: true }
    }],
    ['js-sees-rust-reset', async () => {
      // The Rust side resets this stream after the line; our read must fail as a reset.
      const stream = await connection.newStream(RESET, STREAM_LIMITS)
      await send(stream, Buffer.from('js-sees-rust-reset\n'))
      let readEnd
      try {
        await new Reader(stream).readAll()
        readEnd = 'eof'
      } catch (err) {
        readEnd = endOf(err)
      }
      const resetCode = stream.resetCode === undefined ? {} : { resetCode: String(stream.resetCode) }
      return { readEnd, status: stream.status, ...resetCode }
    }]
  ]
  // With the extension: close-read from this side, which the Rust writer sees as BrokenPipe
  // with the code.
  const extension = [
    ['js-closes-read', async () => {
      const stream = await connection.newStream(OBSERVE, STREAM_LIMITS)
      await send(stream, Buffer.from('js-closes-read -1\n'))
      const reader = new Reader(stream)
      let received = 0
      while (received < 1000) {
        const chunk = await reader.next()
        if (chunk == null) break
        received += chunk.length
      }
      await stream.closeRead({ code: 9 })
      await stream.close()
      return { ok: received >= 1000 }
    }]
  ]
  const cases = which === 'echo'
    ? echoes
    : which === 'small-echo'
      ? echoes.filter(([name]) => name !== 'js-echo-16m')
      : [...echoes, ...others, ...(connection.multiplexer === '/mplex-halfclose/1.0.0' ? extension : [])]
  for (const [name, run] of cases) {
    try {
      report({ case: name, ...(await run()) })
    } catch (err) {
      report({ case: name, ok: false, error: endOf(err), message: err.message })
    }
  }
  process.stdout.write('done\n')
}

// --- the node ---

const args = process.argv.slice(2)
const option = (name, fallback) => {
  const at = args.indexOf(name)
  return at === -1 ? fallback : args[at + 1]
}
const [mode, target] = args
if (mode !== 'listen' && !(mode === 'dial' && target)) {
  console.error('usage: node peer.mjs listen | dial <multiaddr> [--muxers ...] [--cases all|echo]')
  process.exit(2)
}
const newStreamRate = option('--new-stream-rate')
const muxerFactories = {
  mplex: () => mplex({
    // Plain mplex has no flow control: a stream whose reader is slower than the network
    // buffers what arrives, up to this limit, then resets. Large enough for the 16 MiB echo.
    streamOptions: { maxReadBufferLength: READ_BUFFER },
    ...(newStreamRate == null ? {} : { disconnectThreshold: Number(newStreamRate) })
  }),
  // Its windows grow past the 4 MiB a stream may buffer by default (`maxReadBufferLength`): a
  // reader that falls behind would have its stream aborted, and the connection with it.
  yamux: () => yamux({ streamOptions: { maxReadBufferLength: READ_BUFFER } })
}
const muxerNames = option('--muxers', 'mplex').split(',')
if (muxerNames.includes('halfclose')) {
  // This repository's package, built (`tsc` in js/); imported only when asked for.
  const { mplexHalfclose } = await import('../../../js/dist/src/index.js')
  // Both sides run 100 concurrent echoes at once, and the limit counts the streams of both
  // sides: 512, as the Rust side of tests/interop_js.rs (the default 128 refuses some).
  const factory = mplexHalfclose({ streamOptions: { maxReadBufferLength: READ_BUFFER }, maxStreams: 512 })
  // Says on stderr why a connection ended early (what the Rust side then waits for in vain).
  muxerFactories.halfclose = () => (components) => {
    const muxers = factory(components)
    const create = muxers.createStreamMuxer.bind(muxers)
    muxers.createStreamMuxer = (maConn) => {
      const muxer = create(maConn)
      const abort = muxer.abort.bind(muxer)
      muxer.abort = (err) => {
        process.stderr.write(`js peer: muxer aborted: ${err?.name} ${err?.message}\n`)
        abort(err)
      }
      return muxer
    }
    return muxers
  }
}
const muxers = muxerNames.map((name) => muxerFactories[name]())
const which = option('--cases', 'all')

const node = await createLibp2p({
  addresses: { listen: mode === 'listen' ? ['/ip4/127.0.0.1/tcp/0'] : [] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: muxers,
  // No pings: the Rust side serves only the three protocols above.
  connectionMonitor: { enabled: false }
})
await node.handle(ECHO, serveEcho, STREAM_LIMITS)
await node.handle(OBSERVE, serveObserve, STREAM_LIMITS)
await node.handle(RESET, serveReset, STREAM_LIMITS)

process.stdin.on('end', () => process.exit(0))
process.stdin.resume()

if (mode === 'listen') {
  node.addEventListener('connection:open', (event) => {
    const connection = event.detail
    report({ case: 'connection', muxer: connection.multiplexer, direction: connection.direction })
    runOwnCases(connection, which)
  }, { once: true })
  process.stdout.write(`listening ${node.getMultiaddrs()[0].toString()}\n`)
} else {
  const connection = await node.dial(multiaddr(target))
  report({ case: 'connection', muxer: connection.multiplexer, direction: connection.direction })
  runOwnCases(connection, which)
}
