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
import type { AbortOptions, CreateStreamOptions, EventHandler, MessageStream, MessageStreamEvents, StreamMuxerOptions } from '@libp2p/interface'
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

/** A stream of the extension: js-libp2p's `Stream`, with close-read on the wire and reset codes. */
export class HalfcloseStream extends AbstractStream {
  /** The stream's number and side. */
  readonly ref: StreamRef
  /** The code of the peer's close-read, once it stopped reading: writes fail with it. */
  stoppedCode: Uint | undefined
  /** The code of the reset that ended the stream, sent or received. */
  resetCode: Uint | undefined
  private readonly muxer: HalfcloseStreamMuxer

  constructor (init: AbstractStreamInit & { ref: StreamRef, muxer: HalfcloseStreamMuxer }) {
    super(init)
    this.ref = init.ref
    this.muxer = init.muxer
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
   * Closes reading: what is buffered is dropped and the peer is told to stop sending
   * (CloseRead with `options.code`); its writes then fail with that code.
   */
  override async closeRead (options?: CloseReadOptions): Promise<void> {
    await super.closeRead(options)
  }

  sendData (data: Uint8ArrayList): SendResult {
    const sentBytes = this.muxer.core.write(this.ref, data)
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
    this.deliver()
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
    // A loop reading the stream ends now (its status is no longer readable).
    this.wakeIterator()
  }

  override addEventListener<K extends keyof MessageStreamEvents>(type: K, listener: EventHandler<MessageStreamEvents[K]> | null, options?: boolean | AddEventListenerOptions): void {
    super.addEventListener(type, listener, options)
    // Data the core holds goes to the first reader.
    if (type === 'message') queueMicrotask(() => { this.deliver() })
  }

  /**
   * Reads the stream, pulling: data leaves the muxer (and its credit goes back to the peer)
   * only when the loop asks for more, so that a loop that stalls holds the peer at the
   * stream's window. js-libp2p's own iterator takes every `message` event into a queue without
   * limit, and credit would go back for all of it. With other `message` listeners present, it
   * reads as js-libp2p's does (every listener sees every message).
   */
  override async * [Symbol.asyncIterator] (): AsyncGenerator<Uint8Array | Uint8ArrayList, void, unknown> {
    if (this.listenerCount('message') > 0) {
      yield * super[Symbol.asyncIterator]()
      return
    }
    if (this.readStatus !== 'readable' && this.readStatus !== 'paused') return
    let closeError: Error | undefined
    let closed = false
    const wake = (): void => { this.wakeIterator() }
    const onClose = (evt: Event & { error?: Error }): void => {
      closed = true
      closeError = evt.error
      wake()
    }
    this.addEventListener('close', onClose)
    this.addEventListener('remoteCloseWrite', wake)
    try {
      for (;;) {
        if (this.readStatus === 'readable' || closed || this.remoteWriteStatus === 'closed') {
          // What js-libp2p's read buffer holds first (moved there at the peer's Close), then
          // the core's.
          const data = this.takeHandoff() ?? this.takeReadBuffer() ?? this.muxer.core.readOne(this.ref)
          if (data !== undefined) {
            this.muxer.flush()
            yield data
            continue
          }
        }
        if (closeError !== undefined) throw closeError
        // (The status changes across the awaits.)
        const readStatus = this.readStatus as string
        if (closed || this.remoteWriteStatus === 'closed' || readStatus === 'closed' || readStatus === 'closing') {
          if (this.readStatus === 'readable' && this.remoteWriteStatus === 'closed') {
            this.readStatus = 'closed'
            this.maybeDispatchEnd()
          }
          return
        }
        await new Promise<void>(resolve => { this.pullWaiter = resolve })
      }
    } finally {
      this.removeEventListener('close', onClose)
      this.removeEventListener('remoteCloseWrite', wake)
      this.pullWaiter = undefined
    }
  }

  /** The iterator waiting for data or the end. */
  private pullWaiter: (() => void) | undefined

  /** Wakes the iterator waiting for data or the end; false if none waits. */
  private wakeIterator (): boolean {
    const waiter = this.pullWaiter
    this.pullWaiter = undefined
    waiter?.()
    return waiter !== undefined
  }
  /** A message handed straight to the waiting iterator, not copied. */
  private handoff: Uint8Array | Uint8ArrayList | undefined

  /**
   * Offers a message as it arrived to an iterator waiting for one; true if it took it (the
   * core then holds nothing for it).
   */
  offerToIterator (data: Uint8Array | Uint8ArrayList): boolean {
    if (this.pullWaiter === undefined || this.handoff !== undefined || this.readStatus !== 'readable') return false
    this.handoff = data
    this.wakeIterator()
    return true
  }

  private takeHandoff (): Uint8Array | Uint8ArrayList | undefined {
    const data = this.handoff
    this.handoff = undefined
    return data
  }

  /** The first array js-libp2p's read buffer holds (one message, as it came). */
  private takeReadBuffer (): Uint8Array | undefined {
    for (const first of this.readBuffer) {
      this.readBuffer.consume(first.byteLength)
      return first
    }
    return undefined
  }

  /**
   * Hands what the core holds to the application when it takes data now (a `message`
   * listener, not paused): memory is released and credit goes back only for delivered data.
   * A pulling iterator is woken instead.
   */
  deliver (): void {
    if (this.wakeIterator()) return
    if (this.readStatus !== 'readable' || this.listenerCount('message') === 0) return
    const data = this.muxer.core.read(this.ref)
    if (data === undefined) return
    this.onData(data)
    this.muxer.flush()
  }

  /** The peer will send no more: what the core still holds joins the stream's read buffer. */
  remoteClosedWriting (): void {
    this.deliver()
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
    // A writer waiting for room wakes and learns of it from its next send (before the stream
    // may close below, which would fail its wait with a plain StreamClosedError).
    if (this.writableNeedsDrain) this.onMuxerDrain()
    if (this.writeStatus !== 'closed') {
      this.writeStatus = 'closed'
      if (this.remoteWriteStatus === 'closed') this.onTransportClosed()
    }
  }

  /** The peer reset the stream with `code`. */
  remoteReset (code: Uint): void {
    this.resetCode = code
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
    // Data goes straight to a stream whose application takes it now (a `message` listener, not
    // paused): no copy, nothing held.
    this.core.setReader((ref, data) => {
      const stream = (ref.local ? this.local : this.remote).get(ref.num)
      if (stream === undefined || stream.readStatus !== 'readable') return false
      if (stream.listenerCount('message') === 0) return stream.offerToIterator(data)
      stream.onData(data)
      return true
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
    let ref = this.core.open()
    while (ref === undefined) {
      // At the stream limit: wait for a stream to end.
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => { reject(options.signal?.reason) }
        options.signal?.addEventListener('abort', onAbort, { once: true })
        this.openers.push(() => {
          options.signal?.removeEventListener('abort', onAbort)
          resolve()
        })
      })
      if (this.status !== 'open') throw new Error('the muxer closed while waiting to open a stream')
      ref = this.core.open()
    }
    const stream = this.newStream(ref, 'outbound', options)
    this.flush() // the NewStream goes out now: the peer sees the stream before any data
    return stream
  }

  private flushScheduled = false

  /**
   * Sends what the core queued, gathering what the calls of this turn of the event loop queue
   * into one write (a request's NewStream, data and Close in one encrypted message); false
   * while the connection needs to drain.
   */
  flush (): boolean {
    if (!this.flushScheduled) {
      this.flushScheduled = true
      queueMicrotask(() => {
        this.flushScheduled = false
        this.flushNow()
      })
    }
    return !this.saturated
  }

  private flushNow (): boolean {
    const frames = this.core.takeFrames()
    if (frames.length === 0) return !this.saturated
    // Small frames are written together (see `encodeFrames`), so that what waits for the
    // connection costs its bytes, not an array per frame; bodies leave as they are.
    const out = new Uint8ArrayList(...encodeFrames(frames, 'extension'))
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
    return more
  }

  private newStream (ref: StreamRef, direction: 'inbound' | 'outbound', options: CreateStreamOptions | undefined): HalfcloseStream {
    const stream = new HalfcloseStream({
      ...this.streamOptions,
      ...options,
      // Protocols are negotiated on the stream (multistream-select), never by the muxer.
      protocol: '',
      id: `${ref.local ? 'i' : 'r'}${ref.num}`,
      direction,
      log: this.log.newScope(`${ref.local ? 'i' : 'r'}${ref.num}`),
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
        case 'readable': stream.deliver(); break
        case 'remote-close-write': stream.remoteClosedWriting(); break
        case 'remote-close-read': stream.remoteClosedReading(event.code); break
        case 'reset': stream.remoteReset(event.code); break
        case 'writable': if (stream.writableNeedsDrain) stream.onMuxerDrain(); break
      }
    }
  }
}
