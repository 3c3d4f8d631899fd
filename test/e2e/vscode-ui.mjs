// Helpers that drive VS Code's workbench (code-server in headless chromium) through its UI, for
// test/e2e/e2e.mjs. Everything in the workbench is asynchronous and the machines have 2 cores:
// every helper polls with a generous timeout and says what it was waiting for when it gives up.
import { setTimeout as sleep } from 'node:timers/promises';

export const isMac = process.platform === 'darwin';

/** Polls fn until it returns a truthy value (or throws its last error / `message` after timeoutMs). */
export async function poll(fn, { timeoutMs = 30_000, intervalMs = 250, message = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${(timeoutMs / 1000).toFixed(0)}s waiting for ${message}${lastErr ? ` (last error: ${lastErr.message.split('\n')[0]})` : ''}`,
      );
    }
    await sleep(intervalMs);
  }
}

/** Waits until the workbench is up with its explorer showing the workspace's files. */
export async function waitForWorkbench(page, { timeoutMs = 90_000, file = 'train.csv' } = {}) {
  await page.locator('.monaco-workbench').waitFor({ state: 'visible', timeout: timeoutMs });
  await page.locator('.part.statusbar').waitFor({ state: 'visible', timeout: timeoutMs });
  if (file) await explorerItem(page, file).waitFor({ state: 'visible', timeout: timeoutMs });
  // Notifications (e.g. "open-vsx unreachable") would cover the panel: clear them.
  await clearNotifications(page).catch(() => {});
}

/** The explorer row of a file or folder (by its displayed name). */
export function explorerItem(page, name) {
  return page
    .locator('.explorer-folders-view .monaco-list-row')
    .filter({
      has: page.locator('.label-name', { hasText: new RegExp(`^${escapeRe(name)}$`) }),
    })
    .first();
}

/** Closes every notification toast (they steal clicks on a small viewport). */
export async function clearNotifications(page) {
  await runCommand(page, 'Notifications: Clear All Notifications', { timeoutMs: 5_000 });
}

/** The quick input (command palette, quick open, quick picks) when it is visible. */
export function quickInput(page) {
  return page.locator('.quick-input-widget');
}

/** True when the quick input is visible and its text (title, placeholder, items) matches re. */
export async function quickInputShows(page, re) {
  const qi = quickInput(page);
  if (!(await qi.isVisible().catch(() => false))) return false;
  const placeholder =
    (await qi
      .locator('input')
      .getAttribute('placeholder')
      .catch(() => '')) ?? '';
  return re.test(`${await qi.innerText().catch(() => '')}\n${placeholder}`);
}

async function closeQuickInput(page) {
  if (
    await quickInput(page)
      .isVisible()
      .catch(() => false)
  )
    await page.keyboard.press('Escape');
}

/**
 * Runs a command by its palette title (e.g. "Influence Lens: Open Panel") through F1, retrying
 * while the extension's contributions are still loading (they appear a few seconds after the
 * workbench). Throws a clear error when the title never shows up.
 */
export async function runCommand(page, title, { timeoutMs = 60_000, run = true } = {}) {
  const deadline = Date.now() + timeoutMs;
  let attempt = 0;
  for (;;) {
    attempt++;
    await closeQuickInput(page);
    await focusWorkbench(page);
    await page.keyboard.press('F1');
    const input = quickInput(page).locator('input');
    await input.waitFor({ state: 'visible', timeout: 10_000 });
    await input.fill(`>${title}`);
    const row = quickInput(page).locator('.monaco-list-row').filter({ hasText: title }).first();
    const found = await row.waitFor({ state: 'visible', timeout: 3_000 }).then(
      () => true,
      () => false,
    );
    if (found) {
      // The palette's list reorders while it filters: check the row about to run is ours.
      const label = (await row.getAttribute('aria-label').catch(() => '')) ?? '';
      if (!label || label.includes(title)) {
        if (run) await row.click();
        else await page.keyboard.press('Escape');
        return;
      }
    }
    if (Date.now() > deadline) {
      await closeQuickInput(page);
      throw new Error(
        `command "${title}" is not in the command palette after ${attempt} attempts (${(timeoutMs / 1000).toFixed(0)}s): ` +
          'is the extension installed (the VSIX), and does its package.json contribute this command title?',
      );
    }
    await sleep(1000);
  }
}

/** Waits until a command title is in the palette (without running it); throws like runCommand. */
export async function findCommand(page, title, { timeoutMs = 60_000 } = {}) {
  return runCommand(page, title, { timeoutMs, run: false });
}

async function focusWorkbench(page) {
  // Keys go to whatever has focus; a webview iframe swallows F1. Focus the workbench first.
  await page
    .locator('.part.statusbar')
    .click({ position: { x: 2, y: 2 } })
    .catch(() => {});
}

/**
 * Right-clicks target (a locator) and chooses a context-menu entry by its label: hover, then Enter
 * (a plain click on the entry does nothing in this workbench).
 */
export async function contextMenu(page, target, entry, { timeoutMs = 20_000 } = {}) {
  await poll(
    async () => {
      await page.keyboard.press('Escape');
      await target.click({ button: 'right' });
      const item = page
        .locator('.monaco-menu .action-item')
        .filter({
          has: page.locator('.action-label', { hasText: new RegExp(`^${escapeRe(entry)}$`) }),
        })
        .first();
      await item.waitFor({ state: 'visible', timeout: 3_000 });
      await item.hover();
      await sleep(150);
      await page.keyboard.press('Enter');
      return true;
    },
    { timeoutMs, message: `the context-menu entry "${entry}"` },
  );
}

/** Opens a workspace file in an editor through Quick Open (Ctrl+P). */
export async function openFile(page, name) {
  await closeQuickInput(page);
  await focusWorkbench(page);
  await page.keyboard.press(isMac ? 'Meta+P' : 'Control+P');
  const input = quickInput(page).locator('input');
  await input.waitFor({ state: 'visible', timeout: 10_000 });
  await input.fill(name);
  const row = quickInput(page).locator('.monaco-list-row').filter({ hasText: name }).first();
  await row.waitFor({ state: 'visible', timeout: 15_000 });
  await page.keyboard.press('Enter');
  await activeEditorTab(page, name);
}

/** Waits until the active editor tab is the one titled name. */
export async function activeEditorTab(page, name, { timeoutMs = 20_000 } = {}) {
  const tab = page.locator('.tabs-container .tab.active').filter({ hasText: name }).first();
  await tab.waitFor({ state: 'visible', timeout: timeoutMs });
  return tab;
}

/** Answers an open quick pick (or quick input) by typing text and choosing the first matching item. */
export async function pickQuickItem(page, text, { timeoutMs = 30_000 } = {}) {
  const input = quickInput(page).locator('input');
  await input.waitFor({ state: 'visible', timeout: timeoutMs });
  await input.fill(text);
  const row = quickInput(page).locator('.monaco-list-row').filter({ hasText: text }).first();
  await row.waitFor({ state: 'visible', timeout: timeoutMs });
  await row.click();
}

/** Moves the cursor of the active text editor to a 1-based line (Ctrl+G). */
export async function goToLine(page, line) {
  await page.locator('.editor-instance .monaco-editor textarea').first().focus();
  await page.keyboard.press('Control+G');
  const input = quickInput(page).locator('input');
  await input.waitFor({ state: 'visible', timeout: 10_000 });
  await input.fill(`:${line}`);
  await page.keyboard.press('Enter');
  await poll(async () => (await cursorPosition(page))?.line === line, {
    timeoutMs: 10_000,
    message: `the cursor on line ${line}`,
  });
}

/** The active editor's cursor from the status bar's "Ln X, Col Y" ({ line, col }), or null. */
export async function cursorPosition(page) {
  const items = page.locator('.part.statusbar .statusbar-item');
  const texts = await items.allInnerTexts();
  for (const t of texts) {
    const m = /Ln (\d+), Col (\d+)/.exec(t);
    if (m) return { line: Number(m[1]), col: Number(m[2]) };
  }
  return null;
}

/** Polls until the status bar shows the cursor on line (1-based); returns the position. */
export async function waitForCursorLine(page, line, { timeoutMs = 20_000 } = {}) {
  return poll(
    async () => {
      const p = await cursorPosition(page);
      return p && p.line === line ? p : null;
    },
    { timeoutMs, message: `the status bar to show "Ln ${line}"` },
  );
}

/**
 * The content frame of a webview: VS Code nests it in two iframes, the outer one's URL carries
 * the webview (and extensionId=…), its child named/ided "active-frame" holds the page. Polls
 * until a frame matching `match` (a string found in the outer URL, default the extension's id)
 * has a child frame whose document contains `selector` (default body).
 */
export async function webviewFrame(page, { match = 'influence-lens', selector = 'body', timeoutMs = 60_000 } = {}) {
  return poll(
    async () => {
      for (const outer of page.frames()) {
        const url = outer.url();
        if (!url.includes('webview') || !decodeURIComponent(url).includes(match)) continue;
        for (const inner of outer.childFrames()) {
          const isActive =
            inner.name() === 'active-frame' ||
            inner.url().includes('fake.html') ||
            (await inner
              .frameElement()
              .then((el) => el.getAttribute('id'))
              .catch(() => null)) === 'active-frame';
          if (!isActive) continue;
          if (await inner.locator(selector).first().count()) return inner;
        }
      }
      return null;
    },
    { timeoutMs, message: `a webview matching "${match}" that contains ${selector}` },
  );
}

/** Saves a screenshot of the whole window. */
export async function screenshot(page, path) {
  await page.screenshot({ path, fullPage: false });
  return path;
}

function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
