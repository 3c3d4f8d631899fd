#!/usr/bin/env node
// code-server (VS Code 1.139 in the browser, a real Node extension host on the server) for the
// integration tests, the end-to-end test and the demo. A library and a small CLI; runs on Node 20.
//
// Library:
//   const server = await startCodeServer({ runDir, folder, smokeTestDriver: true });
//   server.url              http://127.0.0.1:PORT
//   server.workbenchUrl({ folder, payload })   the URL that opens a folder (and a test payload)
//   server.remoteUri(absPath)                  vscode-remote://127.0.0.1:PORT/abs/path
//   await server.stop()     kills code-server's whole process group (extension host, watchers…)
//
// CLI (foreground; prints exactly one line `URL: …` when /healthz answers; Ctrl-C/SIGTERM stop it):
//   node scripts/vscode/server.mjs --run-dir DIR --folder DIR [--port N] [--extensions-dir DIR]
//        [--smoke-test-driver] [--no-disable-workspace-trust] [--open-walkthroughs]
//
// Prerequisite: scripts/vscode/setup.sh (Node 24 and code-server under .cache/vscode-env).
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  openSync,
  closeSync,
  readFileSync,
  writeFileSync,
  cpSync,
  readdirSync,
  rmSync,
  statSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const ENV_DIR = join(ROOT, '.cache/vscode-env');
export const NODE24_DIR = join(ENV_DIR, 'node24');
export const NODE24 = join(NODE24_DIR, 'bin/node');
export const CODE_SERVER_ENTRY = join(ENV_DIR, 'code-server/lib/node_modules/code-server/out/node/entry.js');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const SAMPLE_DIR = join(ROOT, 'samples/digits');

/** Settings that keep the workbench quiet and deterministic (no welcome page, tips, AI, telemetry). */
export const QUIET_SETTINGS = {
  'workbench.startupEditor': 'none',
  'workbench.tips.enabled': false,
  'workbench.enableExperiments': false,
  'workbench.welcomePage.walkthroughs.openOnInstall': false,
  'workbench.secondarySideBar.defaultVisibility': 'hidden',
  'chat.disableAIFeatures': true,
  'telemetry.telemetryLevel': 'off',
  'extensions.autoUpdate': false,
  'extensions.autoCheckUpdates': false,
  'extensions.ignoreRecommendations': true,
  'update.mode': 'none',
  'git.enabled': false,
  'git.openRepositoryInParentFolders': 'never',
  'files.autoSave': 'off',
};

/** Throws a clear error when setup.sh has not run. */
export function checkInstalled() {
  for (const [what, path] of [
    ['Node 24', NODE24],
    ['code-server', CODE_SERVER_ENTRY],
  ]) {
    if (!existsSync(path))
      throw new Error(`${what} is not installed (${path} is missing): run bash scripts/vscode/setup.sh`);
  }
}

/** The environment for code-server and the browser: XDG dirs under runDir, no onnxruntime telemetry. */
export function runEnv(runDir, extra = {}) {
  const env = {
    ...process.env,
    PATH: `${join(NODE24_DIR, 'bin')}:${process.env.PATH}`,
    XDG_CONFIG_HOME: join(runDir, 'xdg/config'),
    XDG_DATA_HOME: join(runDir, 'xdg/data'),
    XDG_CACHE_HOME: join(runDir, 'xdg/cache'),
    ORT_DISABLE_TELEMETRY: '1',
    ...extra,
  };
  // Variables of an enclosing VS Code/Electron would leak into the extension host.
  for (const k of Object.keys(env)) if (k.startsWith('VSCODE_') || k === 'ELECTRON_RUN_AS_NODE') delete env[k];
  // code-server lets $PORT override --bind-addr's port, and reads $PASSWORD/$HASHED_PASSWORD.
  delete env.PORT;
  delete env.PASSWORD;
  delete env.HASHED_PASSWORD;
  for (const d of ['XDG_CONFIG_HOME', 'XDG_DATA_HOME', 'XDG_CACHE_HOME']) mkdirSync(env[d], { recursive: true });
  return env;
}

/** A free TCP port on host (the kernel picks it; a race with another process is retried by startCodeServer). */
export function freePort(host = '127.0.0.1') {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, host, () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/** Whether host:port can be listened on now. */
export function portFree(port, host = '127.0.0.1') {
  return new Promise((res) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => res(false));
    srv.listen(port, host, () => srv.close(() => res(true)));
  });
}

/** Resolves true when GET url/healthz answers 200 within timeoutMs (polls every 100 ms). */
export async function waitForHealth(url, { timeoutMs = 60_000, isDead = () => false } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (isDead()) return false;
    try {
      const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
      if (r.ok) return true;
    } catch {
      /* not listening yet */
    }
    await sleep(100);
  }
  return false;
}

/** Copies the bundled sample (samples/digits/*) into dir, which the tests may write into. */
export function copySample(dir, { overwrite = true } = {}) {
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(SAMPLE_DIR)) {
    const to = join(dir, f);
    if (overwrite || !existsSync(to)) cpSync(join(SAMPLE_DIR, f), to, { recursive: true });
  }
  return dir;
}

/**
 * A fresh run folder .cache/vscode-env/runs/KIND-<time>-<pid> (logs, user data, profile,
 * workspace copy). Older ones of the same kind are pruned to the `keep` newest first: runs that
 * fail keep theirs for inspection, passing runs remove their own.
 */
export function newRunDir(kind, { keep = 5 } = {}) {
  const runsDir = join(ENV_DIR, 'runs');
  mkdirSync(runsDir, { recursive: true });
  const old = readdirSync(runsDir)
    .filter((d) => d.startsWith(`${kind}-`))
    .map((d) => join(runsDir, d))
    .map((d) => {
      try {
        return [d, statSync(d).mtimeMs];
      } catch {
        return [d, 0];
      }
    })
    .sort((a, b) => a[1] - b[1])
    .map(([d]) => d);
  for (const d of old.slice(0, Math.max(0, old.length - keep))) rmSync(d, { recursive: true, force: true });
  const dir = join(runsDir, `${kind}-${new Date().toISOString().replace(/[:.]/g, '-')}-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Seeds userDataDir/User/settings.json with QUIET_SETTINGS plus settings. */
export function seedSettings(userDataDir, settings = {}) {
  const dir = join(userDataDir, 'User');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'settings.json');
  let old = {};
  try {
    old = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    /* none yet */
  }
  writeFileSync(file, JSON.stringify({ ...QUIET_SETTINGS, ...old, ...settings }, null, 2) + '\n');
}

/** `code-server --install-extension vsix --extensions-dir dir` (synchronous; throws with its output on failure). */
export function installExtension(vsix, extensionsDir, { runDir = join(ENV_DIR, 'run') } = {}) {
  checkInstalled();
  mkdirSync(extensionsDir, { recursive: true });
  const r = spawnSync(
    NODE24,
    [
      CODE_SERVER_ENTRY,
      '--extensions-dir',
      extensionsDir,
      '--user-data-dir',
      join(runDir, 'ud'),
      '--install-extension',
      resolve(vsix),
      '--force',
    ],
    { env: runEnv(runDir), encoding: 'utf8', timeout: 180_000 },
  );
  if (r.status !== 0)
    throw new Error(
      `code-server --install-extension ${vsix} failed (${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`,
    );
  return r.stdout;
}

function groupAlive(pgid) {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Sends SIGTERM to the process group, then SIGKILL after graceMs; resolves when it is gone. */
export async function killGroup(pgid, { graceMs = 5000 } = {}) {
  if (!groupAlive(pgid)) return;
  try {
    process.kill(-pgid, 'SIGTERM');
  } catch {
    /* gone */
  }
  const deadline = Date.now() + graceMs;
  while (groupAlive(pgid) && Date.now() < deadline) await sleep(100);
  if (groupAlive(pgid)) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      /* gone */
    }
    for (let i = 0; i < 50 && groupAlive(pgid); i++) await sleep(100);
  }
}

const liveGroups = new Set();
let exitHookInstalled = false;
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort: whatever ends this process (an exception, process.exit), no code-server survives it.
  process.on('exit', () => {
    for (const g of liveGroups) {
      try {
        process.kill(-g, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  });
}

/**
 * Calls cleanup once on SIGINT, SIGTERM or SIGHUP, then exits with 130/143/129.
 * Returns a function that removes the handlers.
 */
export function onSignals(cleanup) {
  let done = false;
  const handlers = {};
  for (const [sig, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ]) {
    handlers[sig] = async () => {
      if (done) return;
      done = true;
      try {
        await cleanup(sig);
      } finally {
        process.exit(code);
      }
    };
    process.on(sig, handlers[sig]);
  }
  return () => {
    for (const [sig, h] of Object.entries(handlers)) process.off(sig, h);
  };
}

/**
 * Starts code-server on host:port (a free port unless given), in its own process group (setsid),
 * with its user data, extensions, config and XDG dirs under runDir, and waits for /healthz.
 *
 * Options: runDir (required), folder (opened by default), port, host ('127.0.0.1'),
 *   extensionsDir (runDir/ext), userDataDir (runDir/ud), settings (merged over QUIET_SETTINGS),
 *   smokeTestDriver (false: pass --vscode-option enable-smoke-test-driver so that the workbench
 *   runs extensionTestsPath payloads), disableWorkspaceTrust (true: the tests and the demo run
 *   trusted; false to exercise the untrusted-workspace mode), extraArgs, env,
 *   logFile (runDir/code-server.log; 'inherit' to print), readyTimeoutMs (60 s).
 */
export async function startCodeServer(opts) {
  checkInstalled();
  const runDir = resolve(opts.runDir);
  const host = opts.host ?? '127.0.0.1';
  const userDataDir = resolve(opts.userDataDir ?? join(runDir, 'ud'));
  const extensionsDir = resolve(opts.extensionsDir ?? join(runDir, 'ext'));
  mkdirSync(runDir, { recursive: true });
  mkdirSync(extensionsDir, { recursive: true });
  seedSettings(userDataDir, opts.settings);
  const logFile = opts.logFile ?? join(runDir, 'code-server.log');
  const env = runEnv(runDir, opts.env);

  // A given port must be free: /healthz would otherwise be answered by whatever holds it.
  if (opts.port && !(await portFree(Number(opts.port), host)))
    throw new Error(`port ${opts.port} on ${host} is in use`);
  const attempts = opts.port ? 1 : 3;
  let lastError;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const port = opts.port ? Number(opts.port) : await freePort(host);
    const config = join(runDir, 'config.yaml');
    writeFileSync(config, `bind-addr: ${host}:${port}\nauth: none\ncert: false\n`);
    const args = [
      CODE_SERVER_ENTRY,
      '--bind-addr',
      `${host}:${port}`,
      '--auth',
      'none',
      '--config',
      config,
      '--user-data-dir',
      userDataDir,
      '--extensions-dir',
      extensionsDir,
      '--disable-telemetry',
      '--disable-update-check',
      '--disable-getting-started-override',
      '--ignore-last-opened',
      '--reconnection-grace-time',
      '30',
    ];
    if (opts.disableWorkspaceTrust ?? true) args.push('--disable-workspace-trust');
    if (opts.smokeTestDriver) args.push('--vscode-option', 'enable-smoke-test-driver');
    if (opts.extraArgs) args.push(...opts.extraArgs);
    if (opts.folder) args.push(resolve(opts.folder));

    const out = logFile === 'inherit' ? 'inherit' : openSync(logFile, 'a');
    const started = Date.now();
    // detached: the child calls setsid(), so its pid is the group id of everything it starts.
    const child = spawn(NODE24, args, { cwd: runDir, env, detached: true, stdio: ['ignore', out, out] });
    if (typeof out === 'number') closeSync(out);
    const pgid = child.pid;
    let exited = null;
    child.on('exit', (code, signal) => {
      exited = { code, signal };
    });
    liveGroups.add(pgid);
    installExitHook();

    const ready = await waitForHealth(`http://${host}:${port}`, {
      timeoutMs: opts.readyTimeoutMs ?? 60_000,
      isDead: () => !!exited,
    });
    if (ready) {
      const url = `http://${host}:${port}`;
      const server = {
        url,
        host,
        port,
        pid: child.pid,
        pgid,
        runDir,
        userDataDir,
        extensionsDir,
        logFile,
        startMs: Date.now() - started,
        /** vscode-remote:// URI of a path on the server (for extensionDevelopmentPath and the like). */
        remoteUri: (p) => `vscode-remote://${host}:${port}${pathToFileURL(resolve(p)).pathname}`,
        /** The workbench URL that opens folder (default: the one code-server was started with) and payload pairs. */
        workbenchUrl: ({ folder = opts.folder, payload } = {}) => {
          const q = [];
          if (folder) q.push(`folder=${encodeURIComponent(resolve(folder)).replace(/%2F/g, '/')}`);
          if (payload) q.push(`payload=${encodeURIComponent(JSON.stringify(payload))}`);
          return `${url}/${q.length ? '?' + q.join('&') : ''}`;
        },
        logTail: (n = 40) => tail(logFile, n),
        stop: async () => {
          await killGroup(pgid);
          liveGroups.delete(pgid);
        },
      };
      return server;
    }
    await killGroup(pgid, { graceMs: 1000 });
    liveGroups.delete(pgid);
    const log = tail(logFile, 30);
    lastError = new Error(
      `code-server did not answer ${host}:${port}/healthz${exited ? ` (it exited: ${exited.code ?? exited.signal})` : ' in time'}; its log (${logFile}) ends:\n${log}`,
    );
    if (!/EADDRINUSE/.test(log)) break;
  }
  throw lastError;
}

function tail(file, n) {
  if (file === 'inherit') return '';
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

// ---- CLI ----
function parseArgs(argv) {
  const o = { disableWorkspaceTrust: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--run-dir') o.runDir = val();
    else if (a === '--folder') o.folder = val();
    else if (a === '--port') o.port = Number(val());
    else if (a === '--host') o.host = val();
    else if (a === '--extensions-dir') o.extensionsDir = val();
    else if (a === '--user-data-dir') o.userDataDir = val();
    else if (a === '--smoke-test-driver') o.smokeTestDriver = true;
    else if (a === '--no-disable-workspace-trust') o.disableWorkspaceTrust = false;
    else if (a === '--open-walkthroughs') o.settings = { 'workbench.welcomePage.walkthroughs.openOnInstall': true };
    else if (a === '--log-file') o.logFile = val();
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.runDir) throw new Error('--run-dir is required');
  return o;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`server.mjs: ${e.message}`);
    process.exit(2);
  }
  let server;
  onSignals(async () => {
    if (server) await server.stop();
  });
  try {
    server = await startCodeServer(opts);
  } catch (e) {
    console.error(`server.mjs: ${e.message}`);
    process.exit(1);
  }
  console.log(`URL: ${server.workbenchUrl()}`);
  // Stay in the foreground until a signal, or until code-server dies on its own.
  const timer = setInterval(() => {
    if (!groupAlive(server.pgid)) {
      console.error(`server.mjs: code-server exited; its log (${server.logFile}) ends:\n${server.logTail(20)}`);
      process.exit(1);
    }
  }, 1000);
  timer.ref();
}
