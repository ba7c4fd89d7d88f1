/**
 * What runs in the browser (bundled by test/browser/run.ts): two muxers over js-libp2p's
 * in-memory connection pair, exercising what the package promises there: an echo with
 * close-write, close-read with its code, a reset with its code. The result goes to
 * `globalThis.result` for the runner to read.
 */

import { multiaddrConnectionPair } from '@libp2p/utils'
import { HalfcloseStreamMuxer, StreamStoppedError, type HalfcloseStream } from '../../src/index.js'

async function until (done: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !done(); i++) await new Promise(resolve => setTimeout(resolve, 0))
  if (!done()) throw new Error('timed out waiting')
}

async function run (): Promise<Record<string, unknown>> {
  const [outbound, inbound] = multiaddrConnectionPair()
  const dialer = new HalfcloseStreamMuxer(outbound)
  const listener = new HalfcloseStreamMuxer(inbound)
  const incoming: HalfcloseStream[] = []
  listener.addEventListener('stream', (evt) => { incoming.push(evt.detail) })

  // Echo 1 MiB with close-write.
  const echoStream = await dialer.createStream()
  await until(() => incoming.length === 1)
  const server = incoming[0]
  void (async () => {
    for await (const chunk of server) {
      if (!server.send(chunk)) await server.onDrain()
    }
    await server.close()
  })()
  const data = new Uint8Array(1024 * 1024).map((_, i) => (i * 31) & 0xff)
  const writing = (async () => {
    for (let at = 0; at < data.length; at += 65536) {
      if (!echoStream.send(data.subarray(at, at + 65536))) await echoStream.onDrain()
    }
    await echoStream.close()
  })()
  const back: Uint8Array[] = []
  for await (const chunk of echoStream) back.push(chunk.subarray())
  await writing
  const echoed = new Uint8Array(back.reduce((n, b) => n + b.length, 0))
  let at = 0
  for (const b of back) { echoed.set(b, at); at += b.length }
  const echoOk = echoed.length === data.length && echoed.every((b, i) => b === data[i])

  // Close-read with code 42: the writer's send fails with StreamStoppedError and the code.
  const stopped = await dialer.createStream()
  await until(() => incoming.length === 2)
  await incoming[1].closeRead({ code: 42 })
  await until(() => stopped.stoppedCode !== undefined)
  let stopError: unknown
  try {
    stopped.send(new Uint8Array(1))
  } catch (err) {
    stopError = err
  }

  // Reset with code 7.
  const reset = await dialer.createStream()
  await until(() => incoming.length === 3)
  const closed = new Promise<Error | undefined>(resolve => incoming[2].addEventListener('close', (e) => { resolve(e.error) }, { once: true }))
  reset.abort(Object.assign(new Error('reset'), { code: 7 }))
  const resetError = await closed

  return {
    echoOk,
    stopError: stopError instanceof StreamStoppedError ? stopError.name : String(stopError),
    stopCode: String((stopError as { code?: unknown }).code),
    resetError: resetError?.name,
    resetCode: String(incoming[2].resetCode),
    userAgent: navigator.userAgent
  }
}

run().then(
  (result) => { (globalThis as { result?: unknown }).result = result },
  (err) => { (globalThis as { result?: unknown }).result = { error: String(err?.stack ?? err) } }
)
