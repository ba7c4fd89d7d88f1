/**
 * Throughput and latency of this muxer next to @chainsafe/libp2p-yamux and @libp2p/mplex, on the
 * same js-libp2p, over TCP + noise on 127.0.0.1, muxers alternating round by round:
 *
 *   node dist/bench/bench.js                   JS ↔ JS, a muxer's two nodes in one process
 *   node dist/bench/bench.js --two-processes   JS ↔ JS, the servers in Node.js processes of their
 *                                              own (`--serve`: prints their `--peers` list and
 *                                              serves until its stdin closes)
 *   node dist/bench/bench.js --peers <list>    JS ↔ Rust: `<list>` is what
 *                                              `cargo run --release -p tools --bin stackbench
 *                                              -- --serve-js` prints (a Rust node per muxer:
 *                                              the crate, rust-libp2p's yamux and mplex)
 *
 * Each muxer's client node runs in a Node.js process of its own (`--client <muxer>`, told the
 * workloads one at a time on its stdin; its server with it, or with `--two-processes` in one more
 * process of its own), so that muxers do not share a JIT and a heap: measured
 * with all clients in one process, @libp2p/mplex's request/response against a Rust node ran in
 * 231–239 µs next to this package's client and in 247–276 alone (five runs each), while this
 * package's ran in 250–270 either way.
 *
 * Workloads: one stream carrying `--mib` MiB (default 64) from this node (out) and one carrying it
 * to this node (in: the peer sends what an 8-byte length asks for), and request/response on a new
 * stream (64 bytes each way, close-write after each; `--requests`, default 500). Output: medians
 * of `--rounds` rounds (default 5), and ours over the best peer. `--muxers ours,yamux` runs some.
 * A workload that fails, or gives no answer within `--timeout` seconds (default 300; its client
 * process is then killed), is reported as failed with its cause.
 */

import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { mplex } from '@libp2p/mplex'
import { multiaddr } from '@multiformats/multiaddr'
import type { Connection, Stream, StreamMuxerFactory } from '@libp2p/interface'
import { mplexHalfclose } from '../src/index.js'

// The protocols of the Rust side (stackbench's servers), which the JS servers serve too: sink
// reads to the end and closes, echo sends back what it read, source sends what an 8-byte
// big-endian length asks for.
const SINK = '/stackbench/sink/1.0.0'
const ECHO = '/stackbench/echo/1.0.0'
const SOURCE = '/stackbench/source/1.0.0'
const LIMITS = { maxInboundStreams: 1024, maxOutboundStreams: 1024 }
const READ_BUFFER = 64 * 1024 * 1024
const CHUNK = 64 * 1024

const args = process.argv.slice(2)
const option = (name: string, fallback: string): string => {
  const at = args.indexOf(name)
  return at === -1 ? fallback : args[at + 1]
}
const MIB = Number(option('--mib', '64'))
const REQUESTS = Number(option('--requests', '500'))
const ROUNDS = Number(option('--rounds', '5'))
/** Seconds a workload may take before its client process is killed and it counts as failed. */
const TIMEOUT = Number(option('--timeout', '300'))

type Factory = () => (components: any) => StreamMuxerFactory
const MUXERS: Array<[string, string, Factory]> = [
  ['ours (extension)', 'ours', () => mplexHalfclose({ streamOptions: { maxReadBufferLength: READ_BUFFER } })],
  ['@chainsafe/libp2p-yamux', 'yamux', () => yamux({ streamOptions: { maxReadBufferLength: READ_BUFFER } })],
  ['@libp2p/mplex', 'mplex', () => mplex({ streamOptions: { maxReadBufferLength: READ_BUFFER }, disconnectThreshold: Infinity } as any)]
]

async function send (stream: Stream, data: Uint8Array): Promise<void> {
  if (!stream.send(data)) await stream.onDrain()
}

/**
 * Closes writing. js-libp2p's `close` rejects with the stream's close event when the stream
 * ends while it waits for the write buffer to drain (the peer read everything and closed too:
 * seen with yamux against a Rust node); that is a close, not a failure.
 */
async function closeWriting (stream: Stream): Promise<void> {
  try {
    await stream.close()
  } catch (err) {
    if (!(err instanceof Event) || (err as Event & { error?: Error }).error !== undefined) throw err
  }
}

async function drain (stream: Stream): Promise<number> {
  let total = 0
  for await (const chunk of stream) total += chunk.byteLength
  return total
}

async function node (muxer: Factory, listen: boolean): Promise<Libp2p> {
  const n = await createLibp2p({
    addresses: { listen: listen ? ['/ip4/127.0.0.1/tcp/0'] : [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [muxer()],
    connectionMonitor: { enabled: false }
  })
  if (listen) {
    await n.handle(SINK, async (stream) => {
      await drain(stream)
      await stream.close()
    }, LIMITS)
    await n.handle(SOURCE, async (stream) => {
      let request: Uint8Array = new Uint8Array(0)
      for await (const chunk of stream) request = concat(request, chunk.subarray())
      const chunk = new Uint8Array(CHUNK).fill(1)
      const total = Number(new DataView(request.buffer, request.byteOffset).getBigUint64(0))
      for (let sent = 0; sent < total; sent += CHUNK) await send(stream, chunk)
      await stream.close()
    }, LIMITS)
    await n.handle(ECHO, async (stream) => {
      const request = []
      for await (const chunk of stream) request.push(chunk.subarray())
      for (const chunk of request) await send(stream, chunk)
      await stream.close()
    }, LIMITS)
  }
  return n
}

/** MiB/s of one stream carrying MIB MiB to the server, until the server's close arrives. */
async function bulk (connection: Connection): Promise<number> {
  const stream = await connection.newStream(SINK, LIMITS)
  const chunk = new Uint8Array(CHUNK).fill(1)
  const start = performance.now()
  for (let sent = 0; sent < MIB * 1024 * 1024; sent += CHUNK) await send(stream, chunk)
  await closeWriting(stream)
  await drain(stream)
  return MIB / ((performance.now() - start) / 1000)
}

/** MiB/s of one stream carrying MIB MiB from the server, asked for by an 8-byte length. */
async function download (connection: Connection): Promise<number> {
  const stream = await connection.newStream(SOURCE, LIMITS)
  const start = performance.now()
  const request = new Uint8Array(8)
  new DataView(request.buffer).setBigUint64(0, BigInt(MIB * 1024 * 1024))
  stream.send(request)
  await closeWriting(stream)
  const got = await drain(stream)
  if (got !== MIB * 1024 * 1024) throw new Error(`download of ${got} bytes`)
  return MIB / ((performance.now() - start) / 1000)
}

const concat = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  const out = new Uint8Array(a.byteLength + b.byteLength)
  out.set(a)
  out.set(b, a.byteLength)
  return out
}

/** Median and p99 of request/response on a new stream, in µs. */
async function requestResponse (connection: Connection): Promise<[number, number]> {
  const times: number[] = []
  const request = new Uint8Array(64).fill(2)
  for (let i = 0; i < REQUESTS; i++) {
    const start = performance.now()
    const stream = await connection.newStream(ECHO, LIMITS)
    stream.send(request)
    await closeWriting(stream)
    const got = await drain(stream)
    times.push((performance.now() - start) * 1000)
    if (got !== 64) throw new Error(`answer of ${got} bytes`)
  }
  times.sort((a, b) => a - b)
  return [median(times), times[Math.floor(times.length * 0.99)]]
}

/** The median: the middle value, or the mean of the two middle ones. */
const median = (xs: number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  const half = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[half] : (sorted[half - 1] + sorted[half]) / 2
}

/** What a failure says: an error's message, or an event's type and error (js-libp2p rejects with events). */
function describe (err: unknown): string {
  if (err instanceof Event) {
    const error = (err as Event & { error?: Error }).error
    return `${err.type} event${error === undefined ? '' : `: ${error.message}`}`
  }
  return (err as Error)?.message ?? String(err)
}

const only = option('--muxers', '')
const chosenMuxers = MUXERS.filter(([name]) => only === '' || only.split(',').some(o => name.includes(o)))
if (chosenMuxers.length === 0) throw new Error(`--muxers ${only} selects no muxer`)

if (args.includes('--serve')) {
  // A server per muxer, their addresses as `--peers` wants them, served until stdin closes.
  const servers = await Promise.all(chosenMuxers.map(async ([, key, muxer]) => [key, await node(muxer, true)] as const))
  console.log(servers.map(([key, server]) => `${key}=${server.getMultiaddrs()[0].toString()}`).join(','))
  process.stdin.resume()
  await new Promise(resolve => process.stdin.on('end', resolve))
  for (const [, server] of servers) await server.stop()
  process.exit(0)
}

if (args.includes('--client')) {
  // One muxer's client (and its server, without `--peer`), running the workloads the parent
  // names on stdin, one per line, each answered by a line of JSON: `{ value }` or `{ error }`.
  // A workload that fails (a muxer pair that loses the connection, as js-libp2p-yamux against
  // rust-libp2p's yamux does on large transfers) is answered with its error, and the next one
  // redials.
  const key = option('--client', '')
  const muxer = MUXERS.find(([, k]) => k === key)?.[2]
  if (muxer === undefined) throw new Error(`no muxer ${key}`)
  const client = await node(muxer, false)
  const peer = option('--peer', '')
  const server = peer === '' ? await node(muxer, true) : undefined
  const target = server?.getMultiaddrs()[0] ?? multiaddr(peer)
  let connection: Connection | undefined
  console.log('ready')
  for await (const workload of createInterface({ input: process.stdin })) {
    let answer: { value?: number[], error?: string }
    try {
      if (connection?.status !== 'open') connection = await client.dial(target)
      const value = workload === 'out' ? [await bulk(connection)] : workload === 'in' ? [await download(connection)] : await requestResponse(connection)
      // js-libp2p ends a stream whose connection was lost as closed, so look at the connection.
      if (connection.status !== 'open') throw new Error(`the connection was ${connection.status} during the workload`)
      answer = { value }
    } catch (err) {
      answer = { error: describe(err) }
      await connection?.close().catch(() => {})
      connection = undefined
    }
    console.log(JSON.stringify(answer))
  }
  await client.stop()
  await server?.stop()
  process.exit(0)
}

/** `ours=<multiaddr>,yamux=<multiaddr>,mplex=<multiaddr>`: the servers, one per muxer. */
let PEERS = new Map(option('--peers', '').split(',').filter(p => p !== '').map(p => p.split('=') as [string, string]))
const twoProcesses = args.includes('--two-processes')
const serverProcesses: Array<ReturnType<typeof spawn>> = []
if (twoProcesses) {
  // A server process per muxer too, as for the clients.
  for (const [, key] of chosenMuxers) {
    const server = spawn(process.execPath, [process.argv[1], '--serve', '--muxers', key], { stdio: ['pipe', 'pipe', 'inherit'] })
    serverProcesses.push(server)
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: server.stdout! }).once('line', resolve)
      server.once('exit', code => { reject(new Error(`the server process exited with ${String(code)}`)) })
    })
    const [served, addr] = line.split('=')
    PEERS.set(served, addr)
  }
}

/** A muxer's client process, its answers, and why it ended if it did. */
interface Client { name: string, child: ReturnType<typeof spawn>, answers: AsyncIterator<string>, ended?: string }
const clients: Client[] = []
// The children end with this process, however it ends.
process.on('exit', () => {
  for (const { child } of clients) child.kill('SIGKILL')
  for (const server of serverProcesses) server.kill('SIGKILL')
})
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(1))
for (const [name, key] of chosenMuxers) {
  const peer = PEERS.size === 0 ? '' : PEERS.get(key)
  if (peer === undefined) throw new Error(`no Rust peer for ${key} in --peers`)
  const child = spawn(process.execPath, [process.argv[1], '--client', key, '--peer', peer, '--mib', String(MIB), '--requests', String(REQUESTS)], { stdio: ['pipe', 'pipe', 'inherit'] })
  const client: Client = { name, child, answers: createInterface({ input: child.stdout! })[Symbol.asyncIterator]() }
  child.once('exit', (code, signal) => { client.ended ??= `its client process exited (${signal ?? `code ${String(code)}`})` })
  if ((await client.answers.next()).value !== 'ready') throw new Error(`the client process of ${name} did not start`)
  clients.push(client)
}

interface Results { out: number[], in: number[], rr: number[], p99: number[], failed: Map<string, string> }
const results = new Map<string, Results>()
for (const { name } of clients) results.set(name, { out: [], in: [], rr: [], p99: [], failed: new Map() })

/**
 * The client's answer to `workload`: its result, or why there is none (the workload failed, the
 * client process ended, or it gave no answer within TIMEOUT seconds and was killed).
 */
async function ask (client: Client, workload: string): Promise<{ value?: number[], error?: string }> {
  if (client.ended !== undefined) return { error: client.ended }
  client.child.stdin!.write(`${workload}\n`)
  let timer: ReturnType<typeof setTimeout> | undefined
  const timedOut = new Promise<{ error: string }>(resolve => {
    timer = setTimeout(() => {
      client.ended = `no answer within ${TIMEOUT} s: its client process was killed`
      client.child.kill('SIGKILL')
      resolve({ error: client.ended })
    }, TIMEOUT * 1000)
  })
  const answered = client.answers.next().then(({ value, done }) =>
    done === true ? { error: client.ended ?? 'its client process ended' } : JSON.parse(value) as { value?: number[], error?: string })
  try {
    return await Promise.race([answered, timedOut])
  } finally {
    clearTimeout(timer)
  }
}

/** Has `client` run `workload`; a workload that failed once is reported as failed, with its cause. */
async function measure (client: Client, workload: 'out' | 'in' | 'rr'): Promise<void> {
  const r = results.get(client.name)!
  if (r.failed.has(workload)) return
  const answer = await ask(client, workload)
  if (answer.value === undefined) {
    r.failed.set(workload, answer.error ?? 'no answer')
  } else if (workload === 'rr') {
    r.rr.push(answer.value[0])
    r.p99.push(answer.value[1])
  } else {
    r[workload].push(answer.value[0])
  }
}

for (let round = 0; round < ROUNDS; round++) {
  // Alternate the order, so that drift over the run does not favour one muxer.
  const order = round % 2 === 0 ? clients : [...clients].reverse()
  for (const client of order) {
    for (const workload of ['out', 'in', 'rr'] as const) await measure(client, workload)
  }
}
const link = twoProcesses ? 'JS ↔ JS (two processes)' : PEERS.size === 0 ? 'JS ↔ JS (one process per muxer)' : 'JS ↔ Rust (the same muxer on the Rust side)'
console.log(`${link} over TCP + noise on 127.0.0.1, medians of ${ROUNDS} alternating rounds; last column: ours / best peer`)
const rows: Array<[string, string, string, boolean]> = [
  [`1 stream out, ${MIB} MiB`, 'MiB/s', 'out', true],
  [`1 stream in, ${MIB} MiB`, 'MiB/s', 'in', true],
  ['request/response', 'µs', 'rr', false],
  ['request/response p99', 'µs', 'p99', false]
]
// The last column compares ours, the first muxer, with the best of the others, when both ran.
const compared = clients.length > 1 && clients[0].name === MUXERS[0][0]
console.log(['workload'.padEnd(24), 'unit'.padStart(6), ...clients.map(c => c.name.padStart(24)), ...(compared ? ['ours/best'.padStart(10)] : [])].join(' '))
for (const [label, unit, key, higherIsBetter] of rows) {
  const workload = key === 'p99' ? 'rr' : key
  const values = clients.map(c => {
    const r = results.get(c.name)!
    return r.failed.has(workload) ? NaN : median(r[key as 'out' | 'in' | 'rr' | 'p99'])
  })
  const peers = values.slice(1).filter(v => !Number.isNaN(v))
  const best = peers.length === 0 ? NaN : higherIsBetter ? Math.max(...peers) : Math.min(...peers)
  const cells = values.map(v => (Number.isNaN(v) ? 'failed' : v >= 100 ? v.toFixed(0) : v.toFixed(1)).padStart(24))
  console.log([label.padEnd(24), unit.padStart(6), ...cells, ...(compared ? [(values[0] / best).toFixed(2).padStart(10)] : [])].join(' '))
}
for (const { name } of clients) {
  for (const [workload, error] of results.get(name)!.failed) console.log(`${name}: ${workload} failed: ${error}`)
}
for (const { child } of clients) child.stdin!.end()
for (const server of serverProcesses) server.stdin!.end()
// Children that do not end by themselves (a stopped server) are killed on exit.
setTimeout(() => process.exit(0), 5000).unref()
