// Mocha runner inside VS Code's extension host. The workbench loads the bundled copy of this file
// (out/test/integration/index.js, built by scripts/vscode/build-tests.mjs) from the payload's
// extensionTestsPath and calls run(); scripts/vscode/run-integration.mjs starts everything.
// Every *.test.js bundled next to it runs, sorted by path. UI: tdd (suite/test/setup/teardown).
import Mocha from 'mocha';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { format } from 'node:util';

/** Marks the reporter's lines in the browser console, where run-integration.mjs picks them out. */
export const MOCHA_MARK = '[mocha] ';

export function run(): Promise<void> {
  // The extension host forwards console.log to the workbench's console among its own messages.
  (Mocha.reporters.Base as unknown as { consoleLog: (...a: unknown[]) => void }).consoleLog = (...a: unknown[]) =>
    console.log(
      MOCHA_MARK +
        format(...a)
          .split('\n')
          .join('\n' + MOCHA_MARK),
    );
  const mocha = new Mocha({
    ui: 'tdd',
    reporter: 'spec',
    color: false,
    // The extension host shares 2 cores with code-server and chromium: be generous.
    timeout: Number(process.env.IL_TEST_TIMEOUT_MS) || 120_000,
    slow: 10_000,
    grep: process.env.IL_TEST_GREP || undefined,
  });
  const dir = __dirname;
  const files = (readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith('.test.js')).sort();
  for (const f of files) mocha.addFile(join(dir, f));
  return new Promise((resolve, reject) => {
    try {
      mocha.run((failures) => {
        if (failures > 0) reject(new Error(`${failures} integration test${failures === 1 ? '' : 's'} failed.`));
        else resolve();
      });
    } catch (err) {
      reject(err);
    }
  });
}
