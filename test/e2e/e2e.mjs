#!/usr/bin/env node
// End-to-end: the packaged VSIX installed in a real VS Code (code-server, no test driver), the
// sample workspace, headless chromium clicking through the UI like a user.
//
//   node test/e2e/e2e.mjs [--vsix FILE] [--keep] [--only N] [--screenshots DIR]
//
// --vsix: the VSIX to install (default: scripts/vscode/package.sh builds one into the run dir,
// from dist/: run `npm run build` first). --keep: keep the run dir after a pass. --only N: run the
// first N steps. --screenshots DIR: where workbench.png, audit.png and explain.png go (default
// .cache/screenshots; `npm run screenshots` copies them into docs/screenshots on purpose).
// Prerequisite: scripts/vscode/setup.sh. Prints one line per step and `N passing` / `N failing`
// (scripts/vscode/summary.mjs counts them); exits 1 when a step fails. After a failure the later
// steps are skipped, and a screenshot of the failure is kept in the run dir.
//
// Adding a step: `step('what the user sees', async ({ page }) => { ... })` in the flow below, in
// order; the helpers are in test/e2e/vscode-ui.mjs.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, appendFileSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import {
  ROOT,
  newRunDir,
  startCodeServer,
  installExtension,
  copySample,
  onSignals,
} from '../../scripts/vscode/server.mjs';
import { launchBrowser } from '../../scripts/vscode/browser.mjs';
import {
  waitForWorkbench,
  runCommand,
  findCommand,
  contextMenu,
  explorerItem,
  openFile,
  goToLine,
  pickQuickItem,
  webviewFrame,
  waitForCursorLine,
  activeEditorTab,
  screenshot,
  poll,
  quickInputShows,
} from './vscode-ui.mjs';

const argv = process.argv.slice(2);
const opt = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const keep = argv.includes('--keep') || process.env.IL_KEEP_RUN === '1';
const only = opt('--only') ? Number(opt('--only')) : Infinity;
// Screenshots never go into the repository's tracked files: `npm run screenshots` copies them there.
const SHOTS = resolve(opt('--screenshots') ?? join(ROOT, '.cache/screenshots'));
const SCREENSHOT = join(SHOTS, 'workbench.png');
const extraShot = async (page, name) => {
  // The run's progress notification closes just after the panel shows the result: not in the picture.
  await poll(
    async () =>
      (await page.locator('.notification-toast', { hasText: /Influence Lens: (explaining|auditing)/ }).count()) === 0,
    { timeoutMs: 10_000, message: 'the progress notification to close' },
  ).catch(() => {});
  mkdirSync(SHOTS, { recursive: true });
  await screenshot(page, join(SHOTS, name));
};
const FLAGGED_ROWS = '[id^="flagged"] tr.clickable';
const PALETTE = {
  explainRow: "Influence Lens: Explain This Row's Prediction",
  openPanel: 'Influence Lens: Open Panel',
};

// ---------------------------------------------------------------------------------------------
// The flow, in order. Each step gets { page, server, workspace, runDir, state } (state: shared).
// ---------------------------------------------------------------------------------------------
const steps = [];
const step = (name, fn, { timeoutMs = 120_000 } = {}) => steps.push({ name, fn, timeoutMs });

step('the workbench opens the sample workspace', async ({ page }) => {
  await waitForWorkbench(page, { file: 'train.csv' });
});

step('the extension contributes its commands to the palette', async ({ page }) => {
  // (Explain This Row's Prediction shows only while an editor is open: checked in its own step.)
  await findCommand(page, PALETTE.openPanel, { timeoutMs: 60_000 });
  // The workbench with the extension loaded (its view in the activity bar).
  mkdirSync(SHOTS, { recursive: true });
  await screenshot(page, SCREENSHOT);
});

step(
  'right-click train.csv → Audit Training Data, choose model.onnx: the panel lists flagged rows',
  async ({ page, state }) => {
    await contextMenu(page, explorerItem(page, 'train.csv'), 'Audit Training Data');
    // No model is chosen yet: the extension asks for it (and for the label column if it cannot tell).
    await pickQuickItem(page, 'model.onnx', { timeoutMs: 60_000 });
    state.frame = await poll(
      async () => {
        if (await quickInputShows(page, /label column/i)) await pickQuickItem(page, 'label');
        return webviewFrame(page, { selector: FLAGGED_ROWS, timeoutMs: 1_000 }).catch(() => null);
      },
      { timeoutMs: 180_000, message: `the panel's flagged rows (${FLAGGED_ROWS})` },
    );
    await extraShot(page, 'audit.png');
  },
);

step(
  "open test.csv → Explain This Row's Prediction: helpful and harmful rows with thumbnails",
  async ({ page, state }) => {
    await openFile(page, 'test.csv');
    await goToLine(page, 2); // the first data row
    await runCommand(page, PALETTE.explainRow);
    const frame = await webviewFrame(page, { selector: '#helpful-table tr.clickable', timeoutMs: 180_000 });
    for (const id of ['helpful-table', 'harmful-table']) {
      const rows = frame.locator(`#${id} tr.clickable`);
      const n = await rows.count();
      if (n < 1) throw new Error(`#${id} has no rows`);
      const thumbs = await frame.locator(`#${id} tr.clickable canvas.thumb`).count();
      if (thumbs < n) throw new Error(`#${id}: ${thumbs} thumbnails for ${n} rows`);
    }
    // The stability badge says whether the top rows hold at λ/10 and 10λ, with the numbers in its hover.
    const badge = frame.locator('#explain-stability');
    const text = (await badge.textContent())?.trim();
    if (text !== 'stable' && text !== 'sensitive to damping')
      throw new Error(`the stability badge reads ${JSON.stringify(text)}`);
    if (!/Jaccard overlap/.test((await badge.getAttribute('title')) ?? ''))
      throw new Error('the stability badge has no numbers in its hover');
    // The sample's MLP has 3 layers: the layer selector, with Head pressed, and the agreement badge.
    const pressed = await frame.locator('#layer-selector button[aria-pressed="true"]').allTextContents();
    if (pressed.join() !== 'Head') throw new Error(`the layer selector has ${JSON.stringify(pressed)} pressed`);
    const agreement = frame.locator('#agreement');
    const said = (await agreement.textContent())?.trim() ?? '';
    if (
      !/^(head-only is faithful here|deeper layers change the answer)\b.*\(ρ = -?\d\.\d\d, top-10 overlap \d+\/\d+ helpful/.test(
        said,
      )
    )
      throw new Error(`the agreement badge reads ${JSON.stringify(said)}`);
    if (!/Spearman's ρ = .* Top-10 overlap/.test((await agreement.getAttribute('title')) ?? ''))
      throw new Error('the agreement badge has no meaning in its hover');
    state.frame = frame;
    await extraShot(page, 'explain.png');
  },
);

step('clicking a helpful row reveals its line in train.csv', async ({ page, state }) => {
  const row = state.frame.locator('#helpful-table tr.clickable').first();
  const line = Number(await row.getAttribute('data-line'));
  if (!Number.isInteger(line) || line < 2) throw new Error(`the first helpful row has no data-line (got ${line})`);
  await row.click();
  await activeEditorTab(page, 'train.csv');
  await waitForCursorLine(page, line);
});

// The same sample as images (samples/digits/images: the digits as 8×8 PNGs in class folders).
/** Expands a folder in the explorer (a click toggles it). */
async function expand(page, name) {
  const row = explorerItem(page, name);
  await row.waitFor({ state: 'visible', timeout: 20_000 });
  if ((await row.getAttribute('aria-expanded')) !== 'true') await row.click();
  await poll(async () => (await row.getAttribute('aria-expanded')) === 'true', {
    timeoutMs: 10_000,
    message: `the folder ${name} expanded`,
  });
}

/** Seconds from now until the panel shows the explanation of image `name` with real thumbnails. */
async function explainedImage(page, name) {
  const t0 = Date.now();
  const frame = await poll(
    async () => {
      const f = await webviewFrame(page, { selector: '#helpful-table tr.clickable img.thumb', timeoutMs: 1_000 }).catch(
        () => null,
      );
      if (!f) return null;
      return (await f
        .locator('#explain-header figcaption')
        .textContent()
        .catch(() => '')) === name
        ? f
        : null;
    },
    { timeoutMs: 120_000, intervalMs: 25, message: `the explanation of ${name} with image thumbnails` },
  );
  return { frame, seconds: (Date.now() - t0) / 1000 };
}

step('right-click the images/train folder → Use as Training Data', async ({ page, workspace }) => {
  await expand(page, 'images');
  await contextMenu(page, explorerItem(page, 'train'), 'Use as Training Data');
  await poll(
    () => JSON.parse(readFileSync(join(workspace, '.vscode/influence-lens.json'), 'utf8')).train === 'images/train',
    { message: 'images/train as the training data in .vscode/influence-lens.json' },
  );
});

step(
  "right-click a test image → Explain This Image's Prediction: the panel shows the real images (cold)",
  async ({ page, workspace, state }) => {
    const images = readdirSync(join(workspace, 'images/test/3')).sort();
    state.images = images;
    await expand(page, 'test');
    await expand(page, '3');
    await contextMenu(page, explorerItem(page, images[0]), "Explain This Image's Prediction");
    const { frame, seconds } = await explainedImage(page, images[0]);
    state.latency = { cold: seconds };
    for (const id of ['helpful-table', 'harmful-table']) {
      const rows = await frame.locator(`#${id} tr.clickable`).count();
      const imgs = await frame.locator(`#${id} tr.clickable img.thumb`).count();
      if (rows < 1 || imgs < rows) throw new Error(`#${id}: ${imgs} images for ${rows} rows`);
      const loaded = await frame
        .locator(`#${id} tr.clickable img.thumb`)
        .first()
        .evaluate((img) => img.complete && img.naturalWidth > 0);
      if (!loaded) throw new Error(`#${id}: the first thumbnail did not load`);
    }
    state.frame = frame;
    await extraShot(page, 'explain-images.png');
  },
);

step('explain another test image (warm: the training images are cached)', async ({ page, state }) => {
  await contextMenu(page, explorerItem(page, state.images[1]), "Explain This Image's Prediction");
  const { frame, seconds } = await explainedImage(page, state.images[1]);
  state.latency.warm = seconds;
  state.frame = frame;
  console.log(
    `    e2e latency, Explain → rows visible (1,000 training PNGs): cold ${state.latency.cold.toFixed(2)} s, warm ${seconds.toFixed(2)} s`,
  );
});

step('clicking a helpful image row opens that image', async ({ page, state }) => {
  const row = state.frame.locator('#helpful-table tr.clickable').first();
  const title = await row.locator('img.thumb').getAttribute('title');
  const name = /: (\S+\.png)$/.exec(title ?? '')?.[1];
  if (!name) throw new Error(`the first helpful row's image has no file name (title ${title})`);
  await row.click();
  await activeEditorTab(page, name);
});

// ---------------------------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------------------------
const t0 = Date.now();
const secs = (t = t0) => ((Date.now() - t) / 1000).toFixed(1);
const runDir = newRunDir('e2e');
const consoleLog = join(runDir, 'browser-console.log');
let server, browser;
const cleanup = async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
};
onSignals(async () => {
  await cleanup();
});

let passed = 0,
  failed = 0,
  skipped = 0;
let latencyState = null;
const ctxLatency = () =>
  latencyState?.latency?.warm !== undefined
    ? `Explain → rows visible: cold ${latencyState.latency.cold.toFixed(2)} s, warm ${latencyState.latency.warm.toFixed(2)} s`
    : '';
try {
  let vsix = opt('--vsix') && resolve(opt('--vsix'));
  if (!vsix) {
    console.log('e2e: packaging the VSIX (scripts/vscode/package.sh)');
    vsix = execFileSync('bash', [join(ROOT, 'scripts/vscode/package.sh'), join(runDir, 'influence-lens.vsix')], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    })
      .trim()
      .split('\n')
      .pop();
  }
  const extensionsDir = join(runDir, 'ext');
  installExtension(vsix, extensionsDir, { runDir });
  const workspace = copySample(join(runDir, 'workspace'));
  server = await startCodeServer({ runDir, folder: workspace, extensionsDir, disableWorkspaceTrust: true });
  console.log(
    `e2e: code-server ready in ${(server.startMs / 1000).toFixed(1)}s at ${server.url}; VSIX ${relative(ROOT, vsix)}`,
  );
  browser = await launchBrowser({ runDir });
  const { page } = browser;
  page.on('console', (m) => appendFileSync(consoleLog, `${secs()}s [${m.type()}] ${m.text()}\n`));
  page.on('pageerror', (e) => appendFileSync(consoleLog, `${secs()}s [pageerror] ${e.stack || e}\n`));
  await page.goto(server.workbenchUrl({ folder: workspace }), { waitUntil: 'domcontentloaded', timeout: 90_000 });

  const ctx = { page, server, workspace, runDir, state: {} };
  latencyState = ctx.state;
  console.log('');
  console.log('  e2e');
  for (const [i, s] of steps.entries()) {
    if (i >= only || failed) {
      skipped++;
      console.log(`    - ${s.name} (skipped)`);
      continue;
    }
    const ts = Date.now();
    try {
      await Promise.race([
        s.fn(ctx),
        new Promise((_, rej) =>
          setTimeout(() => rej(new Error(`step timed out after ${s.timeoutMs / 1000}s`)), s.timeoutMs).unref(),
        ),
      ]);
      passed++;
      console.log(`    ✔ ${s.name} (${secs(ts)}s)`);
    } catch (err) {
      failed++;
      const shot = join(runDir, `failed-step-${i + 1}.png`);
      await screenshot(page, shot).catch(() => {});
      console.log(
        `    ✖ ${s.name} (${secs(ts)}s)\n      ${String(err.message || err)
          .split('\n')
          .join('\n      ')}\n      screenshot: ${relative(ROOT, shot)}`,
      );
    }
  }
} catch (err) {
  failed++;
  console.log(`e2e: harness failure: ${err.stack || err}`);
} finally {
  await cleanup();
}
console.log('');
console.log(`  ${passed} passing (${secs()}s)`);
if (failed) console.log(`  ${failed} failing`);
if (skipped) console.log(`  ${skipped} pending`);
if (!failed && !keep) rmSync(runDir, { recursive: true, force: true });
else console.log(`e2e: run dir kept: ${relative(ROOT, runDir)} (code-server.log, browser-console.log, screenshots)`);
if (!failed) console.log(`e2e: screenshot ${relative(ROOT, SCREENSHOT)}`);
if (ctxLatency()) console.log(`e2e: latency ${ctxLatency()}`);
process.exit(failed ? 1 : 0);
