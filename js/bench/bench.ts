/**
 * Throughput and latency of this muxer next to @chainsafe/libp2p-yamux and @libp2p/mplex, on the
 * same js-libp2p, over TCP + noise on 127.0.0.1, muxers alternating round by round:
 *
 *   node dist/bench/bench.js                   JS ↔ JS (both nodes in this process)
 *   node dist/bench/bench.js --peers <list>    JS → Rust: `<list>` is what
 *                                              `cargo run --release -p tools --bin stackbench
 *                                              -- --serve-js` prints (a Rust node per muxer:
 *                                              the crate, rust-libp2p's yamux and mplex)
 *
 * Workloads: one stream carrying `--mib` MiB (default 64) one way, and request/response on a new
 * stream (64 bytes each way, close-write after each; `--requests`, default 500). Output: medians
 * of `--rounds` rounds (default 5), and ours over the best peer. `--muxers ours,yamux` runs some.
 */

import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { mplex } from '@libp2p/mplex'
import { multiaddr } from '@multiformats/multiaddr'
import type { Connection, Stream, StreamMuxerFactory } from '@libp2p/interface'
import { mplexHalfclose } from '../src/index.js'

const BULK = '/bench/bulk/1.0.0'
const RR = '/bench/rr/1.0.0'
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
/** `ours=<multiaddr>,yamux=<multiaddr>,mplex=<multiaddr>`: Rust nodes, one per muxer. */
const PEERS = new Map(option('--peers', '').split(',').filter(p => p !== '').map(p => p.split('=') as [string, string]))
// The Rust side (stackbench's servers) reads to the end and closes, or echoes what it read.
const bulkProtocol = PEERS.size === 0 ? BULK : '/stackbench/sink/1.0.0'
const rrProtocol = PEERS.size === 0 ? RR : '/stackbench/echo/1.0.0'

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
    await n.handle(BULK, async (stream) => {
      await drain(stream)
      await stream.close()
    }, LIMITS)
    await n.handle(RR, async (stream) => {
      await drain(stream)
      stream.send(new Uint8Array(64))
      await stream.close()
    }, LIMITS)
  }
  return n
}

/** MiB/s of one stream carrying MIB MiB to the server, until the server's close arrives. */
async function bulk (connection: Connection): Promise<number> {
  const stream = await connection.newStream(bulkProtocol, LIMITS)
  const chunk = new Uint8Array(CHUNK).fill(1)
  const start = performance.now()
  for (let sent = 0; sent < MIB * 1024 * 1024; sent += CHUNK) await send(stream, chunk)
  await closeWriting(stream)
  await drain(stream)
  return MIB / ((performance.now() - start) / 1000)
}

/** Median and p99 of request/response on a new stream, in µs. */
async function requestResponse (connection: Connection): Promise<[number, number]> {
  const times: number[] = []
  const request = new Uint8Array(64).fill(2)
  for (let i = 0; i < REQUESTS; i++) {
    const start = performance.now()
    const stream = await connection.newStream(rrProtocol, LIMITS)
    stream.send(request)
    await closeWriting(stream)
    const got = await drain(stream)
    times.push((performance.now() - start) * 1000)
    if (got !== 64) throw new Error(`answer of ${got} bytes`)
  }
  times.sort((a, b) => a - b)
  return [times[Math.floor(times.length / 2)], times[Math.floor(times.length * 0.99)]]
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

const only = option('--muxers', '')
const connections: Array<{ name: string, connection: Connection, nodes: Libp2p[] }> = []
for (const [name, key, muxer] of MUXERS.filter(([name]) => only === '' || only.split(',').some(o => name.includes(o)))) {
  const client = await node(muxer, false)
  if (PEERS.size === 0) {
    const server = await node(muxer, true)
    connections.push({ name, connection: await client.dial(server.getMultiaddrs()[0]), nodes: [client, server] })
  } else {
    const peer = PEERS.get(key)
    if (peer === undefined) throw new Error(`no Rust peer for ${key} in --peers`)
    connections.push({ name, connection: await client.dial(multiaddr(peer)), nodes: [client] })
  }
}
const results = new Map<string, { bulk: number[], rr: number[], p99: number[] }>()
for (const { name } of connections) results.set(name, { bulk: [], rr: [], p99: [] })
for (let round = 0; round < ROUNDS; round++) {
  // Alternate the order, so that drift over the run does not favour one muxer.
  const order = round % 2 === 0 ? connections : [...connections].reverse()
  for (const { name, connection } of order) {
    const r = results.get(name)!
    r.bulk.push(await bulk(connection))
    const [rr, p99] = await requestResponse(connection)
    r.rr.push(rr)
    r.p99.push(p99)
  }
}
const link = PEERS.size === 0 ? 'JS ↔ JS' : 'JS → Rust (the same muxer on the Rust side)'
console.log(`${link} over TCP + noise on 127.0.0.1, medians of ${ROUNDS} alternating rounds; last column: ours / best peer`)
const rows: Array<[string, string, (r: { bulk: number[], rr: number[], p99: number[] }) => number, boolean]> = [
  [`1 stream, ${MIB} MiB`, 'MiB/s', r => median(r.bulk), true],
  ['request/response', 'µs', r => median(r.rr), false],
  ['request/response p99', 'µs', r => median(r.p99), false]
]
console.log(['workload'.padEnd(24), 'unit'.padStart(6), ...connections.map(c => c.name.padStart(24)), 'ours/best'.padStart(10)].join(' '))
for (const [label, unit, get, higherIsBetter] of rows) {
  const values = connections.map(c => get(results.get(c.name)!))
  const peers = values.slice(1)
  const best = peers.length === 0 ? NaN : higherIsBetter ? Math.max(...peers) : Math.min(...peers)
  const cells = values.map(v => (v >= 100 ? v.toFixed(0) : v.toFixed(1)).padStart(24))
  console.log([label.padEnd(24), unit.padStart(6), ...cells, (values[0] / best).toFixed(2).padStart(10)].join(' '))
}
for (const { nodes } of connections) for (const n of nodes) await n.stop()
