/**
 * `/mplex-halfclose/1.0.0` for js-libp2p: mplex framing with a distinct close-write (FIN) and
 * close-read (stop-sending) on the wire, per-stream flow control with windows that grow, and
 * reset codes. The wire format is PROTOCOL.md in this repository.
 *
 * ```ts
 * import { mplexHalfclose } from 'libp2p-mplex-halfclose'
 * const node = await createLibp2p({ streamMuxers: [mplexHalfclose(), yamux()], ... })
 * ```
 *
 * @module
 */

import { serviceCapabilities } from '@libp2p/interface'
import type { MessageStream, StreamMuxerFactory } from '@libp2p/interface'
import { HalfcloseStreamMuxer, PROTOCOL_ID, type MplexHalfcloseInit } from './muxer.js'

export { HalfcloseStream, HalfcloseStreamMuxer, PROTOCOL_ID, resetCodeOf } from './muxer.js'
export type { CloseReadOptions, MplexHalfcloseInit } from './muxer.js'
export { ProtocolViolationError, StreamStoppedError } from './errors.js'
export type { ViolationKind } from './errors.js'

class MplexHalfclose implements StreamMuxerFactory<HalfcloseStreamMuxer> {
  readonly protocol = PROTOCOL_ID
  readonly [Symbol.toStringTag] = 'libp2p-mplex-halfclose'
  readonly [serviceCapabilities]: string[] = ['@libp2p/stream-multiplexing']
  private readonly init: MplexHalfcloseInit

  constructor (init: MplexHalfcloseInit) {
    this.init = init
  }

  createStreamMuxer (maConn: MessageStream): HalfcloseStreamMuxer {
    return new HalfcloseStreamMuxer(maConn, { ...this.init })
  }
}

/** The muxer factory for `createLibp2p({ streamMuxers: [mplexHalfclose()] })`. */
export function mplexHalfclose (init: MplexHalfcloseInit = {}): () => StreamMuxerFactory {
  return () => new MplexHalfclose(init)
}
