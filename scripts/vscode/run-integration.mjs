#!/usr/bin/env node
// Runs the integration suite (mocha inside the real VS Code extension host) in code-server, driven
// by headless chromium. Builds nothing: run `npm run build` and scripts/vscode/build-tests.mjs first
// (and scripts/vscode/setup.sh once).
//
//   node scripts/vscode/run-integration.mjs [--extension-development-path DIR] [--extension-tests-path FILE]
//        [--timeout SECONDS] [--keep]
//
// Defaults: the repository root and out/test/integration/index.js, 180 s (or IL_INTEGRATION_TIMEOUT_S).
// The workspace is a fresh folder under the run dir holding copies of samples/digits/*, so tests may
// write into it (.vscode/, caches). Mocha's output is printed; the exit status is mocha's (1 when a
// test fails), 2 for a timeout or a harness failure. The run dir (.cache/vscode-env/runs/…: logs,
// code-server.log, browser-console.log) is removed after a pass and kept after a failure, or with --keep.
// Environment: IL_TEST_GREP (a mocha grep), IL_VERBOSE=1 (print the whole browser console too).
import { existsSync, rmSync, appendFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { format } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, newRunDir, startCodeServer, copySample, onSignals } from './server.mjs';
import { launchBrowser } from './browser.mjs';

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const extDev = resolve(opt('--extension-development-path', ROOT));
const testsPath = resolve(opt('--extension-tests-path', join(ROOT, 'out/test/integration/index.js')));
const timeoutS = Number(opt('--timeout', process.env.IL_INTEGRATION_TIMEOUT_S || 180));
const keep = argv.includes('--keep') || process.env.IL_KEEP_RUN === '1';
const verbose = process.env.IL_VERBOSE === '1';

const MOCHA_MARK = '[mocha] ';
/** The workbench logs `('%c INFO', 'color: …', ...args)`: drop the styling and printf-format the rest. */
function consoleText(text, args) {
  if (!args.length) return text;
  let rest = args;
  if (typeof rest[0] === 'string' && rest[0].startsWith('%c'))
    rest = rest.slice(typeof rest[1] === 'string' && rest[1].startsWith('color') ? 2 : 1);
  return rest.length ? format(...rest.map((a) => (a === undefined ? 'undefined' : a))) : text;
}

const t0 = Date.now();
const secs = () => ((Date.now() - t0) / 1000).toFixed(1);
const say = (m) => console.log(`[integration ${secs()}s] ${m}`);

if (!existsSync(testsPath)) {
  console.error(
    `run-integration: ${relative(ROOT, testsPath) || testsPath} is missing: run node scripts/vscode/build-tests.mjs first`,
  );
  process.exit(2);
}
if (!existsSync(join(extDev, 'package.json'))) {
  console.error(`run-integration: ${extDev}/package.json is missing`);
  process.exit(2);
}

const runDir = newRunDir('integration');
const workspace = copySample(join(runDir, 'workspace'));
const consoleLog = join(runDir, 'browser-console.log');

let server, browser;
const cleanup = async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
};
onSignals(async (sig) => {
  console.error(`run-integration: ${sig}, stopping code-server`);
  await cleanup();
});

let code;
try {
  server = await startCodeServer({ runDir, folder: workspace, smokeTestDriver: true, disableWorkspaceTrust: true });
  say(`code-server ready at ${server.url} in ${(server.startMs / 1000).toFixed(1)}s`);
  browser = await launchBrowser({ runDir });
  say('chromium started');
  const { page } = browser;

  let finish;
  const finished = new Promise((res) => {
    finish = res;
  });
  // The workbench calls this with mocha's exit code once the suite has run (smoke-test driver).
  await page.exposeFunction('codeAutomationExit', (c) => {
    finish({ code: Number(c) });
  });

  // Handled in order (jsonValue is async): the last lines must be printed before the exit is.
  let consoleQueue = Promise.resolve();
  page.on('console', (msg) => {
    consoleQueue = consoleQueue
      .then(async () => {
        const values = await Promise.all(msg.args().map((a) => a.jsonValue().catch(() => String(a))));
        const text = consoleText(msg.text(), values);
        appendFileSync(consoleLog, `${secs()}s [${msg.type()}] ${text}\n`);
        // test/integration/index.ts marks each line of mocha's reporter.
        const mine = text
          .split('\n')
          .filter((l) => l.includes(MOCHA_MARK))
          .map((l) => l.slice(l.indexOf(MOCHA_MARK) + MOCHA_MARK.length));
        if (mine.length) console.log(mine.join('\n'));
        else if (verbose) console.log(`  [browser ${msg.type()}] ${text}`);
      })
      .catch(() => {});
  });
  const drainConsole = async () => {
    await sleep(300);
    await consoleQueue;
  };
  page.on('pageerror', (err) => appendFileSync(consoleLog, `[pageerror] ${err.stack || err}\n`));
  page.on('crash', () => finish({ error: 'the browser page crashed' }));

  const payload = [
    ['extensionDevelopmentPath', server.remoteUri(extDev)],
    ['extensionTestsPath', server.remoteUri(testsPath)],
  ];
  await page.goto(server.workbenchUrl({ folder: workspace, payload }), {
    waitUntil: 'domcontentloaded',
    timeout: 60_000,
  });
  say(`workbench opened; running ${relative(ROOT, testsPath) || testsPath} (timeout ${timeoutS}s)`);

  const timer = new Promise((res) =>
    setTimeout(
      () =>
        res({
          error: `timed out after ${timeoutS}s waiting for the suite to finish (raise it with --timeout or IL_INTEGRATION_TIMEOUT_S)`,
        }),
      timeoutS * 1000,
    ).unref(),
  );
  const result = await Promise.race([finished, timer]);
  if (result.error) {
    console.error(
      `run-integration: ${result.error}. Browser console: ${relative(ROOT, consoleLog)}; code-server log: ${relative(ROOT, server.logFile)}`,
    );
    code = 2;
  } else {
    code = result.code;
    await drainConsole();
    say(`mocha exited with ${code}`);
  }
} catch (err) {
  console.error(`run-integration: ${err.stack || err}`);
  code = 2;
} finally {
  await cleanup();
}
if (code === 0 && !keep) rmSync(runDir, { recursive: true, force: true });
else console.error(`run-integration: logs kept in ${relative(ROOT, runDir)}`);
process.exit(code);
