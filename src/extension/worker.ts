/**
 * The engine's child process: the extension forks it so that a native crash in onnxruntime
 * cannot take the extension host down. Requests arrive by IPC; every reply carries the id.
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import { audit } from '../core/audit';
import { defaultCacheDir, FeatureCache } from '../core/cache';
import { checkOutPath, writeWithout } from '../core/clean';
import { CancelledError, InfluenceError } from '../core/errors';
import { explain } from '../core/explain';
import { Engine } from '../core/forward';
import { heldOutChangeIfRemoved } from '../core/scores/ranking';
import { readAll, readHeader, TableReader } from '../core/table';
import type { AuditParams, CleanParams, CommonParams, ExplainParams, FromWorker, Method, Requests, TableChoice, ToWorker } from '../protocol/engine';
import { allListed, auditMarks, auditView, explainMarks, explainView, flaggedRows, imageShape, listedRows } from './viewmodel';

const running = new Map<number, AbortController>();

function send(m: FromWorker): void {
  process.send?.(m);
}

/** One cache per directory for the life of this process, keeping the last rows in memory (FeatureCache `memory`). */
const caches = new Map<string, FeatureCache>();
/** What the caches keep in memory is dropped after this long without a request. */
const FORGET_AFTER_MS = 10 * 60 * 1000;
let forgetTimer: NodeJS.Timeout | null = null;

function cacheAt(dir: string): FeatureCache {
  let c = caches.get(dir);
  if (!c) caches.set(dir, (c = new FeatureCache(dir, { memory: true })));
  return c;
}

function cacheOf(p: CommonParams): FeatureCache | null {
  return p.cacheDir === null ? null : cacheAt(p.cacheDir || defaultCacheDir());
}

/** Features of a few rows, for thumbnails: their records are re-read by byte offset. */
async function rowFeatures(path: string, table: TableChoice, offsets: ArrayLike<number>, rows: number[]): Promise<Map<number, number[]>> {
  const out = new Map<number, number[]>();
  const wanted = [...new Set(rows)].sort((a, b) => a - b);
  if (wanted.length === 0) return out;
  const fh = await fsp.open(path, 'r');
  const tmp = join(await fsp.mkdtemp(join(tmpdir(), 'influence-lens-')), `rows${extname(path)}`);
  try {
    const read = async (a: number, b: number) => {
      const buf = Buffer.alloc(b - a);
      await fh.read(buf, 0, b - a, a);
      return buf;
    };
    const parts = [await read(0, offsets[0])];
    for (const i of wanted) {
      let rec = await read(offsets[i], offsets[i + 1]);
      if (rec.length && rec[rec.length - 1] !== 0x0a && rec[rec.length - 1] !== 0x0d) rec = Buffer.concat([rec, Buffer.from('\n')]);
      parts.push(rec);
    }
    await fsp.writeFile(tmp, Buffer.concat(parts));
    const r = await readAll(tmp, { ...table, requireLabel: false });
    const F = r.info.featureCount;
    wanted.forEach((row, k) => out.set(row, Array.from(r.features.subarray(k * F, (k + 1) * F))));
  } finally {
    await fh.close();
    await fsp.rm(join(tmp, '..'), { recursive: true, force: true });
  }
  return out;
}

async function doExplain(p: ExplainParams, signal: AbortSignal, id: number): Promise<Requests['explain']['result']> {
  const engine = await Engine.open(p.model);
  try {
    const r = await explain(
      { model: p.model, train: p.train, test: p.test, testRow: p.testRow, table: p.table, damping: p.damping, batchSize: p.batchSize, cache: cacheOf(p), signal, onProgress: progress(id) },
      engine,
    );
    const image = imageShape(p.imageShape, engine.info.inputDims, engine.info.F);
    const listed = listedRows(r, p.topK);
    const features = image ? await rowFeatures(p.train, p.table, r.rows.offsets, allListed(listed)) : new Map<number, number[]>();
    const header = await readHeader(p.test);
    const labelColumn = p.table.labelColumn ?? 'label';
    const featureNames = p.table.features ?? header.filter((c) => c !== labelColumn);
    const view = explainView(r, listed, { image, featureNames, features });
    const marks = explainMarks(view);
    return { view, marks, log: { damping: r.damping, dampingRule: r.dampingRule, seconds: r.seconds, cache: r.train.cache } };
  } finally {
    await engine.release();
  }
}

async function runAudit(engine: Engine, p: AuditParams, signal: AbortSignal, id: number) {
  return audit(engine, { train: p.train, heldOut: p.heldOut, table: p.table, damping: p.damping, tau: p.tau, cache: cacheOf(p), signal, onProgress: progress(id) });
}

async function doAudit(p: AuditParams, signal: AbortSignal, id: number): Promise<Requests['audit']['result']> {
  const engine = await Engine.open(p.model);
  try {
    const a = await runAudit(engine, p, signal, id);
    const image = imageShape(p.imageShape, engine.info.inputDims, engine.info.F);
    const classes = p.table.classes ?? engine.info.classes;
    const flagged = flaggedRows(a, p.topK);
    const features = image ? await rowFeatures(p.train, p.table, a.rows.offsets, flagged) : new Map<number, number[]>();
    const view = auditView(a, flagged, { classes, image, trainPath: p.train, features });
    const marks = auditMarks(view);
    return { view, marks, log: { damping: a.damping, dampingRule: a.dampingRule, seconds: a.seconds, cache: a.rows.cache } };
  } finally {
    await engine.release();
  }
}

async function doClean(p: CleanParams, signal: AbortSignal, id: number): Promise<Requests['clean']['result']> {
  await checkOutPath(p.out, [p.train, p.model, ...(p.heldOut ? [p.heldOut.path] : [])]);
  const engine = await Engine.open(p.model);
  try {
    const a = await runAudit(engine, p, signal, id);
    const bad = p.remove.filter((r) => r >= a.rows.n);
    if (bad.length) throw new InfluenceError('ROW_OUT_OF_RANGE', `rows ${bad.join(', ')} do not exist in ${p.train}`, { file: p.train });
    const predicted = a.scores.heldOutInfluence && a.heldOut ? heldOutChangeIfRemoved(a.scores.heldOutInfluence, p.remove, a.rows.n, a.heldOut.rows.n) : 0;
    const kept = await writeWithout(p.train, a.rows.offsets, p.remove, p.out, a.rows.summary, signal);
    return { kept, removed: p.remove, out: p.out, predictedHeldOutLossChange: predicted };
  } finally {
    await engine.release();
  }
}

async function doRowAt(p: { path: string; line: number; table: TableChoice }): Promise<Requests['rowAt']['result']> {
  const reader = await TableReader.open(p.path, { ...p.table, requireLabel: false });
  let prev: { row: number; line: number } | null = null;
  for await (const b of reader.batches()) {
    for (let r = 0; r < b.count; r++) {
      if (b.lines[r] > p.line) return prev;
      prev = { row: b.start + r, line: b.lines[r] };
    }
  }
  return prev;
}

function progress(id: number) {
  let last = 0;
  return (stage: string, done: number, total: number) => {
    const now = Date.now();
    if (now - last < 100 && done < total) return;
    last = now;
    send({ id, progress: { stage, done, total } });
  };
}

const handlers: { [M in Method]: (p: Requests[M]['params'], signal: AbortSignal, id: number) => Promise<Requests[M]['result']> } = {
  explain: doExplain,
  audit: doAudit,
  clean: doClean,
  header: async (p) => ({ columns: await readHeader(p.path) }),
  rowAt: doRowAt,
  clearCache: async (p) => ({ removed: await cacheAt(p.cacheDir || defaultCacheDir()).clear() }),
};

process.on('message', (m: ToWorker) => {
  if ('cancel' in m) {
    running.get(m.cancel)?.abort();
    return;
  }
  const ac = new AbortController();
  running.set(m.id, ac);
  if (forgetTimer) clearTimeout(forgetTimer);
  const handler = handlers[m.method] as (p: unknown, s: AbortSignal, id: number) => Promise<unknown>;
  handler(m.params, ac.signal, m.id)
    .then(
      (result) => send({ id: m.id, result }),
      (e: unknown) => {
        if (e instanceof InfluenceError) {
          send({ id: m.id, error: { code: e.code, message: e.message, formatted: e.format(), ...e.place } });
        } else if (e instanceof CancelledError || ac.signal.aborted) {
          send({ id: m.id, error: { code: 'CANCELLED', message: 'cancelled', formatted: 'cancelled' } });
        } else {
          const err = e as Error;
          send({ id: m.id, error: { code: 'INTERNAL', message: err?.message ?? String(e), formatted: `internal error: ${err?.stack ?? String(e)}` } });
        }
      },
    )
    .finally(() => {
      running.delete(m.id);
      if (running.size === 0) forgetTimer = setTimeout(() => caches.forEach((c) => c.forget()), FORGET_AFTER_MS).unref();
    });
});

// The host going away must not leave the engine running.
process.on('disconnect', () => process.exit(0));
