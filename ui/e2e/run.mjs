// The browser test: a real `voxgate serve` (VOXGATE_BIN, default ../target/debug/voxgate)
// with its local offline models, Debian's Chromium through playwright-core, and a
// spoken question as the fake microphone. It signs in through the printed one-time
// link, creates an assistant, calls it, hears the question transcribed and a reply,
// types a message, ends the call, finds it in the call list with its latency chart,
// loads a call page by deep link, and looks at the live view. Screenshots go to
// test-output/e2e/. Exit code 0 when every step passed.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { WebSocket } from 'ws';
import { makeQuestion } from './wav.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const uiDir = resolve(here, '..');
const bin = resolve(uiDir, process.env.VOXGATE_BIN ?? '../target/debug/voxgate');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const outDir = join(uiDir, 'test-output', 'e2e');
const TOTAL_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS ?? 6 * 60_000);
const STEP_MS = 120_000; // generous: a debug binary transcribes and answers slowly

const work = mkdtempSync(join(tmpdir(), 'voxgate-e2e-'));
rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });

let server = null;
let browser = null;
const log = (...a) => console.log('e2e:', ...a);

async function cleanup() {
  await browser?.close().catch(() => {});
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((r) => {
      const t = setTimeout(() => {
        server.kill('SIGKILL');
        r();
      }, 20_000);
      server.once('exit', () => {
        clearTimeout(t);
        r();
      });
    });
  }
  rmSync(work, { recursive: true, force: true });
}

const watchdog = setTimeout(async () => {
  console.error(`e2e: FAILED: the whole test took over ${TOTAL_TIMEOUT_MS / 1000} s`);
  await cleanup();
  process.exit(1);
}, TOTAL_TIMEOUT_MS);

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  log('ok:', what);
}

/**
 * A typed call from Node before the spoken one: the server loads the local models in
 * the background after start, and speech sent while they load is not heard (see the
 * report's API notes). Returns when the assistant has answered.
 */
async function warmUp(base, key, assistantId) {
  const res = await fetch(`${base}/api/calls`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ assistantId }),
  });
  if (!res.ok) throw new Error(`POST /api/calls: ${res.status} ${await res.text()}`);
  const { agentPath } = await res.json();
  const ws = new WebSocket(base.replace(/^http/, 'ws') + agentPath);
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the warm-up call got no reply within 180 s')), 180_000);
    ws.on('open', () => ws.send(JSON.stringify({ type: 'start', audio: { encoding: 'pcm16', sampleRate: 16000 } })));
    ws.on('message', (data, binary) => {
      if (binary) return;
      const ev = JSON.parse(data.toString());
      if (ev.type === 'call-started') ws.send(JSON.stringify({ type: 'text', text: 'Hello.' }));
      if (ev.type === 'transcript' && ev.role === 'assistant') {
        clearTimeout(t);
        ws.send(JSON.stringify({ type: 'end' }));
        resolve();
      }
    });
    ws.on('close', (code, reason) => {
      clearTimeout(t);
      reject(new Error(`the warm-up call closed first: ${code} ${reason}`));
    });
  });
  ws.close();
}

/** Starts the server; resolves with its URL and the one-time login link. */
function startServer() {
  if (!existsSync(bin)) throw new Error(`no voxgate binary at ${bin} (set VOXGATE_BIN)`);
  const env = { ...process.env, DATABASE_URL: `sqlite://${join(work, 'e2e.db')}`, RECORDINGS_DIR: join(work, 'rec'), LOG_LEVEL: process.env.E2E_LOG_LEVEL ?? 'warn' };
  for (const v of ['ROLE', 'BIND', 'ALLOWED_ORIGINS', 'PUBLIC_URL', 'PUBLIC_API_BASE', 'PUBLIC_AGENT_URL', 'RUST_LOG', 'LOG_FORMAT', 'VOXGATE_PROVIDERS']) delete env[v];
  // E2E_UI_DIR: serve the app from a folder instead of the binary's embedded copy.
  if (process.env.E2E_UI_DIR) env.VOXGATE_UI_DIR = resolve(process.env.E2E_UI_DIR);
  server = spawn(bin, ['serve', '--bind', process.env.E2E_BIND ?? '127.0.0.1:0'], { cwd: work, env, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((res, rej) => {
    let buf = '';
    let url = null;
    const fail = (why) => rej(new Error(`the server did not start: ${why}`));
    const t = setTimeout(() => fail('no login link printed within 120 s'), 120_000);
    server.once('exit', (code) => fail(`it exited with ${code}`));
    server.stdout.on('data', (d) => {
      buf += d.toString();
      process.stdout.write(d);
      url ??= buf.match(/voxgate is listening on (\S+)/)?.[1] ?? null;
      const link = buf.match(/(\S+\/login#code=\S+)/)?.[1];
      if (url && link) {
        clearTimeout(t);
        res({ url, link });
      }
    });
  });
}

async function main() {
  const question = join(work, 'question.wav');
  const q = makeQuestion('What is the capital of France?', question);
  check(q.rms > 0.02, `the question WAV has speech (rms ${q.rms.toFixed(3)}, ${q.seconds.toFixed(1)} s at ${q.rate} Hz)`);

  const started = await startServer();
  log('server at', started.url);
  // E2E_APP_URL: the app from elsewhere (`vite preview` or `npm run dev` proxying to
  // this server), while developing the UI; the CSP checks need the server's own pages.
  const appUrl = process.env.E2E_APP_URL?.replace(/\/$/, '');
  const url = appUrl ?? started.url;
  const link = appUrl ? appUrl + started.link.slice(started.url.length) : started.link;

  if (!appUrl) {
    // The page is served with the strict CSP: what follows runs under it.
    const root = await fetch(url + '/');
    const csp = root.headers.get('content-security-policy') ?? '';
    check(root.ok && csp.includes("script-src 'self'"), 'the app is served at / with the strict CSP');
    check((await root.text()).includes('/assets/index-'), 'the served page is the built app, not the fallback');
  } else {
    log('E2E_APP_URL is set: the CSP checks are skipped');
  }

  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${question}%noloop`,
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' || /Content Security Policy/i.test(m.text())) log('console:', m.type(), m.text());
  });
  const shot = (name, p = page) => p.screenshot({ path: join(outDir, `${name}.png`), fullPage: true });

  // 1. Sign in through the one-time link.
  await page.goto(link);
  await page.getByRole('heading', { name: 'You are signed in' }).waitFor();
  savedKey = (await page.getByTestId('new-key').textContent()).trim();
  check(savedKey.startsWith('vg_sk_'), 'the login link gave a private key');
  check(!page.url().includes('code='), 'the code left the address bar');
  await shot('01-signed-in');
  await page.getByRole('button', { name: 'Continue to assistants' }).click();

  // 2. Create an assistant (the caller speaks first; calls are recorded).
  await page.getByRole('link', { name: 'New assistant' }).click();
  await page.getByLabel('Name').fill('E2E France');
  await page.getByLabel('Who speaks first').selectOption('user-speaks-first');
  await page.getByLabel('Record calls (stereo WAV)').check();
  await shot('02-new-assistant');
  await page.getByRole('button', { name: 'Create assistant' }).click();
  await page.getByRole('heading', { name: 'Edit E2E France' }).waitFor();
  const assistantId = page.url().split('/').pop();
  check(/^[0-9A-Za-z-]{10,}$/.test(assistantId), `the assistant was created (${assistantId})`);

  // A validation error is shown in plain words next to its field.
  await page.getByLabel('Silence that ends a turn (ms)').fill('5');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.locator('.field-error').first().waitFor();
  check((await page.locator('.field-error').first().textContent()).includes('between'), 'an invalid field shows the API’s message');
  await page.getByLabel('Silence that ends a turn (ms)').fill('500');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.getByText('Saved.').waitFor();

  log('warming the models up with a typed call');
  await warmUp(started.url, savedKey, assistantId);
  check(true, 'the local models answer (a typed warm-up call)');

  // 3. Talk: the question is spoken into the fake microphone.
  await page.getByRole('button', { name: 'Talk' }).click();
  await page.waitForURL(/\/talk\//);
  await page.getByTestId('start-call').click();
  await page.getByTestId('call-phase').filter({ hasText: 'Live' }).waitFor({ timeout: STEP_MS });
  let micPeak = 0;
  let botPeak = 0;
  const sampler = setInterval(async () => {
    try {
      const [m, b] = await page.locator('[role=meter]').evaluateAll((els) => els.map((e) => Number(e.getAttribute('aria-valuenow'))));
      micPeak = Math.max(micPeak, m || 0);
      botPeak = Math.max(botPeak, b || 0);
    } catch {
      /* the page is changing */
    }
  }, 100);
  const userLine = page.locator('.transcript .line.user:not(.partial)').filter({ hasText: /capital/i });
  await userLine.first().waitFor({ timeout: STEP_MS });
  log('heard:', await userLine.first().textContent());
  const botLine = page.locator('.transcript .line.assistant');
  await botLine.first().waitFor({ timeout: STEP_MS });
  log('reply:', await botLine.first().textContent());
  await page.getByTestId('live-latency').locator('[data-testid=latency-chart]').waitFor({ timeout: STEP_MS });
  check(true, 'the question was transcribed, a reply and its latency arrived');
  await shot('03-talk');

  // Typed text is a user turn too (sent once the reply has played: while the
  // assistant speaks, the server may answer `busy`).
  await page.getByTestId('bot-indicator').filter({ hasNotText: 'is speaking' }).waitFor({ timeout: STEP_MS });
  await page.getByLabel('Type a message').fill('And what is the capital of Italy?');
  await page.getByRole('button', { name: 'Send' }).click();
  await page.locator('.transcript .line.user:has-text("capital of Italy") ~ .line.assistant').first().waitFor({ timeout: STEP_MS });
  log('typed reply:', await page.locator('.transcript .line.user:has-text("capital of Italy") ~ .line.assistant').first().textContent());
  check(true, 'a typed message got a reply');
  // Let the reply play a little so the player's level is seen.
  await page.waitForTimeout(1500);
  clearInterval(sampler);
  check(micPeak > 5, `the microphone level was above silence (meter peak ${micPeak})`);
  check(botPeak > 5, `the reply played through the jitter buffer (meter peak ${botPeak})`);

  // Phone-sized screenshot of the live call.
  await page.setViewportSize({ width: 390, height: 844 });
  await shot('04-talk-phone');
  await page.setViewportSize({ width: 1100, height: 900 });

  // 4. End the call.
  await page.getByTestId('end-call').click();
  await page.getByTestId('call-ended').waitFor({ timeout: STEP_MS });
  log('close code:', await page.getByTestId('call-ended').getAttribute('data-close-code'));
  check((await page.getByTestId('call-ended').textContent()).includes('You ended the call.'), 'the call ended, in plain words');
  await shot('05-ended');
  const callLink = page.getByRole('link', { name: 'See this call’s record' });
  const callPath = await callLink.getAttribute('href');

  // 5. The call list has it; its page has the transcript, the chart and the recording.
  await page.getByRole('navigation').getByRole('link', { name: 'Calls' }).click();
  await page.getByTestId('calls-table').waitFor();
  const row = page.locator(`a[href="${callPath}"]`);
  check(await row.isVisible(), 'the call is in the call list');
  await page.getByLabel('Status').selectOption('in-progress');
  await page.getByText('No call matches.').waitFor();
  await page.getByLabel('Status').selectOption('ended');
  await row.waitFor();
  await shot('06-calls');
  await row.click();
  await page.getByTestId('call-transcript').waitFor();
  // The record is written behind the call: wait for the turns with latency.
  await page.waitForFunction(() => document.querySelector('[data-testid=latency-chart] svg rect'), null, { timeout: 30_000 }).catch(async () => {
    await page.reload();
    await page.locator('[data-testid=latency-chart] svg rect').first().waitFor({ timeout: 30_000 });
  });
  check(/capital/i.test(await page.getByTestId('call-transcript').textContent()), 'the call page shows the transcript');
  check((await page.locator('[data-testid=latency-chart] svg rect').count()) > 0, 'the call page shows the stacked latency chart');
  await page.getByRole('button', { name: 'Load the recording' }).click({ timeout: 30_000 });
  const src = await page.getByTestId('recording').getAttribute('src');
  check(src?.startsWith('blob:'), 'the recording loads');
  await shot('07-call');

  // 6. A deep link, loaded directly from the server in a new browser (no key yet):
  // it asks to sign in, takes a pasted key, and shows the call.
  const csp1 = await page.evaluate(() => window.__csp);
  check(csp1.length === 0, `no CSP violation during the call and on the call pages (${csp1.join(', ')})`);
  await context.close();
  const ctx3 = await browser.newContext({ viewport: { width: 390, height: 844 } });
  await ctx3.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const p3 = await ctx3.newPage();
  p3.on('pageerror', (e) => pageErrors.push(e.message));
  const res = await p3.goto(url + callPath);
  check(res.status() === 200 && (appUrl || (res.headers()['content-security-policy'] ?? '').includes("script-src 'self'")), `the deep link ${callPath} serves the app`);
  await p3.getByRole('heading', { name: 'Sign in to voxgate' }).waitFor();
  await p3.getByLabel('Private key').fill('not-a-key');
  await p3.getByRole('button', { name: 'Sign in with the key' }).click();
  await p3.getByRole('alert').filter({ hasText: 'vg_sk_' }).waitFor();
  await p3.getByLabel('Private key').fill(savedKey);
  await p3.getByRole('button', { name: 'Sign in with the key' }).click();
  await p3.getByTestId('call-transcript').waitFor();
  await p3.locator('[data-testid=latency-chart] svg rect').first().waitFor();
  check(p3.url().endsWith(callPath), 'the deep link shows the call after signing in with a pasted key');
  await shot('08-call-phone', p3);

  // 7. The live view.
  await p3.goto(url + '/live');
  await p3.getByTestId('percentile-chart').waitFor();
  await p3.waitForFunction(() => document.querySelector('[data-testid=active-count]')?.textContent === '0', null, { timeout: 30_000 });
  check(true, 'the live view shows no call in progress and the percentile chart');
  await shot('09-live-phone', p3);
  const csp3 = await p3.evaluate(() => window.__csp);
  check(csp3.length === 0, `no CSP violation (${csp3.join(', ')})`);
  await ctx3.close();

  check(pageErrors.length === 0, `no uncaught page error (${pageErrors.join(' | ')})`);
}

let savedKey = null;
const startedAt = Date.now();
main()
  .then(async () => {
    clearTimeout(watchdog);
    await cleanup();
    log(`PASSED in ${((Date.now() - startedAt) / 1000).toFixed(0)} s; screenshots in ${outDir}`);
    process.exit(0);
  })
  .catch(async (e) => {
    clearTimeout(watchdog);
    console.error('e2e: FAILED:', e.message);
    try {
      if (browser) for (const c of browser.contexts()) for (const p of c.pages()) await p.screenshot({ path: join(outDir, `failure-${Date.now()}.png`), fullPage: true });
    } catch {
      /* best effort */
    }
    await cleanup();
    process.exit(1);
  });
