/**
 * Errors of the `/mplex-halfclose/1.0.0` muxer.
 *
 * A peer that breaks the protocol (PROTOCOL.md §7) ends the connection with a
 * {@link ProtocolViolationError}; its `name` says which rule was broken, so that callers can
 * tell them apart without parsing messages.
 *
 * @module
 */

/** Which rule of PROTOCOL.md §7 a peer broke. */
export type ViolationKind =
  | 'VarintOverflow'
  | 'VarintNotMinimal'
  | 'FrameTooLarge'
  | 'ExtensionFrameInPlainMode'
  | 'MalformedExtension'
  | 'MalformedResetCode'
  | 'NewStreamForLiveId'
  | 'CreditExceeded'
  | 'WindowOverflow'
  | 'TooManyRefusedStreams'
  | 'TruncatedFrame'

/** The peer broke the protocol; the connection is closed. */
export class ProtocolViolationError extends Error {
  /** Which rule was broken. */
  readonly kind: ViolationKind

  constructor (kind: ViolationKind, message: string) {
    super(`protocol violation by the peer: ${message}`)
    this.kind = kind
    this.name = `${kind}Error`
  }
}

/**
 * The peer stopped reading the stream (it sent CloseRead): writes on it fail with this error,
 * which carries the peer's code. It is not a reset: what the stream has read stays readable,
 * and the peer still receives the Close this side sent in reply.
 */
export class StreamStoppedError extends Error {
  static readonly name = 'StreamStoppedError'
  /** The application code the peer gave with its close-read (0 if none). */
  readonly code: number | bigint

  constructor (code: number | bigint) {
    super(`the peer stopped reading this stream (code ${code})`)
    this.code = code
    this.name = 'StreamStoppedError'
  }
}
