/**
 * The connection's state machine, free of I/O: it takes frames from the peer and calls from the
 * application, and hands back frames to send ({@link Connection.takeFrames}) and what to tell the
 * application ({@link Connection.takeEvents}). It follows PROTOCOL.md §3–6 in extension mode;
 * each stream has a send and a receive direction, each with its own state (§5).
 *
 * @module
 */

import { Uint8ArrayList } from 'uint8arraylist'
import { MAX_CREDIT, type Frame, type Uint } from './codec.js'
import { ProtocolViolationError } from './errors.js'
import { INITIAL_WINDOW, RecvWindow } from './flow.js'
import { RecvBuffer } from './recv-buffer.js'

/** A stream: its number, and whether this side opened it (the two sides number apart). */
export interface StreamRef {
  readonly local: boolean
  readonly num: Uint
}

/** The send direction (PROTOCOL.md §5): `stopped` is closed by the peer's CloseRead. */
export type SendState = 'open' | 'closed' | 'stopped' | 'reset'
/** The receive direction: `finished` is closed by the peer's Close, `stopped` by our close-read. */
export type RecvState = 'open' | 'finished' | 'stopped' | 'reset'

/** What the application is told. */
export type CoreEvent =
  | { type: 'incoming', stream: StreamRef }
  | { type: 'readable', stream: StreamRef }
  | { type: 'remote-close-write', stream: StreamRef }
  | { type: 'remote-close-read', stream: StreamRef, code: Uint }
  | { type: 'reset', stream: StreamRef, code: Uint }
  | { type: 'writable', stream: StreamRef }

/** Limits of one connection. */
export interface CoreConfig {
  /** Streams of both sides open at once; a NewStream beyond it is refused (default 128). */
  maxStreams: number
  /** How large one stream's receive window may grow (default 16 MiB). */
  maxStreamWindow: number
  /** What all receive windows together may grow to (default 64 MiB). */
  connectionBudget: number
  /** The largest Message body sent (default 64 KiB). */
  splitSize: number
}

export const DEFAULT_CORE_CONFIG: CoreConfig = {
  maxStreams: 128,
  maxStreamWindow: 16 * 1024 * 1024,
  connectionBudget: 64 * 1024 * 1024,
  splitSize: 64 * 1024
}

/** How old the last Ping may be before a grant carries another (PROTOCOL.md §6). */
const PING_INTERVAL_MS = 10_000

class StreamEntry {
  send: SendState = 'open'
  recv: RecvState = 'open'
  /** The peer's Close arrived (also after our close-read). */
  peerClosed = false
  sendCredit = INITIAL_WINDOW
  readonly window = new RecvWindow()
  readonly buffer = new RecvBuffer()
  /** The application let go of the stream. */
  released = false
  /** The window counts against the connection's budget (until receiving is over and drained). */
  windowCounted = true

  /** Done on the wire (PROTOCOL.md §5): nothing more will be sent or received. */
  get done (): boolean {
    if (this.send === 'reset') return true
    const sendDone = this.send === 'closed' || this.send === 'stopped'
    const recvDone = this.recv === 'finished' || (this.recv === 'stopped' && this.peerClosed)
    return sendDone && recvDone
  }
}

/** One connection's protocol state. See the module docs. */
export class Connection {
  private readonly config: CoreConfig
  private readonly now: () => number
  /** Streams this side opened, and the peer's, by number. */
  private readonly local = new Map<Uint, StreamEntry>()
  private readonly remote = new Map<Uint, StreamEntry>()
  private nextLocal = 0
  private frames: Frame[] = []
  /** Bytes of Message bodies in `frames`. */
  private queuedData = 0
  private events: CoreEvent[] = []
  private refusedInARow = 0
  /** The sum of the known streams' receive windows. */
  private windowTotal = 0
  /** The measured round trip (ms), the Ping in flight, and when the last one left. */
  private rtt: number | undefined
  private ping: { nonce: number, at: number } | undefined
  private lastPingAt: number | undefined
  private nextNonce = 0
  private reader: ((stream: StreamRef, data: Uint8Array | Uint8ArrayList) => boolean) | undefined

  constructor (config: Partial<CoreConfig> = {}, now: () => number = () => performance.now()) {
    this.config = { ...DEFAULT_CORE_CONFIG, ...config }
    this.now = now
  }

  /** The round trip measured with Ping and Pong, in milliseconds. */
  get roundTrip (): number | undefined {
    return this.rtt
  }

  /** Streams known, of both sides (including those let go whose last frames are pending). */
  get numStreams (): number {
    return this.local.size + this.remote.size
  }

  /** The largest Message body sent. */
  get splitSize (): number {
    return this.config.splitSize
  }

  /** How many frames wait to be taken by {@link Connection.takeFrames}. */
  get queuedFrames (): number {
    return this.frames.length
  }

  /** Frames to send, in order. */
  takeFrames (): Frame[] {
    const frames = this.frames
    this.frames = []
    this.queuedData = 0
    return frames
  }

  /** Bytes of Message bodies among the frames waiting to be taken. */
  get queuedDataBytes (): number {
    return this.queuedData
  }

  /** Events for the application, in order. */
  takeEvents (): CoreEvent[] {
    const events = this.events
    this.events = []
    return events
  }

  /** Whether a stream can be opened now (below the stream limit). */
  canOpen (): boolean {
    return this.numStreams < this.config.maxStreams
  }

  /** Opens a stream and queues its NewStream; `undefined` at the stream limit. */
  open (): StreamRef | undefined {
    if (!this.canOpen()) return undefined
    const num = this.nextLocal++
    this.local.set(num, this.newEntry())
    this.frames.push({ type: 'new-stream', num, name: new TextEncoder().encode(String(num)) })
    return { local: true, num }
  }

  /** The state of a stream's two directions, or `undefined` once it is forgotten. */
  state (stream: StreamRef): { send: SendState, recv: RecvState } | undefined {
    const entry = this.entry(stream)
    return entry === undefined ? undefined : { send: entry.send, recv: entry.recv }
  }

  /** How many bytes `stream` may send now. */
  sendCredit (stream: StreamRef): number {
    const entry = this.entry(stream)
    return entry?.send === 'open' ? entry.sendCredit : 0
  }

  /**
   * Queues as much of `data` as the stream's credit allows, in Messages of at most the split
   * size; returns how many bytes were taken. Nothing is taken unless the send direction is open.
   * `continuation`: `data` continues the last write (see below).
   */
  write (stream: StreamRef, data: Uint8ArrayList, continuation = false): number {
    const entry = this.entry(stream)
    if (entry === undefined || entry.send !== 'open') return 0
    const len = Math.min(data.byteLength, entry.sendCredit)
    let at = 0
    // A continuation of the last write (the rest of a write handed over in pieces) fills the
    // last Message, if it was not taken yet, up to the split size: a large write leaves as
    // Messages of the split size, not one per piece. Other writes keep their own Messages.
    const last = this.frames.at(-1)
    if (continuation && last?.type === 'message' && last.num === stream.num && last.initiator === stream.local && last.data instanceof Uint8ArrayList) {
      at = Math.min(len, this.config.splitSize - last.data.byteLength)
      if (at > 0) for (const piece of data.sublist(0, at)) last.data.append(piece)
    }
    this.queuedData += len
    for (; at < len; at += this.config.splitSize) {
      const end = Math.min(len, at + this.config.splitSize)
      this.frames.push({ type: 'message', num: stream.num, initiator: stream.local, data: data.sublist(at, end) })
    }
    entry.sendCredit -= len
    return len
  }

  /** Close-write (FIN): queues Close behind the data. Nothing if already closed, stopped or reset. */
  closeWrite (stream: StreamRef): void {
    const entry = this.entry(stream)
    if (entry === undefined || entry.send !== 'open') return
    entry.send = 'closed'
    this.frames.push({ type: 'close', num: stream.num, initiator: stream.local })
    this.forgetIfDone(stream, entry)
  }

  /**
   * Close-read (stop-sending): drops what is buffered; from Open, sends CloseRead with `code`.
   * From Finished it sends nothing. Nothing once stopped or reset.
   */
  closeRead (stream: StreamRef, code: Uint = 0): void {
    const entry = this.entry(stream)
    if (entry === undefined) return
    if (entry.recv === 'open') {
      this.frames.push({ type: 'close-read', num: stream.num, initiator: stream.local, code })
    } else if (entry.recv !== 'finished') {
      return
    }
    entry.recv = 'stopped'
    entry.buffer.clear()
    this.forgetIfDone(stream, entry)
  }

  /** Resets the stream with `code`: both directions end, buffered data is dropped. */
  reset (stream: StreamRef, code: Uint = 0): void {
    const entry = this.entry(stream)
    if (entry === undefined || entry.send === 'reset') return
    // A stream done on the wire ends locally only: the peer expects nothing more.
    if (!entry.done) this.frames.push({ type: 'reset', num: stream.num, initiator: stream.local, code })
    entry.send = 'reset'
    entry.recv = 'reset'
    entry.buffer.clear()
    this.forgetIfDone(stream, entry)
  }

  /** The stream's receive window, or `undefined` once it is forgotten. */
  receiveWindow (stream: StreamRef): number | undefined {
    return this.entry(stream)?.window.size
  }

  /** Bytes received and not yet taken. */
  buffered (stream: StreamRef): number {
    return this.entry(stream)?.buffer.unread ?? 0
  }

  /**
   * Takes everything received on `stream` so far; the memory it held is released, and credit
   * goes back for it (PROTOCOL.md §6).
   */
  read (stream: StreamRef): Uint8ArrayList | undefined {
    const entry = this.entry(stream)
    if (entry === undefined || entry.buffer.unread === 0) return undefined
    const data = entry.buffer.takeAll()
    if (entry.recv === 'open') this.consumed(stream, entry, data.byteLength)
    this.settleWindow(entry)
    return data
  }

  /**
   * Takes the first message (or gathered buffer) received on `stream`, for a reader that pulls
   * one at a time; credit goes back for it as for {@link Connection.read}.
   */
  readOne (stream: StreamRef): Uint8Array | undefined {
    const entry = this.entry(stream)
    const data = entry?.buffer.takeOne()
    if (entry === undefined || data === undefined) return undefined
    if (entry.recv === 'open') this.consumed(stream, entry, data.byteLength)
    this.settleWindow(entry)
    return data
  }

  /**
   * The application let go of the stream. What is still open is ended as PROTOCOL.md §5
   * ("Releasing a stream") says: Close if only sending is open, Reset if both are, CloseRead
   * if only receiving is. The stream is forgotten once done on the wire.
   */
  release (stream: StreamRef): void {
    const entry = this.entry(stream)
    if (entry === undefined) return
    entry.released = true
    const sendOpen = entry.send === 'open'
    const recvOpen = entry.recv === 'open'
    if (sendOpen && recvOpen) this.reset(stream, 0)
    else if (sendOpen) this.closeWrite(stream)
    else if (recvOpen) this.closeRead(stream, 0)
    this.forgetIfDone(stream, entry)
  }

  /** Handles a frame from the peer. Throws a {@link ProtocolViolationError} for a violation. */
  handleFrame (frame: Frame): void {
    switch (frame.type) {
      case 'new-stream': return this.onNewStream(frame.num)
      case 'ping':
        this.frames.push({ type: 'pong', nonce: frame.nonce })
        return
      case 'pong':
        if (this.ping !== undefined && frame.nonce === this.ping.nonce) {
          this.rtt = this.now() - this.ping.at
          this.ping = undefined
        }
        return
      default:
    }
    // A frame's sender opened the stream if its flag says "initiator": then it is the peer's.
    const stream: StreamRef = { local: !frame.initiator, num: frame.num }
    const entry = this.entry(stream)
    if (entry === undefined) return // unknown, refused or forgotten: discarded (§5)
    switch (frame.type) {
      case 'message': return this.onMessage(stream, entry, frame.data)
      case 'close':
        if (entry.peerClosed) break
        entry.peerClosed = true
        if (entry.recv === 'open') entry.recv = 'finished'
        // Also after our close-read: the application learns that the direction has ended.
        if (entry.recv === 'finished' || entry.recv === 'stopped') {
          this.events.push({ type: 'remote-close-write', stream })
        }
        break
      case 'reset':
        if (entry.send === 'reset') break
        entry.send = 'reset'
        if (entry.recv !== 'finished') {
          entry.recv = 'reset'
          entry.buffer.clear()
        }
        this.events.push({ type: 'reset', stream, code: frame.code })
        break
      case 'close-read':
        if (entry.send === 'open') {
          entry.send = 'stopped'
          this.frames.push({ type: 'close', num: stream.num, initiator: stream.local })
          this.events.push({ type: 'remote-close-read', stream, code: frame.code })
        }
        break
      case 'window-update':
        if (entry.sendCredit + frame.credit > MAX_CREDIT) {
          throw new ProtocolViolationError('WindowOverflow', `window update overflows the send window of stream ${describe(stream)}`)
        }
        entry.sendCredit += frame.credit
        if (entry.send === 'open') this.events.push({ type: 'writable', stream })
        break
    }
    this.forgetIfDone(stream, entry)
  }

  private onNewStream (num: Uint): void {
    if (this.remote.has(num)) {
      throw new ProtocolViolationError('NewStreamForLiveId', `NewStream for stream ${num}, which is still open`)
    }
    if (!this.canOpen()) {
      // Refused: a Reset with no code, and the stream stays unknown (§3).
      this.frames.push({ type: 'reset', num, initiator: false, code: 0 })
      this.refusedInARow++
      if (this.refusedInARow > Math.max(256, this.config.maxStreams)) {
        throw new ProtocolViolationError('TooManyRefusedStreams', `peer opened ${this.refusedInARow} streams in a row beyond the stream limit`)
      }
      return
    }
    this.refusedInARow = 0
    this.remote.set(num, this.newEntry())
    this.events.push({ type: 'incoming', stream: { local: false, num } })
  }

  private onMessage (stream: StreamRef, entry: StreamEntry, data: Uint8Array | Uint8ArrayList): void {
    const len = data.byteLength
    const credit = entry.window.remaining
    if (!entry.window.onData(len)) {
      throw new ProtocolViolationError('CreditExceeded', `${len} bytes of data on stream ${describe(stream)} with only ${credit} bytes of credit`)
    }
    if (entry.recv !== 'open' || len === 0) return // after Close, CloseRead or Reset: discarded
    const wasEmpty = entry.buffer.unread === 0
    if (wasEmpty && this.reader?.(stream, data) === true) {
      // The application took it as it came: nothing is held, the credit goes back.
      this.consumed(stream, entry, len)
      return
    }
    entry.buffer.push(data)
    if (wasEmpty) this.events.push({ type: 'readable', stream })
  }

  /**
   * Lets the application take data as it arrives: `reader` is offered each Message body of a
   * stream with nothing buffered, and returns true if it took the body (then nothing is
   * copied or held). Otherwise the body is copied into the stream's buffer and `readable`
   * follows.
   */
  setReader (reader: (stream: StreamRef, data: Uint8Array | Uint8ArrayList) => boolean): void {
    this.reader = reader
  }

  private consumed (stream: StreamRef, entry: StreamEntry, len: number): void {
    const reserved = (this.config.maxStreams - this.numStreams) * INITIAL_WINDOW
    const budget = Math.max(0, this.config.connectionBudget - this.windowTotal - reserved)
    const grant = entry.window.onConsumed(len, this.config.maxStreamWindow, budget, this.rtt, this.now)
    if (grant === undefined) return
    this.windowTotal += grant.growth
    this.frames.push({ type: 'window-update', num: stream.num, initiator: stream.local, credit: grant.credit })
    // The windows need the round trip: a Ping goes with a grant when one is due.
    if (this.ping === undefined && (this.lastPingAt === undefined || grant.at - this.lastPingAt >= PING_INTERVAL_MS)) {
      const nonce = this.nextNonce++
      this.ping = { nonce, at: grant.at }
      this.lastPingAt = grant.at
      this.frames.push({ type: 'ping', nonce })
    }
  }

  private newEntry (): StreamEntry {
    this.windowTotal += INITIAL_WINDOW
    return new StreamEntry()
  }

  private entry (stream: StreamRef): StreamEntry | undefined {
    return (stream.local ? this.local : this.remote).get(stream.num)
  }

  /**
   * A stream whose receiving is over (the peer's Close, close-read or reset) and drained holds
   * nothing more and will be granted nothing more: its window stops counting against the
   * budget, so that a half-closed stream that only sends does not keep other windows from
   * growing.
   */
  private settleWindow (entry: StreamEntry): void {
    if (!entry.windowCounted || entry.recv === 'open' || entry.buffer.unread > 0) return
    entry.windowCounted = false
    this.windowTotal -= entry.window.size
  }

  private forgetIfDone (stream: StreamRef, entry: StreamEntry): void {
    this.settleWindow(entry)
    if (!entry.released || !entry.done) return
    const map = stream.local ? this.local : this.remote
    if (map.get(stream.num) !== entry) return
    map.delete(stream.num)
    if (entry.windowCounted) this.windowTotal -= entry.window.size
  }
}

function describe (stream: StreamRef): string {
  return `${stream.local ? 'local' : 'remote'} ${stream.num}`
}
