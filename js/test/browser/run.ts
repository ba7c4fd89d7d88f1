/**
 * Runs the package in a real browser: bundles test/browser/page.ts for the browser (esbuild,
 * `platform: 'browser'`, so a Node-only import fails the bundle), loads it in headless
 * Chromium (`CHROMIUM`, default /usr/bin/chromium; `.ci/run` installs Debian's), and checks
 * what the page reports. Exits non-zero on any failure.
 */

import { build } from 'esbuild'
import { chromium } from 'playwright-core'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'

const page = fileURLToPath(new URL('../../../test/browser/page.ts', import.meta.url))
const bundle = await build({
  entryPoints: [page],
  bundle: true,
  platform: 'browser',
  format: 'esm',
  write: false,
  logLevel: 'error'
})
const script = bundle.outputFiles[0].text

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox']
})
try {
  const tab = await browser.newPage()
  const errors: string[] = []
  tab.on('pageerror', (err) => errors.push(String(err)))
  await tab.setContent('<!doctype html><title>libp2p-mplex-halfclose</title>')
  await tab.addScriptTag({ content: script, type: 'module' })
  await tab.waitForFunction(() => (globalThis as { result?: unknown }).result !== undefined, undefined, { timeout: 30_000 })
  const result = await tab.evaluate(() => (globalThis as { result?: unknown }).result) as Record<string, unknown>
  console.log('browser:', JSON.stringify(result))
  assert.deepEqual(errors, [])
  assert.equal(result.error, undefined)
  assert.equal(result.echoOk, true)
  assert.equal(result.stopError, 'StreamStoppedError')
  assert.equal(result.stopCode, '42')
  assert.equal(result.resetError, 'StreamResetError')
  assert.equal(result.resetCode, '7')
} finally {
  await browser.close()
}
