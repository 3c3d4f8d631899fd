/** The extension's pure parts: settings, view models, error fixes, and the engine child process. */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { audit } from '../../src/core/audit';
import { explain } from '../../src/core/explain';
import { Engine } from '../../src/core/model/engine';
import { COMMAND } from '../../src/extension/commandIds';
import { EngineClient, EngineError } from '../../src/extension/engineClient';
import type { ExplainParams } from '../../src/protocol/engine';
import { fixFor } from '../../src/extension/fixes';
import { DEFAULTS, readSettings } from '../../src/extension/settings';
import { describeAgreement } from '../../src/protocol/words';
import {
  auditMarks,
  auditView,
  explainMarks,
  explainView,
  flaggedRows,
  histogram,
  imageShape,
  listedRows,
} from '../../src/extension/viewmodel';

const root = resolve(__dirname, '../..');
const sample = (f: string) => join(root, 'samples/digits', f);

describe('command ids', () => {
  const pkgText = readFileSync(join(root, 'package.json'), 'utf8');
  const contributes = JSON.parse(pkgText).contributes as {
    commands: { command: string }[];
    menus: Record<string, { command: string }[]>;
    keybindings: { command: string }[];
  };
  const ids = Object.values(COMMAND) as string[];
  const sorted = (xs: Iterable<string>) => [...xs].sort();

  it('package.json declares exactly the ids of commandIds.ts, each once', () => {
    const declared = contributes.commands.map((c) => c.command);
    assert.deepEqual(sorted(declared), sorted(new Set(declared)), 'a command is declared twice');
    assert.deepEqual(sorted(declared), sorted(ids));
    assert.equal(new Set(ids).size, ids.length, 'two names for one id');
  });

  it('menus, keybindings and command links in package.json name only those ids', () => {
    const used = [
      ...Object.values(contributes.menus).flatMap((items) => items.map((m) => m.command)),
      ...contributes.keybindings.map((k) => k.command),
      ...[...pkgText.matchAll(/(?:command:|onCommand:)([\w.]+)/g)].map((m) => m[1]),
    ];
    assert.ok(used.length > 20);
    for (const id of used) assert.ok(ids.includes(id), `${id} is not in src/extension/commandIds.ts`);
  });
});

describe('settings', () => {
  it('gives the defaults when nothing is set', () => {
    const { settings, problems } = readSettings(() => undefined);
    assert.deepEqual(settings, DEFAULTS);
    assert.deepEqual(problems, []);
  });
  it('reads valid values', () => {
    const values: Record<string, unknown> = {
      damping: '0.01',
      head: 'refit',
      topK: 25,
      imageShape: '28x28',
      'cache.directory': '/tmp/c',
      batchSize: 512,
      memorizationTau: 0.5,
    };
    const { settings, problems } = readSettings((k) => values[k]);
    assert.deepEqual(settings, {
      damping: 0.01,
      head: 'refit',
      topK: 25,
      imageShape: '28x28',
      cacheDirectory: '/tmp/c',
      batchSize: 512,
      memorizationTau: 0.5,
    });
    assert.deepEqual(problems, []);
    assert.equal(readSettings((k) => (k === 'damping' ? 'implied' : undefined)).settings.damping, 'implied');
  });
  it('replaces invalid values by defaults and says which', () => {
    const values: Record<string, unknown> = {
      damping: -1,
      head: 'best',
      topK: 0,
      imageShape: 'square',
      batchSize: 1.5,
      memorizationTau: -2,
    };
    const { settings, problems } = readSettings((k) => values[k]);
    assert.deepEqual(settings, DEFAULTS);
    assert.equal(problems.length, 6);
    assert.match(problems.join('\n'), /influenceLens\.damping: -1 is not a positive number/);
    assert.match(problems.join('\n'), /influenceLens\.imageShape: "square"/);
  });
  it('turns the cache off', () => {
    assert.equal(readSettings((k) => (k === 'cache.enabled' ? false : undefined)).settings.cacheDirectory, null);
  });
});

describe('view models', () => {
  it('finds image shapes from the model input, a square feature count, or the setting', () => {
    assert.deepEqual(imageShape('auto', [1, 28, 28], 784), { height: 28, width: 28 });
    assert.deepEqual(imageShape('auto', [8, 8], 64), { height: 8, width: 8 });
    assert.deepEqual(imageShape('auto', [64], 64), { height: 8, width: 8 });
    assert.equal(imageShape('auto', [49], 49), null, 'below 64 features a square is not assumed to be an image');
    assert.equal(imageShape('auto', [10], 10), null);
    assert.equal(imageShape('none', [1, 28, 28], 784), null);
    assert.deepEqual(imageShape('4x16', [64], 64), { height: 4, width: 16 });
    assert.equal(imageShape('5x5', [64], 64), null, 'a shape that does not fit F is ignored');
  });

  it('bins every value once', () => {
    const v = Float64Array.from([-2, -1, 0, 0, 1, 5]);
    const h = histogram(v, 4);
    assert.equal(h.edges.length, 5);
    assert.equal(h.edges[0], -2);
    assert.equal(h.edges[4], 5);
    assert.equal(
      h.counts.reduce((a, b) => a + b, 0),
      6,
    );
    assert.deepEqual(h.counts, [2, 3, 0, 1]); // bins of width 1.75 from -2
  });

  it('lists the top rows of a real explanation, with the flip set and histogram marks', async () => {
    const r = await explain({
      model: sample('model.onnx'),
      train: sample('train.csv'),
      test: sample('test.csv'),
      testRow: 146,
    });
    const listed = listedRows(r, 5);
    const v = explainView(r, listed, { image: { height: 8, width: 8 }, features: new Map([[0, [1, 2]]]) });
    assert.equal(v.byInfluence.helpful.length, 5);
    assert.equal(v.byInfluence.harmful.length, 5);
    const h = v.byInfluence.helpful.map((x) => x.lossChangeIfRemoved);
    assert.deepEqual(
      h,
      [...h].sort((a, b) => b - a),
    );
    assert.ok(h.every((x) => x > 0));
    assert.ok(v.byInfluence.harmful.every((x) => x.lossChangeIfRemoved < 0));
    const rel = v.byRelative.helpful.map((x) => x.relativeInfluence);
    assert.deepEqual(
      rel,
      [...rel].sort((a, b) => a - b),
      'relative ranking: most negative relative influence first',
    );
    assert.equal(v.histogram.marked.length, 10);
    assert.equal(
      v.histogram.counts.reduce((a, b) => a + b, 0),
      1000,
    );
    assert.deepEqual(
      v.flip?.rows.map((x) => x.row),
      r.scores.flip?.rows,
    );
    assert.equal(v.test.row, 146);
    assert.deepEqual(
      v.byInfluence.helpful.map((x) => x.row),
      listed.byInfluence.helpful,
    );
    // The sample's MLP has 3 layers: the head's result, compared with the last 2 layers'.
    assert.deepEqual(
      { ...v.layers, used: v.layers.used.length },
      { choice: 'head', available: 3, used: 1, curvature: null, headOnly: [] },
    );
    const a = r.agreement!;
    assert.ok(v.agreement);
    assert.deepEqual(
      [v.agreement.spearman, v.agreement.helpful, v.agreement.harmful, v.agreement.faithful],
      [
        a.spearman,
        { overlap: a.helpful.overlap, of: a.helpful.of },
        { overlap: a.harmful.overlap, of: a.harmful.of },
        a.faithful,
      ],
    );
    assert.equal(v.agreement.message, describeAgreement(a, true));
    assert.match(v.agreement.head, /^the head '\/head\/Gemm'$/);
    assert.match(v.agreement.deeper, /^the last 2 layers \('\/head\/Gemm', '.+'; exact Gauss–Newton\)$/);
    const marks = explainMarks(v);
    assert.deepEqual(
      marks.map((m) => [m.row, m.kind]),
      [
        ...v.byInfluence.helpful.map((x) => [x.row, 'helpful']),
        ...v.byInfluence.harmful.map((x) => [x.row, 'harmful']),
      ],
    );
    assert.ok(marks.every((m) => /first-order estimate/.test(m.message)));
  });

  it('puts memorized rows first among the flagged rows', async () => {
    const engine = await Engine.open(sample('model.onnx'));
    try {
      const a = await audit(
        {
          model: sample('model.onnx'),
          train: sample('train.csv'),
          heldOut: { path: sample('validation.csv'), source: 'validation' },
          damping: 'auto',
          tau: 0,
        },
        engine,
      );
      const rows = flaggedRows(a, 3);
      const mem = Array.from(a.scores.memorized!).reduce((x, y) => x + y, 0);
      assert.equal(rows.length, Math.max(3, mem));
      const flags = rows.map((i) => a.scores.memorized![i]);
      assert.deepEqual(
        flags,
        [...flags].sort((x, y) => y - x),
      );
      const v = auditView(a, rows, { classes: null, image: null, trainPath: 'train.csv', features: new Map() });
      assert.equal(v.memorizedCount, mem);
      assert.ok(v.flagged.every((f) => Array.isArray(f.reasons)));
      assert.equal(v.heldOut?.rows, 400);
      const marks = auditMarks(v);
      assert.deepEqual(
        marks.map((m) => [m.row, m.kind]),
        v.flagged.map((f) => [f.row, f.memorized ? 'memorized' : 'suspicious']),
      );
      assert.ok(
        marks.every((m) =>
          m.message.startsWith(`${m.kind === 'memorized' ? 'Memorized' : 'Suspicious'} row ${m.row} `),
        ),
      );
    } finally {
      await engine.release();
    }
  });

  it('offers a fix for each kind of input error', () => {
    assert.equal(fixFor('LABEL_COLUMN_MISSING')?.command, COMMAND.chooseLabelColumn);
    assert.equal(fixFor('NO_LINEAR_HEAD')?.command, COMMAND.chooseModel);
    assert.equal(fixFor('FEATURE_COUNT_MISMATCH')?.command, COMMAND.chooseModel);
    assert.equal(fixFor('ENGINE_CRASHED')?.command, COMMAND.showLog);
    assert.equal(fixFor('CSV_RAGGED_ROW'), null);
  });
});

describe('engine child process', () => {
  const worker = join(root, 'dist/worker.js');
  const dir = mkdtempSync(join(tmpdir(), 'il-worker-'));
  for (const f of ['model.onnx', 'train.csv', 'test.csv']) copyFileSync(sample(f), join(dir, f));
  const params: ExplainParams = {
    model: join(dir, 'model.onnx'),
    train: join(dir, 'train.csv'),
    test: join(dir, 'test.csv'),
    testRow: 3,
    table: {},
    damping: 'auto',
    head: 'shipped',
    topK: 4,
    imageShape: 'auto',
    cacheDir: join(dir, 'cache'),
    batchSize: 256,
  };
  let client: EngineClient;
  const log: string[] = [];
  before(() => {
    client = new EngineClient(worker, (l) => log.push(l));
  });
  after(() => client.dispose());

  it('explains in the child process, with thumbnails of the listed rows', async () => {
    const progress: string[] = [];
    const r = await client.request('explain', params, { onProgress: (stage) => progress.push(stage) });
    assert.equal(r.view.byInfluence.helpful.length, 4);
    assert.equal(r.view.image?.width, 8);
    assert.equal(r.view.byInfluence.helpful[0].features?.length, 64);
    assert.equal(r.marks.length, 8);
    assert.equal(r.log.cache, 'miss');
    assert.ok(progress.length > 0);
    const again = await client.request('explain', { ...params, testRow: 4 });
    assert.equal(again.log.cache, 'hit');
  });

  it('finds the row under a line', async () => {
    assert.deepEqual(await client.request('rowAt', { path: params.test, line: 5, table: {} }), { row: 3, line: 5 });
    assert.equal(await client.request('rowAt', { path: params.test, line: 1, table: {} }), null);
  });

  it('reports bad input with its code', async () => {
    await assert.rejects(client.request('explain', { ...params, table: { labelColumn: 'nope' } }), (e: EngineError) => {
      assert.equal(e.code, 'LABEL_COLUMN_MISSING');
      assert.match(e.message, /nope/);
      return true;
    });
  });

  it('stops on cancel', async () => {
    const ac = new AbortController();
    const t0 = Date.now();
    const p = client.request('audit', { ...params, heldOut: null, tau: 0, cacheDir: null }, { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(p, (e: EngineError) => e.code === 'CANCELLED');
    assert.ok(Date.now() - t0 < 5000);
  });

  it('restarts after the process dies and says so', async () => {
    await client.request('header', { path: params.train });
    const pid = client.pid;
    const p = client.request('audit', { ...params, heldOut: null, tau: 0, cacheDir: null });
    client.kill();
    await assert.rejects(p, (e: EngineError) => e.code === 'ENGINE_CRASHED');
    const r = await client.request('header', { path: params.train });
    assert.equal(r.columns.length, 65);
    assert.notEqual(client.pid, pid);
    assert.ok(log.some((l) => /killed by SIGKILL/.test(l)));
  });
});

describe('engine child process that crashes natively', () => {
  // A stand-in for dist/worker.js whose "model" crashes the process the way onnxruntime can:
  // `header` of a path answers; 'abort' sends progress and then aborts (SIGABRT) mid-request;
  // 'segv' dies of SIGSEGV; 'disconnect' closes the IPC channel first and aborts a little later.
  const dir = mkdtempSync(join(tmpdir(), 'il-stub-'));
  const stub = join(dir, 'stub-worker.js');
  writeFileSync(
    stub,
    `process.on('message', (m) => {
      if (m.cancel !== undefined) return;
      const path = m.params.path;
      if (path === 'abort') {
        process.send({ id: m.id, progress: { stage: 'forward', done: 1, total: 2 } });
        setTimeout(() => process.abort(), 20);
      } else if (path === 'segv') {
        process.kill(process.pid, 'SIGSEGV');
      } else if (path === 'disconnect') {
        process.disconnect();
        setTimeout(() => process.abort(), 300);
      } else {
        process.send({ id: m.id, result: { columns: [path, String(process.pid)] } });
      }
    });`,
  );
  const log: string[] = [];
  let client: EngineClient;
  before(() => {
    client = new EngineClient(stub, (l) => log.push(l));
  });
  after(() => {
    client.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('rejects the request with a clear ENGINE_CRASHED, restarts for the next one, and the host lives on', async () => {
    const first = await client.request('header', { path: 'a.csv' });
    const pid = Number(first.columns[1]);
    assert.equal(pid, client.pid);
    const stages: string[] = [];
    await assert.rejects(
      client.request('header', { path: 'abort' }, { onProgress: (s) => stages.push(s) }),
      (e: EngineError) => {
        assert.ok(e instanceof EngineError);
        assert.equal(e.code, 'ENGINE_CRASHED');
        assert.match(e.message, /engine process was killed by SIGABRT/);
        assert.match(e.message, /native crash/);
        assert.match(e.message, /restarts on the next run/);
        return true;
      },
    );
    assert.deepEqual(stages, ['forward'], 'the request was under way when the engine died');
    assert.ok(
      log.some((l) => /killed by SIGABRT; it restarts on the next request/.test(l)),
      log.join('\n'),
    );
    // The next request starts a fresh engine process, and the host process is still here.
    const again = await client.request('header', { path: 'b.csv' });
    assert.equal(again.columns[0], 'b.csv');
    assert.notEqual(Number(again.columns[1]), pid);
    assert.equal(process.exitCode, undefined);
    assert.equal(fixFor('ENGINE_CRASHED')?.command, 'influenceLens.showLog');
  });

  it('fails every request in flight when the engine dies, not just the one that killed it', async () => {
    const slow = client.request('header', { path: 'segv' });
    const other = client.request('header', { path: 'c.csv' });
    await assert.rejects(slow, (e: EngineError) => e.code === 'ENGINE_CRASHED' && /SIGSEGV/.test(e.message));
    // The other request was sent to the same process: it either answered first or failed with it.
    await other.then(
      (r) => assert.equal(r.columns[0], 'c.csv'),
      (e: EngineError) => assert.equal(e.code, 'ENGINE_CRASHED'),
    );
    assert.equal((await client.request('header', { path: 'd.csv' })).columns[0], 'd.csv');
  });

  it('survives a request sent while the dying engine has already closed its channel', async () => {
    const dying = client.request('header', { path: 'disconnect' });
    await new Promise((r) => setTimeout(r, 100));
    // The channel is closed but the process has not exited yet: sending must not throw in the host.
    const late = client.request('header', { path: 'e.csv' });
    await assert.rejects(dying, (e: EngineError) => e.code === 'ENGINE_CRASHED');
    await assert.rejects(late, (e: EngineError) => e.code === 'ENGINE_CRASHED');
    assert.equal((await client.request('header', { path: 'f.csv' })).columns[0], 'f.csv');
  });
});
