// Debian's chromium, headless, driven by playwright-core (never `npx playwright install`: the
// download is refused on these machines). Used by run-integration.mjs and test/e2e/e2e.mjs.
import { chromium } from 'playwright-core';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CHROMIUM, runEnv } from './server.mjs';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  '--disable-features=Translate,MediaRouter,OptimizationHints',
  '--password-store=basic',
  '--use-mock-keychain',
  // Crashpad would keep its database in ~/.config/chromium whatever the profile.
  '--disable-breakpad',
  '--disable-crash-reporter',
  // No network here but the npm registry: without this every lookup of an outside host (the
  // marketplace, CDNs) waits ~20 s for DNS to fail, and the extension host waits with it.
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost',
];

/**
 * Launches chromium with a fresh profile under runDir/chromium and returns { context, page, close }.
 * Options: headless (true unless HEADED=1), viewport ({ width: 1600, height: 1000 }).
 */
export async function launchBrowser({
  runDir,
  headless = process.env.HEADED !== '1',
  viewport = { width: 1600, height: 1000 },
}) {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run bash scripts/vscode/setup.sh`);
  const profile = join(runDir, 'chromium');
  const home = join(runDir, 'home');
  mkdirSync(profile, { recursive: true });
  mkdirSync(home, { recursive: true });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless,
    args: CHROMIUM_ARGS,
    viewport,
    // HOME too: chromium writes ~/.pki and ~/.local otherwise.
    env: runEnv(runDir, { HOME: home }),
    timeout: 60_000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    close: async () => {
      try {
        await context.close();
      } catch {
        /* already gone */
      }
    },
  };
}
