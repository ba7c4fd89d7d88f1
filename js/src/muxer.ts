/**
 * The js-libp2p adapter: {@link HalfcloseStreamMuxer} feeds the connection's bytes to the
 * decoder and the {@link Connection} core, sends what the core queues, and turns the core's
 * events into the calls js-libp2p's `AbstractStream` expects. The protocol lives in the core;
 * this file only translates.
 *
 * @module
 */

import { AbstractStream, AbstractStreamMuxer } from '@libp2p/utils'
import type { AbstractStreamInit, SendResult } from '@libp2p/utils'
import { ConnectionClosedError, StreamMessageEvent, StreamResetError, StreamStateError } from '@libp2p/interface'
import type { AbortOptions, CreateStreamOptions, EventHandler, Logger, MessageStream, MessageStreamEvents, StreamMuxerOptions } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { encodeFrames, FrameDecoder, type Uint } from './codec.js'
import { Connection, type CoreConfig, type CoreEvent, type StreamRef } from './core.js'
import { StreamStoppedError } from './errors.js'

/** The protocol id of the extension (PROTOCOL.md §1). */
export const PROTOCOL_ID = '/mplex-halfclose/1.0.0'

/** The muxer's options: js-libp2p's muxer options, and the protocol's limits. */
export interface MplexHalfcloseInit extends StreamMuxerOptions, Partial<CoreConfig> {}

/** What a stream's close-read may carry: the code handed to the writer's application. */
export interface CloseReadOptions extends AbortOptions {
  /** The code the peer's writes fail with (default 0). */
  code?: number | bigint
}

/**
 * While the connection cannot take more, at most `ANSWERS_BASE + 4 × maxStreams` answers
 * (Pongs, Resets, WindowUpdates, Closes) are queued for it before the muxer stops handling the
 * peer's frames and reading: a peer that never reads cannot make it queue answers without end
 * (PROTOCOL.md §9). Answers leave in batches of at most {@link ANSWER_BATCH} frames while a
 * chunk of the peer's frames is handled, so the check sees them.
 */
const ANSWERS_BASE = 1024
const ANSWER_BATCH = 256

/**
 * What a stream's queued writes are handed to the muxer in, at most (js-libp2p's
 * `maxMessageSize`; the split size if smaller). js-libp2p puts back what the muxer did not take
 * (out of credit) with a call that takes each of its arrays as an argument: 2^17 one-byte
 * writes overflowed the stack there and were lost. Pieces of 64 KiB keep that to 65,536 arrays
 * (the core joins them into Messages of a larger split size again). Measured in memory, 64 KiB
 * pieces moved 2,600–2,800 MiB/s through a stream, 32 KiB 1,750–1,900, 16 KiB 1,670–1,830,
 * and no limit (js-libp2p's default) 1,900–2,000.
 */
const SEND_PIECE = 64 * 1024

/**
 * The reset code an error carries: its `code`, if that is an unsigned integer below 2^64 (a
 * number or a bigint), else 0.
 */
export function resetCodeOf (err: unknown): Uint {
  const code = (err as { code?: unknown } | undefined)?.code
  if (typeof code === 'number' && Number.isInteger(code) && code >= 0 && code < 2 ** 64) {
    // Integers above 2^53 - 1 that a number holds exactly go as bigints.
    return Number.isSafeInteger(code) ? code : BigInt(code)
  }
  if (typeof code === 'bigint' && code >= 0n && code < 1n << 64n) return code <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(code) : code
  return 0
}

/** Whether `piece` shows less than half of the memory it keeps alive. */
const wasteful = (piece: Uint8Array): boolean => piece.byteLength * 2 < piece.buffer.byteLength

/**
 * `data` as a reader may keep it: a piece that shows less than half of the buffer behind it
 * (a 1-byte message in a 64 KiB chunk of the connection) is copied, so that a reader holding
 * messages holds at most twice their bytes; larger views go as they are.
 */
function withoutWastefulViews (data: Uint8Array | Uint8ArrayList): Uint8Array | Uint8ArrayList {
  if (data instanceof Uint8Array) return wasteful(data) ? new Uint8Array(data) : data
  let any = false
  for (const piece of data) any ||= wasteful(piece)
  if (!any) return data
  const out = new Uint8ArrayList()
  for (const piece of data) out.append(wasteful(piece) ? new Uint8Array(piece) : piece)
  return out
}

/**
 * How much bulk data one write to the connection gathers at most: a writer that awaits each
 * write would otherwise have each 64 KiB leave in a write (and an encrypted message) of its own.
 */
const BULK_BATCH = 1024 * 1024

/** Runs `task` in a later turn of the event loop (after I/O), not as a microtask. */
const setImmediateIfAny = (globalThis as { setImmediate?: (task: () => void) => unknown }).setImmediate
const nextTurn: (task: () => void) => void = setImmediateIfAny !== undefined
  ? (task) => { setImmediateIfAny(task) }
  : (() => {
      // Browsers: a message to oneself is a task without setTimeout's clamping.
      const channel = new MessageChannel()
      const tasks: Array<() => void> = []
      channel.port1.onmessage = () => { tasks.shift()?.() }
      return (task: () => void) => {
        tasks.push(task)
        channel.port2.postMessage(null)
      }
    })()

/**
 * A stream's logger: the muxer's, with `scope` written in front of each message. A logger of
 * its own (`newScope`) costs 10–20 µs to create with js-libp2p's default, `debug`-based loggers
 * (`debug` asks whether stderr is a terminal for every logger it creates), and a stream made two
 * (its own, and its protocol negotiation's): 6–15 µs of a request on a new stream against a
 * Rust node (2–5 %), measured alternating with `newScope` in one process. Stream messages so
 * show under the muxer's namespace, with the stream (`i3`, `r3`) and any scope below it
 * (`mss:select`) in front, and follow what the muxer's logger logs (its trace messages are
 * decided when the connection is made, as js-libp2p decides them for each logger).
 */
function scopedLogger (base: Logger, scope: string): Logger {
  // A `%` in a scope is text, not a format.
  const prefix = scope.replaceAll('%', '%%')
  /** `base`'s logger `kind`, called as its method, with the scope in front. */
  const tagged = (kind: 'error' | 'trace' | undefined): Logger['error'] => {
    const sink = (): Logger['error'] & { enabled?: boolean } => kind === undefined ? base : base[kind]
    const log = (formatter: unknown, ...args: unknown[]): void => {
      const target = sink()
      if (target.enabled === false) return
      const first = typeof formatter === 'string' ? `${prefix} ${formatter}` : `${prefix} %O`
      const rest = typeof formatter === 'string' ? args : [formatter, ...args]
      Reflect.apply(target, kind === undefined ? undefined : base, [first, ...rest])
    }
    return Object.defineProperty(log, 'enabled', { get: () => sink().enabled !== false })
  }
  const log = Object.assign(tagged(undefined), {
    error: tagged('error'),
    trace: tagged('trace'),
    newScope: (name: string) => scopedLogger(base, `${scope}:${name}`)
  })
  return log as unknown as Logger
}

/** A `for await` loop reading a stream: the message it was handed, and how to wake it. */
interface PullingReader {
  slot: Uint8Array | Uint8ArrayList | undefined
  wake: (() => void) | undefined
}

/** Wakes `reader` if it waits. */
function wake (reader: PullingReader): void {
  const resolve = reader.wake
  reader.wake = undefined
  resolve?.()
}

/** The length of the first array `list` holds. */
function firstLength (list: Uint8ArrayList): number {
  for (const first of list) return first.byteLength
  return 0
}

/** A stream of the extension: js-libp2p's `Stream`, with close-read on the wire and reset codes. */
export class HalfcloseStream extends AbstractStream {
  /** The stream's number and side. */
  readonly ref: StreamRef
  /** The code of the peer's close-read, once it stopped reading: writes fail with it. */
  stoppedCode: Uint | undefined
  /** The code of the reset that ended the stream, sent or received. */
  resetCode: Uint | undefined
  private readonly muxer: HalfcloseStreamMuxer

  /** The error the stream ended with, as it came: what a waiting writer fails with. */
  private closedWith: Error | undefined
  /** The peer had closed writing when it reset the stream: its data is complete (§5). */
  private finishedBeforeReset = false

  constructor (init: AbstractStreamInit & { ref: StreamRef, muxer: HalfcloseStreamMuxer }) {
    super(init)
    this.ref = init.ref
    this.muxer = init.muxer
    this.addEventListener('close', (evt) => {
      this.closedWith = evt.error
      this.wakeReaders()
    })
    this.addEventListener('remoteCloseWrite', () => { this.wakeReaders() })
  }

  /**
   * Why the stream ended, as its readers learn it (also one that comes later): the error it
   * ended with, except a reset that came after the peer's Close (PROTOCOL.md §5: the data is
   * complete, then EOF).
   */
  private get endError (): Error | undefined {
    const err = this.closedWith
    return err instanceof StreamResetError && this.finishedBeforeReset ? undefined : err
  }

  /**
   * The connection ended. A stream the peer had not finished writing was cut off: its reader
   * fails with `ConnectionClosedError` rather than taking the end for the peer's Close.
   */
  override onTransportClosed (err?: Error): void {
    if (err === undefined && this.remoteWriteStatus !== 'closed' && this.status === 'open') {
      err = new ConnectionClosedError('the connection ended before the peer closed this stream')
    }
    super.onTransportClosed(err)
  }

  /** Bytes received and not yet delivered to the application (at most the receive window). */
  get bufferedBytes (): number {
    return this.muxer.core.buffered(this.ref)
  }

  /** The stream's receive window: how much the peer may send ahead of the reader. */
  get receiveWindow (): number | undefined {
    return this.muxer.core.receiveWindow(this.ref)
  }

  /** Writes `data`; throws {@link StreamStoppedError} once the peer stopped reading. */
  override send (data: Uint8Array | Uint8ArrayList): boolean {
    if (this.stoppedCode !== undefined) throw new StreamStoppedError(this.stoppedCode)
    return super.send(data)
  }

  /**
   * Waits until the stream has handed all queued writes to the muxer, or fails if it can no
   * longer be written: the peer stopped reading (`StreamStoppedError`), the stream ended
   * (with its error), or it was closed for writing. (js-libp2p 3's own resolves at every
   * grant, however little it let through, and after the first drain at once for good, so a
   * writer that awaits it queued without end; and it never settles once the stream ended.)
   */
  override async onDrain (options?: AbortOptions): Promise<void> {
    for (;;) {
      options?.signal?.throwIfAborted()
      this.throwIfNotWritable()
      if (!this.writableNeedsDrain && this.writeBuffer.byteLength === 0) return
      await new Promise<void>((resolve, reject) => {
        const done = (): void => {
          this.removeEventListener('drain', onDrained)
          this.removeEventListener('close', onClosed)
          options?.signal?.removeEventListener('abort', onAbort)
        }
        // js-libp2p hands the queued writes over in a microtask queued before this one.
        const onDrained = (): void => { done(); queueMicrotask(resolve) }
        const onClosed = (): void => { done(); resolve() }
        const onAbort = (): void => { done(); reject(options?.signal?.reason) }
        this.addEventListener('drain', onDrained)
        this.addEventListener('close', onClosed)
        options?.signal?.addEventListener('abort', onAbort)
      })
    }
  }

  private throwIfNotWritable (): void {
    if (this.stoppedCode !== undefined) throw new StreamStoppedError(this.stoppedCode)
    if (this.status !== 'open') throw this.closedWith ?? new StreamStateError(`the stream is ${this.status}`)
    if (this.writeStatus === 'closed') throw new StreamStateError('the stream is closed for writing')
  }

  /**
   * Closes writing once the queued writes are sent: the peer reads all data, then its end.
   * Settles also when the stream ends meanwhile, with its error (js-libp2p 3's own then waits
   * for a drain that never comes, or rejects with an event rather than an error).
   */
  override async close (options?: AbortOptions): Promise<void> {
    let onClosed: ((evt: Event & { error?: Error }) => void) | undefined
    const ended = new Promise<void>((resolve, reject) => {
      onClosed = (evt) => { evt.error === undefined ? resolve() : reject(evt.error) }
      this.addEventListener('close', onClosed)
    })
    const closing = super.close(options).catch((err: unknown) => {
      if (err instanceof Event) throw (err as Event & { error?: Error }).error ?? new StreamStateError('the stream ended while closing')
      throw err
    })
    // Whichever loses the race may still fail: that is not unhandled.
    ended.catch(() => {})
    closing.catch(() => {})
    try {
      await Promise.race([closing, ended])
    } finally {
      this.removeEventListener('close', onClosed!)
    }
  }

  /**
   * Closes reading: what is buffered is dropped and the peer is told to stop sending
   * (CloseRead with `options.code`); its writes then fail with that code.
   */
  override async closeRead (options?: CloseReadOptions): Promise<void> {
    await super.closeRead(options)
  }

  /** The last piece handed over was a full {@link SEND_PIECE}: what follows continues it. */
  private lastPieceFull = false

  sendData (data: Uint8ArrayList): SendResult {
    const sentBytes = this.muxer.core.write(this.ref, data, this.lastPieceFull)
    this.lastPieceFull = data.byteLength === this.muxer.sendPiece && sentBytes === data.byteLength
    const connectionTakesMore = this.muxer.flush()
    return { sentBytes, canSendMore: connectionTakesMore && sentBytes === data.byteLength }
  }

  sendReset (err: Error): void {
    this.resetCode = resetCodeOf(err)
    this.muxer.core.reset(this.ref, this.resetCode)
    this.muxer.flush()
  }

  sendPause (): void {
    // Nothing to send: data waits in the core, which grants credit only for what is delivered.
  }

  sendResume (): void {
    this.pump()
  }

  async sendCloseWrite (options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted()
    this.muxer.core.closeWrite(this.ref)
    this.muxer.flush()
  }

  async sendCloseRead (options?: CloseReadOptions): Promise<void> {
    options?.signal?.throwIfAborted()
    this.muxer.core.closeRead(this.ref, options?.code === undefined ? 0 : resetCodeOf({ code: options.code }))
    this.muxer.flush()
    // Loops reading the stream end now (its status is no longer readable).
    this.wakeReaders()
  }

  override addEventListener<K extends keyof MessageStreamEvents>(type: K, listener: EventHandler<MessageStreamEvents[K]> | null, options?: boolean | AddEventListenerOptions): void {
    super.addEventListener(type, listener, options)
    // Data the stream holds goes to the first reader.
    if (type === 'message') queueMicrotask(() => { this.pump() })
  }

  /**
   * The `for await` loops reading the stream. Each has a slot for one message: a message leaves
   * the muxer (and its credit goes back to the peer) only when every loop has taken the last
   * one and asked for more, and then goes to every loop and every `message` listener. A loop
   * that stalls so holds the peer at the stream's window, also with other readers beside it,
   * and every reader sees every message, in order.
   */
  private readonly readers = new Set<PullingReader>()

  /**
   * Reads the stream, pulling (see {@link readers}). js-libp2p's own iterator takes every
   * `message` event into a queue without limit, and credit would go back for all of it.
   */
  override async * [Symbol.asyncIterator] (): AsyncGenerator<Uint8Array | Uint8ArrayList, void, unknown> {
    if (this.endError !== undefined) throw this.endError
    if (this.readStatus !== 'readable' && this.readStatus !== 'paused') return
    const reader: PullingReader = { slot: undefined, wake: undefined }
    this.readers.add(reader)
    try {
      for (;;) {
        this.pump()
        const data = reader.slot
        if (data !== undefined) {
          yield data
          // Taken only now, when the loop asks for more: until then it holds the next back.
          reader.slot = undefined
          continue
        }
        if (this.endError !== undefined) throw this.endError
        // (The statuses change across the awaits.)
        const readStatus = this.readStatus as string
        if (readStatus === 'closing' || readStatus === 'closed') return
        if ((this.remoteWriteStatus === 'closed' || this.status !== 'open') && this.nothingLeft()) return
        await new Promise<void>(resolve => { reader.wake = resolve })
      }
    } finally {
      this.readers.delete(reader)
      // A reader that left may have been the one holding the others back.
      queueMicrotask(() => { this.pump() })
    }
  }

  /** Nothing received is left to read: all of it went to the readers. */
  private nothingLeft (): boolean {
    return this.readBuffer.byteLength === 0 && this.muxer.core.buffered(this.ref) === 0
  }

  /** Whether a message can go to the readers now (see {@link readers}). */
  private takesData (): boolean {
    if (this.readStatus !== 'readable') return false
    if (this.readers.size === 0) return this.listenerCount('message') > 0
    for (const reader of this.readers) if (reader.slot !== undefined) return false
    return true
  }

  /** Gives `data` to every reader and `message` listener. */
  private hand (data: Uint8Array | Uint8ArrayList): void {
    for (const reader of this.readers) {
      reader.slot = data
      wake(reader)
    }
    if (this.listenerCount('message') > 0) this.dispatchEvent(new StreamMessageEvent(data))
  }

  /** Wakes every reader, to look at the stream again. */
  private wakeReaders (): void {
    for (const reader of this.readers) wake(reader)
  }

  /**
   * Hands what the stream holds to its readers while they take it: first what js-libp2p's read
   * buffer holds (moved there at the peer's Close), then the core's. Memory is released, and
   * credit goes back, only for what was handed over. With only `message` listeners, all of it
   * goes at once.
   */
  pump (): void {
    let handed = false
    while (this.takesData()) {
      const all = this.readers.size === 0
      let data: Uint8Array | Uint8ArrayList | undefined
      if (this.readBuffer.byteLength > 0) {
        data = all ? this.readBuffer.sublist() : this.readBuffer.subarray(0, firstLength(this.readBuffer))
        this.readBuffer.consume(data.byteLength)
      } else {
        data = all ? this.muxer.core.read(this.ref) : this.muxer.core.readOne(this.ref)
      }
      if (data === undefined) break
      handed = true
      this.hand(data)
    }
    if (handed) this.muxer.flush()
    if (this.readStatus === 'readable' && this.remoteWriteStatus === 'closed' && this.nothingLeft()) {
      this.readStatus = 'closed'
      this.maybeDispatchEnd()
    }
  }

  /** js-libp2p asks for its read buffer to go to the readers (on `resume`, `push`, ...). */
  protected override dispatchReadBuffer (): void {
    this.pump()
  }

  /**
   * Offers a message as it arrived, when the stream holds nothing: true if the readers took
   * it (the core then holds nothing for it, and nothing was copied).
   */
  offer (data: Uint8Array | Uint8ArrayList): boolean {
    if (this.readBuffer.byteLength > 0 || !this.takesData()) return false
    this.hand(withoutWastefulViews(data))
    return true
  }

  /** The peer will send no more: what the core still holds joins the stream's read buffer. */
  remoteClosedWriting (): void {
    this.pump()
    const rest = this.muxer.core.read(this.ref)
    if (rest !== undefined && this.readStatus !== 'closing' && this.readStatus !== 'closed') {
      this.readBuffer.append(rest)
    }
    this.onRemoteCloseWrite()
  }

  /** The peer stopped reading: writes fail with its code from now on; the core sent Close. */
  remoteClosedReading (code: Uint): void {
    this.stoppedCode = code
    this.onRemoteCloseRead()
    // A writer waiting in `onDrain` wakes and fails with StreamStoppedError.
    if (this.writableNeedsDrain) this.onMuxerDrain()
    if (this.writeStatus !== 'closed') {
      this.writeStatus = 'closed'
      if (this.remoteWriteStatus === 'closed') this.onTransportClosed()
    }
  }

  /** The peer reset the stream with `code`. */
  remoteReset (code: Uint): void {
    this.resetCode = code
    this.finishedBeforeReset = this.remoteWriteStatus === 'closed'
    this.onRemoteReset()
  }
}

/** The muxer of one connection. See the module docs. */
export class HalfcloseStreamMuxer extends AbstractStreamMuxer<HalfcloseStream> {
  readonly core: Connection
  private readonly decoder = new FrameDecoder('extension')
  private readonly local = new Map<Uint, HalfcloseStream>()
  private readonly remote = new Map<Uint, HalfcloseStream>()
  /** Openers waiting below the stream limit. */
  private readonly openers: Array<() => void> = []
  /** The connection needs to drain, and the bytes sent since it said so. */
  private saturated = false
  private answersWhileSaturated = 0
  private readonly answerLimit: number
  /** What streams hand their queued writes over in (see {@link SEND_PIECE}). */
  readonly sendPiece: number
  private readingPaused = false

  constructor (maConn: MessageStream, init: MplexHalfcloseInit = {}) {
    super(maConn, { ...init, protocol: PROTOCOL_ID, name: 'mplex-halfclose' })
    // A window never outgrows what the stream may buffer (js-libp2p's `maxReadBufferLength`,
    // 4 MiB by default): data the core holds may end up in the stream's read buffer.
    const maxReadBuffer = init.streamOptions?.maxReadBufferLength ?? 4 * 1024 * 1024
    this.core = new Connection({
      ...init,
      maxStreamWindow: Math.min(init.maxStreamWindow ?? 16 * 1024 * 1024, maxReadBuffer)
    })
    this.answerLimit = ANSWERS_BASE + 4 * (init.maxStreams ?? 128)
    this.sendPiece = Math.min(SEND_PIECE, this.core.splitSize)
    // Data goes straight to the readers of a stream that take it now (see `HalfcloseStream`):
    // no copy, nothing held.
    this.core.setReader((ref, data) => {
      const stream = (ref.local ? this.local : this.remote).get(ref.num)
      return stream?.offer(data) ?? false
    })
    maConn.addEventListener('drain', () => {
      this.saturated = false
      this.answersWhileSaturated = 0
      if (this.readingPaused) {
        this.readingPaused = false
        maConn.resume()
        try {
          this.processFrames()
        } catch (err) {
          this.abort(err as Error)
          maConn.abort(err as Error)
        }
      }
    })
    maConn.addEventListener('close', () => {
      for (const open of this.openers.splice(0)) open()
    })
  }

  /**
   * The connection ended: a frame cut short by it is `TruncatedFrame`, which every stream ends
   * with (a reader must not take a cut-off stream for a clean end).
   */
  override onTransportClosed (err?: Error): void {
    if (err === undefined) {
      try {
        this.decoder.end()
      } catch (e) {
        err = e as Error
      }
    }
    super.onTransportClosed(err)
  }

  onData (data: Uint8Array | Uint8ArrayList): void {
    this.decoder.push(data)
    this.processFrames()
  }

  /** Handles the peer's frames, until they run out or reading stops (see `ANSWERS_BASE`). */
  private processFrames (): void {
    while (!this.readingPaused) {
      const frame = this.decoder.next()
      if (frame === undefined) break
      this.core.handleFrame(frame)
      this.dispatch(this.core.takeEvents())
      if (this.core.queuedFrames >= ANSWER_BATCH) this.flushNow()
    }
    this.flush()
  }

  async onCreateStream (options: CreateStreamOptions): Promise<HalfcloseStream> {
    for (;;) {
      options.signal?.throwIfAborted()
      // A stream opened on a connection that is closing could never be announced: its writes
      // would go nowhere.
      if (this.status !== 'open' || this.maConn.status !== 'open') {
        throw new ConnectionClosedError(`the connection is ${this.maConn.status}: no stream can be opened`)
      }
      const ref = this.core.open()
      if (ref !== undefined) {
        const stream = this.newStream(ref, 'outbound', options)
        // The NewStream leaves at once, in a write of its own (or with bulk data being gathered
        // for the next write, see `flush`): js-libp2p writes the stream's protocol negotiation
        // only tens of microseconds later, and the peer sets the stream up meanwhile (against a
        // Rust node, a request on a new stream took 20 µs less than with the NewStream held
        // back for the negotiation's bytes; between two Node.js processes, the same).
        this.flush()
        return stream
      }
      // At the stream limit: wait for a stream to end. A waiter that gives up leaves the queue,
      // so that the next stream to end wakes one that still waits.
      await new Promise<void>((resolve, reject) => {
        const opener = (): void => {
          options.signal?.removeEventListener('abort', onAbort)
          resolve()
        }
        const onAbort = (): void => {
          const at = this.openers.indexOf(opener)
          if (at !== -1) this.openers.splice(at, 1)
          reject(options.signal?.reason)
        }
        options.signal?.addEventListener('abort', onAbort, { once: true })
        this.openers.push(opener)
      })
    }
  }

  private flushScheduled = false

  /**
   * Sends what the core queued, gathering what the calls before the next microtask checkpoint
   * queue into one write (a request's data and Close in one encrypted message; bulk data over
   * the turn of the event loop, see below); false while the connection needs to drain.
   */
  flush (): boolean {
    if (!this.flushScheduled) {
      this.flushScheduled = true
      queueMicrotask(() => {
        const data = this.core.queuedDataBytes
        if (data >= this.core.splitSize && data < BULK_BATCH) {
          // Bulk data: a writer that awaits each write yields to microtasks between them, so
          // gather its writes of this turn of the event loop into one write (up to BULK_BATCH).
          nextTurn(() => {
            this.flushScheduled = false
            this.flushNow()
          })
          return
        }
        this.flushScheduled = false
        this.flushNow()
      })
    }
    if (this.core.queuedDataBytes < BULK_BATCH) return !this.saturated
    this.batchFull = true
    return false
  }

  /** A stream was told to wait because a batch of bulk data was full (see {@link flush}). */
  private batchFull = false

  private flushNow (): boolean {
    const frames = this.core.takeFrames()
    if (frames.length === 0) return !this.saturated
    // Small frames are written together (see `encodeFrames`), so that what waits for the
    // connection costs its bytes, not an array per frame; bodies leave as they are.
    const out = new Uint8ArrayList()
    for (const part of encodeFrames(frames, 'extension')) out.append(part)
    let answers = 0
    for (const frame of frames) if (frame.type !== 'message') answers++
    if (this.saturated) {
      this.answersWhileSaturated += answers
      if (this.answersWhileSaturated > this.answerLimit && !this.readingPaused && this.status === 'open') {
        this.readingPaused = true
        this.maConn.pause()
      }
    }
    if (this.maConn.status !== 'open') return false
    const more = this.send(out)
    if (!more) this.saturated = true
    if (more && this.batchFull) {
      // The batch went out and the connection takes more: the writers it held wait no longer.
      this.batchFull = false
      for (const stream of this.streams) if (stream.writableNeedsDrain) stream.onMuxerDrain()
    }
    return more
  }

  private newStream (ref: StreamRef, direction: 'inbound' | 'outbound', options: CreateStreamOptions | undefined): HalfcloseStream {
    const stream = new HalfcloseStream({
      ...this.streamOptions,
      ...options,
      // Protocols are negotiated on the stream (multistream-select), never by the muxer.
      protocol: '',
      maxMessageSize: this.sendPiece,
      id: `${ref.local ? 'i' : 'r'}${ref.num}`,
      direction,
      log: scopedLogger(this.log, `${ref.local ? 'i' : 'r'}${ref.num}`),
      ref,
      muxer: this
    })
    const streams = ref.local ? this.local : this.remote
    streams.set(ref.num, stream)
    stream.addEventListener('close', () => {
      if (streams.get(ref.num) === stream) streams.delete(ref.num)
      this.core.release(ref)
      this.flush()
      if (this.core.canOpen()) this.openers.shift()?.()
    })
    return stream
  }

  private dispatch (events: CoreEvent[]): void {
    for (const event of events) {
      if (event.type === 'incoming') {
        this.onRemoteStream(this.newStream(event.stream, 'inbound', undefined))
        continue
      }
      const stream = (event.stream.local ? this.local : this.remote).get(event.stream.num)
      if (stream === undefined) continue
      switch (event.type) {
        case 'readable': stream.pump(); break
        case 'remote-close-write': stream.remoteClosedWriting(); break
        case 'remote-close-read': stream.remoteClosedReading(event.code); break
        case 'reset': stream.remoteReset(event.code); break
        case 'writable': if (stream.writableNeedsDrain) stream.onMuxerDrain(); break
      }
    }
  }
}
