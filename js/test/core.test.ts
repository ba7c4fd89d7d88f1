/**
 * The core against PROTOCOL.md §5 and §6, row by row: two cores back to back, every frame
 * through the codec, nothing else (no runtime, no sockets, a virtual clock).
 */

import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Uint8ArrayList } from 'uint8arraylist'
import { encodeFrame, FrameDecoder, type Frame } from '../src/codec.js'
import { Connection, type CoreConfig, type CoreEvent, type StreamRef } from '../src/core.js'
import { ProtocolViolationError } from '../src/errors.js'
import { INITIAL_WINDOW } from '../src/flow.js'

/** Two cores and the frames between them; `clock` is virtual milliseconds. */
class Pair {
  clock = 0
  readonly a: Connection
  readonly b: Connection
  readonly events = { a: [] as CoreEvent[], b: [] as CoreEvent[] }
  readonly sent = { a: [] as Frame[], b: [] as Frame[] }

  constructor (config: Partial<CoreConfig> = {}) {
    this.a = new Connection(config, () => this.clock)
    this.b = new Connection(config, () => this.clock)
  }

  /** Delivers frames both ways until neither side has any; `latency` ms pass per hop. */
  run (latency = 0): void {
    for (let hops = 0; hops < 10_000; hops++) {
      const fromA = this.a.takeFrames()
      const fromB = this.b.takeFrames()
      if (fromA.length === 0 && fromB.length === 0) return
      this.clock += latency
      this.deliver(fromA, this.b, 'a')
      this.deliver(fromB, this.a, 'b')
      this.events.a.push(...this.a.takeEvents())
      this.events.b.push(...this.b.takeEvents())
    }
    throw new Error('frames kept flowing')
  }

  private deliver (frames: Frame[], to: Connection, from: 'a' | 'b'): void {
    this.sent[from].push(...frames)
    const decoder = new FrameDecoder('extension')
    for (const frame of frames) decoder.push(new Uint8ArrayList(...encodeFrame(frame, 'extension')))
    for (let frame = decoder.next(); frame !== undefined; frame = decoder.next()) to.handleFrame(frame)
  }

  /** A stream opened by `a`, known to `b`: a's ref and b's ref. */
  open (): { sa: StreamRef, sb: StreamRef } {
    const sa = this.a.open()
    assert.ok(sa !== undefined)
    this.run()
    const incoming = this.events.b.filter(e => e.type === 'incoming').at(-1)
    assert.ok(incoming !== undefined)
    return { sa, sb: incoming.stream }
  }

  types (side: 'a' | 'b'): string[] {
    return this.events[side].map(e => e.type)
  }

  clearRecords (): void {
    this.events.a.length = 0
    this.events.b.length = 0
    this.sent.a.length = 0
    this.sent.b.length = 0
  }
}

const bytes = (n: number, fill = 1): Uint8ArrayList => new Uint8ArrayList(new Uint8Array(n).fill(fill))
const text = (list: Uint8ArrayList | undefined): string => new TextDecoder().decode(list?.subarray() ?? new Uint8Array())
const ascii = (s: string): Uint8ArrayList => new Uint8ArrayList(new TextEncoder().encode(s))

function violation (fn: () => void): string {
  try {
    fn()
  } catch (e) {
    assert.ok(e instanceof ProtocolViolationError)
    return e.kind
  }
  return 'none'
}

describe('send direction (PROTOCOL.md §5)', () => {
  it('Open, application writes: Messages within credit; the peer reads them', () => {
    const p = new Pair()
    const { sa, sb } = p.open()
    assert.equal(p.a.write(sa, bytes(INITIAL_WINDOW + 10)), INITIAL_WINDOW, 'no more than the credit')
    assert.equal(p.a.sendCredit(sa), 0)
    p.run()
    assert.equal(p.b.buffered(sb), INITIAL_WINDOW)
    assert.deepEqual(p.types('b').filter(t => t === 'readable'), ['readable'])
  })

  it('Open, application closes writing: Close after the queued data; the peer drains, then EOF', () => {
    const p = new Pair()
    const { sa, sb } = p.open()
    p.a.write(sa, ascii('hello'))
    p.a.closeWrite(sa)
    p.run()
    assert.deepEqual(p.a.state(sa), { send: 'closed', recv: 'open' })
    assert.deepEqual(p.b.state(sb), { send: 'open', recv: 'finished' })
    assert.equal(text(p.b.read(sb)), 'hello')
    assert.deepEqual(p.types('b').slice(-2), ['readable', 'remote-close-write'])
  })

  it('Open, CloseRead received: writes stop, the code reaches the writer, Close goes back', () => {
    const p = new Pair()
    const { sa, sb } = p.open()
    p.clearRecords()
    p.b.closeRead(sb, 7)
    p.run()
    assert.deepEqual(p.events.a.at(-1), { type: 'remote-close-read', stream: sa, code: 7 })
    assert.deepEqual(p.a.state(sa), { send: 'stopped', recv: 'open' })
    assert.equal(p.a.write(sa, ascii('late')), 0)
    assert.deepEqual(p.sent.a.map(f => f.type), ['close'], 'Close answers CloseRead')
    assert.deepEqual(p.b.state(sb), { send: 'open', recv: 'stopped' })
  })

  it('Closed, CloseRead received: nothing', () => {
    const p = new Pair()
    const { sa, sb } = p.open()
    p.a.closeWrite(sa)
    p.run()
    p.clearRecords()
    p.b.closeRead(sb)
    p.run()
    assert.deepEqual(p.sent.b.map(f => f.type), [], 'finished: close-read sends nothing')
    assert.deepEqual(p.sent.a, [])
    assert.deepEqual(p.events.a, [])
  })

  it('Closed or Stopped, application writes: nothing is taken', () => {
    const p = new Pair()
    const { sa } = p.open()
    p.a.closeWrite(sa)
    assert.equal(p.a.write(sa, ascii('x')), 0)
    p.a.closeWrite(sa)
    p.run()
    assert.deepEqual(p.sent.a.filter(f => f.type === 'close').length, 1, 'one Close')
  })

  it('any state, Reset sent or received: unsent data dropped, both directions reset, the code goes across', () => {
    const p = new Pair()
    const { sa, sb } = p.open()
    p.b.write(sb, ascii('unread'))
    p.run()
    p.a.reset(sa, 2n ** 64n - 1n)
    p.run()
    assert.deepEqual(p.events.b.at(-1), { type: 'reset', stream: sb, code: 2n ** 64n - 1n })
    assert.deepEqual(p.b.state(sb), { send: 'reset', recv: 'reset' })
    assert.deepEqual(p.a.state(sa), { send: 'reset', recv: 'reset' })
    assert.equal(p.a.read(sa), undefined, 'a reset drops what was buffered')
    assert.equal(p.b.write(sb, ascii('x')), 0)
  })
})

describe('receive direction (PROTOCOL.md §5)', () => {
  it('Finished, application closes reading: drops the buffer, sends nothing', () => {
    const p = new Pair()
    const { sa, sb } = p.open()
    p.a.write(sa, ascii('data'))
    p.a.closeWrite(sa)
    p.run()
    p.clearRecords()
    p.b.closeRead(sb)
    assert.deepEqual(p.b.state(sb), { send: 'open', recv: 'stopped' })
    assert.equal(p.b.buffered(sb), 0)
    p.run()
    assert.deepEqual(p.sent.b, [])
  })

  it('Stopped, Message received: discarded, but counted against the credit', () => {
    const p = new Pair()
    const { sa, sb } = p.open()
    p.b.closeRead(sb)
    // Data already in flight when the CloseRead left.
    assert.equal(p.a.write(sa, bytes(1000)), 1000)
    p.run()
    assert.equal(p.b.buffered(sb), 0)
    assert.ok(!p.types('b').includes('readable'))
    // A peer that ignores its credit is caught in this state too.
    assert.equal(violation(() => p.b.handleFrame({ type: 'message', num: sa.num, initiator: true, data: new Uint8Array(INITIAL_WINDOW) })), 'CreditExceeded')
  })

  it('Stopped, Close received: nothing more; the stream is done on the wire', () => {
    const p = new Pair()
    const { sa, sb } = p.open()
    p.b.closeRead(sb)
    p.run() // a answers with Close
    assert.deepEqual(p.b.state(sb), { send: 'open', recv: 'stopped' })
    p.b.closeWrite(sb)
    p.run()
    p.a.release(sa)
    p.b.release(sb)
    p.run()
    assert.equal(p.a.numStreams, 0)
    assert.equal(p.b.numStreams, 0)
  })

  it('Open or Stopped, Reset received: buffer dropped, reads fail', () => {
    const p = new Pair()
    const { sa, sb } = p.open()
    p.a.write(sa, ascii('x'))
    p.run()
    p.a.reset(sa, 3)
    p.run()
    assert.equal(p.b.read(sb), undefined)
    assert.deepEqual(p.b.state(sb), { send: 'reset', recv: 'reset' })
  })

  it('Finished, Reset received: the data stays readable (Close then Reset, as mplex peers give up)', () => {
    const p = new Pair()
    const { sa, sb } = p.open()
    p.a.write(sa, ascii('complete'))
    p.a.closeWrite(sa)
    p.run()
    p.b.write(sb, ascii('answer'))
    p.run()
    p.a.reset(sa, 0)
    p.run()
    assert.deepEqual(p.b.state(sb), { send: 'reset', recv: 'finished' })
    assert.equal(text(p.b.read(sb)), 'complete')
  })

  it('Finished, Reset sent: buffer dropped', () => {
    const p = new Pair()
    const { sa, sb } = p.open()
    p.a.write(sa, ascii('x'))
    p.a.closeWrite(sa)
    p.run()
    p.b.reset(sb, 1)
    assert.equal(p.b.read(sb), undefined)
    assert.deepEqual(p.b.state(sb), { send: 'reset', recv: 'reset' })
  })
})

describe('releasing a stream (PROTOCOL.md §5)', () => {
  it('sends Reset if both directions are open, Close if only sending is, CloseRead if only receiving is', () => {
    const p = new Pair()
    const both = p.open()
    const sendOnly = p.open()
    const recvOnly = p.open()
    p.b.closeRead(sendOnly.sb)
    p.b.closeWrite(recvOnly.sb)
    p.run()
    p.clearRecords()
    p.b.release(both.sb)
    p.run()
    assert.deepEqual(p.sent.b.map(f => f.type), ['reset'])
    p.b.closeWrite(sendOnly.sb)
    p.run()
    p.clearRecords()
    p.b.release(recvOnly.sb)
    p.run()
    assert.deepEqual(p.sent.b.map(f => f.type), ['close-read'])
    // recvOnly is forgotten once the Close that answers its CloseRead arrives; sendOnly is
    // still held by its application.
    assert.equal(p.b.numStreams, 1)
    assert.notEqual(p.b.state(sendOnly.sb), undefined)
  })
})

describe('stream limit, unknown streams and violations', () => {
  it('a NewStream beyond the limit is refused with an empty Reset; the stream stays unknown', () => {
    const p = new Pair({ maxStreams: 2 })
    p.open()
    p.open()
    // a bypasses its own limit: frames straight to b.
    p.b.handleFrame({ type: 'new-stream', num: 2, name: new Uint8Array() })
    assert.deepEqual(p.b.takeFrames(), [{ type: 'reset', num: 2, initiator: false, code: 0 }])
    p.b.handleFrame({ type: 'message', num: 2, initiator: true, data: new Uint8Array(INITIAL_WINDOW * 2) })
    assert.equal(p.b.numStreams, 2)
    assert.deepEqual(p.b.takeEvents(), [])
  })

  it('more than max(256, limit) refusals in a row end the connection', () => {
    const b = new Connection({ maxStreams: 1 })
    b.handleFrame({ type: 'new-stream', num: 0, name: new Uint8Array() })
    for (let n = 1; n <= 256; n++) b.handleFrame({ type: 'new-stream', num: n, name: new Uint8Array() })
    assert.equal(violation(() => b.handleFrame({ type: 'new-stream', num: 257, name: new Uint8Array() })), 'TooManyRefusedStreams')
  })

  it('a NewStream for a stream still known is a violation; frames for unknown streams are discarded', () => {
    const p = new Pair()
    const { sa } = p.open()
    assert.equal(violation(() => p.b.handleFrame({ type: 'new-stream', num: sa.num, name: new Uint8Array() })), 'NewStreamForLiveId')
    for (const frame of [
      { type: 'message', num: 99, initiator: true, data: new Uint8Array(INITIAL_WINDOW + 1) },
      { type: 'close', num: 99, initiator: false },
      { type: 'reset', num: 99, initiator: true, code: 1 },
      { type: 'window-update', num: 99, initiator: true, credit: 2 ** 32 - 1 }
    ] as Frame[]) {
      p.b.handleFrame(frame)
    }
    assert.deepEqual(p.b.takeEvents(), [])
  })

  it('credit above 2^32 - 1 is a violation', () => {
    const p = new Pair()
    const { sb } = p.open()
    assert.equal(violation(() => p.a.handleFrame({ type: 'window-update', num: sb.num, initiator: false, credit: 2 ** 32 - INITIAL_WINDOW })), 'WindowOverflow')
  })

  it('a Ping is answered with its nonce; a Pong for no Ping is ignored', () => {
    const b = new Connection()
    b.handleFrame({ type: 'ping', nonce: 2n ** 63n })
    b.handleFrame({ type: 'pong', nonce: 5 })
    assert.deepEqual(b.takeFrames(), [{ type: 'pong', nonce: 2n ** 63n }])
    assert.equal(b.roundTrip, undefined)
  })
})

describe('flow control (PROTOCOL.md §6)', () => {
  it('a stream nobody reads holds its window while a stream beside it moves 64 MiB, and its window grows', () => {
    const p = new Pair()
    const slow = p.open()
    const fast = p.open()
    const chunk = bytes(1024 * 1024)
    let moved = 0
    let slowSent = 0
    for (let round = 0; round < 10_000 && moved < 64 * 1024 * 1024; round++) {
      slowSent += p.a.write(slow.sa, chunk)
      p.a.write(fast.sa, chunk)
      p.run(1) // 1 ms per hop: a 2 ms round trip
      moved += p.b.read(fast.sb)?.byteLength ?? 0
    }
    assert.ok(moved >= 64 * 1024 * 1024, `moved ${moved}`)
    assert.equal(slowSent, INITIAL_WINDOW, 'the slow stream got no credit back')
    assert.equal(p.b.buffered(slow.sb), INITIAL_WINDOW, 'and holds no more than its window')
    assert.equal(p.b.roundTrip, 2)
    // The fast stream's grants grew beyond the initial window.
    const grants = p.sent.b.filter(f => f.type === 'window-update' && f.num === fast.sb.num).map(f => (f as { credit: number }).credit)
    assert.ok(Math.max(...grants) > INITIAL_WINDOW, `largest grant ${Math.max(...grants)}`)
    // Reading the slow stream gives its credit back.
    assert.equal(p.b.read(slow.sb)?.byteLength, INITIAL_WINDOW)
    p.run()
    assert.equal(p.a.sendCredit(slow.sa), INITIAL_WINDOW)
  })

  it('windows grow only within the budget left after every stream that may open has its initial window', () => {
    const grownWindow = (budget: number): number | undefined => {
      const p = new Pair({ maxStreams: 4, connectionBudget: budget, maxStreamWindow: 64 * INITIAL_WINDOW })
      const { sa, sb } = p.open()
      for (let round = 0; round < 200; round++) {
        p.a.write(sa, bytes(INITIAL_WINDOW * 128))
        p.run(1)
        p.b.read(sb)
      }
      return p.b.receiveWindow(sb)
    }
    // 4 streams' initial windows are reserved: of 5 windows' budget, one is left to grow by.
    assert.equal(grownWindow(5 * INITIAL_WINDOW), 2 * INITIAL_WINDOW)
    assert.equal(grownWindow(4 * INITIAL_WINDOW), INITIAL_WINDOW)
    assert.equal(grownWindow(1024 * INITIAL_WINDOW), 64 * INITIAL_WINDOW, 'up to the maximum')
  })

  it('a stream whose receiving is over and drained gives its window back to the budget, also while it still sends', () => {
    // 4 streams' initial windows reserved; of 5 windows' budget, one is left to grow by.
    const p = new Pair({ maxStreams: 4, connectionBudget: 5 * INITIAL_WINDOW, maxStreamWindow: 64 * INITIAL_WINDOW })
    const grow = (s: { sa: StreamRef, sb: StreamRef }): number | undefined => {
      for (let round = 0; round < 200; round++) {
        p.a.write(s.sa, bytes(INITIAL_WINDOW * 8))
        p.run(1)
        p.b.read(s.sb)
      }
      return p.b.receiveWindow(s.sb)
    }
    const first = p.open()
    assert.equal(grow(first), 2 * INITIAL_WINDOW)
    // The peer finishes sending on the first stream; it stays open for b's writes.
    p.a.closeWrite(first.sa)
    p.run(1)
    p.b.read(first.sb)
    assert.equal(p.b.state(first.sb)?.send, 'open')
    // A second stream may now grow into the first one's two windows (it doubles, then grows by
    // the one window left); before, the budget stayed spent and it could not grow at all.
    assert.equal(grow(p.open()), 3 * INITIAL_WINDOW)
  })
})
