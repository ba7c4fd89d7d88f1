/**
 * js-libp2p's own muxer compliance suite (`@libp2p/interface-compliance-tests`, stream-muxer),
 * run with mocha as js-libp2p's muxers run it.
 */

import tests from '@libp2p/interface-compliance-tests/stream-muxer'
import { mplexHalfclose } from '../src/index.js'

describe('compliance', () => {
  tests({
    async setup () {
      // The default limit of 128 streams (both sides together): the stress test's 1,000
      // streams at once wait for one another to end.
      return mplexHalfclose()()
    },
    async teardown () {}
  })
})
