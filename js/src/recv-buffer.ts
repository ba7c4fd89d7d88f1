/**
 * One stream's received data, held in memory of about its size however the peer cuts it
 * (PROTOCOL.md §9): a window is a number of bytes, and a peer that sends it as 1-byte frames
 * must not make the receiver hold an array object per byte.
 *
 * Every body is copied out of the connection's chunk (a view would keep the whole chunk alive):
 * a large one into an array of exactly its size; a small one ({@link GATHER_BELOW}) into an
 * array of its own while fewer than {@link SEPARATE_SMALL} small arrays are kept (so that a
 * reader that pulls one message at a time sees the sender's messages as they were), else into a
 * gathering buffer of {@link GATHER_CAPACITY} bytes. Memory held: the unread bytes, plus at
 * most one gathering buffer, plus an array header per kept array (at least 8 KiB each, a large
 * body, or one of at most {@link SEPARATE_SMALL} small ones).
 *
 * @module
 */

import { Uint8ArrayList } from 'uint8arraylist'

/** Bodies smaller than this are gathered. */
export const GATHER_BELOW = 16 * 1024
/** The size of a gathering buffer. */
export const GATHER_CAPACITY = 8 * 1024
/** How many arrays under {@link GATHER_CAPACITY} bytes are kept apart at most. */
export const SEPARATE_SMALL = 16

export class RecvBuffer {
  private readonly chunks: Uint8Array[] = []
  private gather: Uint8Array | undefined
  private gathered = 0
  /** Arrays in `chunks` under GATHER_CAPACITY bytes. */
  private small = 0
  /** Bytes not yet taken. */
  unread = 0

  /** Appends a copy of `data`. */
  push (data: Uint8Array | Uint8ArrayList): void {
    const len = data.byteLength
    if (len === 0) return
    this.unread += len
    if (len >= GATHER_BELOW) {
      this.sealGather()
      this.chunks.push(data instanceof Uint8Array ? data.slice() : data.slice())
      return
    }
    if (this.gather === undefined && this.small < SEPARATE_SMALL) {
      this.chunks.push(data instanceof Uint8Array ? data.slice() : data.slice())
      if (len < GATHER_CAPACITY) this.small++
      return
    }
    let at = 0
    while (at < len) {
      if (this.gather === undefined) {
        this.gather = new Uint8Array(GATHER_CAPACITY)
        this.gathered = 0
      }
      const take = Math.min(len - at, GATHER_CAPACITY - this.gathered)
      const part = data instanceof Uint8Array ? data.subarray(at, at + take) : data.subarray(at, at + take)
      this.gather.set(part, this.gathered)
      this.gathered += take
      at += take
      if (this.gathered === GATHER_CAPACITY) this.sealGather()
    }
  }

  /** Takes everything unread, in order. */
  takeAll (): Uint8ArrayList {
    this.sealGather()
    const out = new Uint8ArrayList()
    for (const chunk of this.chunks) out.append(chunk)
    this.chunks.length = 0
    this.small = 0
    this.unread = 0
    return out
  }

  /** Takes the first kept array (a message as it came, a gathered buffer, or a large body). */
  takeOne (): Uint8Array | undefined {
    if (this.chunks.length === 0) this.sealGather()
    const first = this.chunks.shift()
    if (first === undefined) return undefined
    if (first.byteLength < GATHER_CAPACITY) this.small--
    this.unread -= first.byteLength
    return first
  }

  /** Drops everything unread; returns how many bytes that was. */
  clear (): number {
    const dropped = this.unread
    this.chunks.length = 0
    this.small = 0
    this.gather = undefined
    this.gathered = 0
    this.unread = 0
    return dropped
  }

  private sealGather (): void {
    if (this.gather === undefined || this.gathered === 0) return
    // A full buffer is kept as it is; one cut short is kept at its exact size.
    if (this.gathered < GATHER_CAPACITY) this.small++
    this.chunks.push(this.gathered === GATHER_CAPACITY ? this.gather : this.gather.slice(0, this.gathered))
    this.gather = undefined
    this.gathered = 0
  }
}
