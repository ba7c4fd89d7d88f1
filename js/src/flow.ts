/**
 * Flow control of the extension (PROTOCOL.md §6): each direction of each stream starts with a
 * window of 256 KiB; the receiver grants credit back as its application consumes data.
 *
 * **How the window grows** (PROTOCOL.md §6, "Sizing the window"): a stream that consumes half
 * its window in less than two round trips, twice in a row, is held back by its window: the
 * window doubles, up to a maximum and within the connection's budget. A slow reader keeps a
 * window of its own pace, a stream nobody reads never grows, and without a measured round trip
 * windows keep their size.
 *
 * @module
 */

/** The window every stream direction starts with. */
export const INITIAL_WINDOW = 256 * 1024
/** Credit goes back once half the window, or this much, was consumed, whichever is less. */
export const GRANT_STEP = 1024 * 1024

/** A grant decided by {@link RecvWindow.onConsumed}: credit to send, and the growth in it. */
export interface Grant {
  credit: number
  growth: number
  at: number
}

/** The receiving side's view of one stream's window. Times are milliseconds. */
export class RecvWindow {
  /** Bytes the peer may still send. */
  remaining = INITIAL_WINDOW
  /** The window: the credit the peer holds once the reader has caught up. */
  size = INITIAL_WINDOW
  /** Consumed and not granted back yet. */
  private consumed = 0
  /** When the half window being timed began, and how much was consumed since. */
  private timedFrom: number | undefined
  private consumedSince = 0
  private lastHalfFast = false

  /** Takes credit for `len` bytes arriving; false if the peer had too little. */
  onData (len: number): boolean {
    if (len > this.remaining) return false
    this.remaining -= len
    return true
  }

  /**
   * The application consumed `len` bytes. Returns a grant once half the window (or
   * {@link GRANT_STEP}) is consumed; the window doubles at a grant when the last two half
   * windows each took less than two round trips (`rtt`), within `maxSize` and `budget`.
   */
  onConsumed (len: number, maxSize: number, budget: number, rtt: number | undefined, now: () => number): Grant | undefined {
    this.consumed += len
    this.consumedSince += len
    if (this.consumed < Math.min(this.size / 2, GRANT_STEP)) return undefined
    const at = now()
    let growth = 0
    if (this.timedFrom === undefined) {
      this.timedFrom = at
      this.consumedSince = 0
    } else if (this.consumedSince >= this.size / 2) {
      const fast = rtt !== undefined && at - this.timedFrom < 2 * rtt
      if (fast && this.lastHalfFast) {
        growth = Math.max(0, Math.min(this.size, maxSize - this.size, budget))
      }
      this.lastHalfFast = fast
      this.timedFrom = at
      this.consumedSince = 0
    }
    this.size += growth
    const credit = this.consumed + growth
    this.consumed = 0
    this.remaining += credit
    return { credit, growth, at }
  }
}
