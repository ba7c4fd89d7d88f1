// js-libp2p's queues (it-queue 1.1, through mortice and the peer store) call
// Promise.withResolvers, which Node.js has from version 22. On Node 20 this defines it, to the
// letter of the standard. Imported before anything else by peer.mjs.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
