/**
 * The engine's child process: the extension forks it so that a native crash in onnxruntime
 * cannot take the extension host down. Requests arrive by IPC; every reply carries the id.
 */
import { promises as fsp } from 'node:fs';
import {
  audit,
  CancelledError,
  clean,
  defaultCacheDir,
  Engine,
  explain,
  InfluenceError,
  guessLabelColumn,
  parsePreprocess,
  readRecords,
  rowAtLine,
  rowDetail,
  rowFiles,
  RowsCache,
  sourceColumns,
  type ImageRequest,
  type LayerSpec,
  type RowLocator,
  type TableRead,
} from '../core';
import type {
  AuditParams,
  CleanParams,
  CommonParams,
  ExplainParams,
  FromWorker,
  ImageParams,
  Method,
  Requests,
  ToWorker,
} from '../protocol/engine';
import type { LayerChoice, RowFile } from '../protocol/webview';
import {
  allListed,
  auditMarks,
  auditView,
  explainMarks,
  explainView,
  flaggedRows,
  imageShape,
  listedRows,
} from './viewmodel';

const running = new Map<number, AbortController>();

function send(m: FromWorker): void {
  process.send?.(m);
}

/** One cache per directory for the life of this process, keeping the last rows in memory (RowsCache `memory`). */
const caches = new Map<string, RowsCache>();
/** What the caches keep in memory is dropped after this long without a request. */
const FORGET_AFTER_MS = 10 * 60 * 1000;
let forgetTimer: NodeJS.Timeout | null = null;

function cacheAt(dir: string): RowsCache {
  let c = caches.get(dir);
  if (!c) caches.set(dir, (c = new RowsCache(dir, { memory: true })));
  return c;
}

function cacheOf(p: CommonParams): RowsCache | null {
  return p.cacheDir === null ? null : cacheAt(p.cacheDir || defaultCacheDir());
}

/** Features of a few rows, for thumbnails: their records are re-read by byte offset. */
async function rowFeatures(
  path: string,
  table: TableRead,
  offsets: ArrayLike<number>,
  rows: number[],
): Promise<Map<number, number[]>> {
  const out = new Map<number, number[]>();
  for (const [row, f] of await readRecords(path, table, offsets, rows)) out.set(row, Array.from(f));
  return out;
}

/** The settings' image options for the engine (the preprocessing checked as the command line's is). */
function imagesOf(p: ImageParams | undefined): ImageRequest {
  if (!p) return {};
  return {
    ...(p.imageColumn ? { imageColumn: p.imageColumn } : {}),
    ...(p.preprocess && Object.keys(p.preprocess).length
      ? { preprocess: parsePreprocess(p.preprocess, 'the setting influenceLens.preprocess') }
      : {}),
  };
}

/** Listed rows' files and real thumbnails, for rows that are images or rows of Parquet/Arrow files. */
async function filesOf(locator: RowLocator | undefined, rows: number[]): Promise<Map<number, RowFile>> {
  return locator ? rowFiles(locator, rows) : new Map();
}

/** The last model opened, kept while its file is unchanged: a second run skips loading and compiling it. */
let kept: { path: string; size: number; mtimeMs: number; engine: Engine } | null = null;
let keptUsers = 0;

async function openEngine(path: string): Promise<Engine> {
  const st = await fsp.stat(path).catch(() => null);
  if (kept && st && kept.path === path && kept.size === st.size && kept.mtimeMs === st.mtimeMs) {
    keptUsers++;
    return kept.engine;
  }
  const engine = await Engine.open(path);
  if (st && keptUsers === 0) {
    const old = kept;
    kept = { path, size: st.size, mtimeMs: st.mtimeMs, engine };
    keptUsers++;
    await old?.engine.release();
  }
  return engine;
}

async function releaseEngine(engine: Engine): Promise<void> {
  if (kept?.engine === engine) keptUsers--;
  else await engine.release();
}

/** The panel's layer choices as --layers. */
const LAYERS: Record<LayerChoice, LayerSpec> = { head: 'head', last2: 2, all: 'all' };

async function doExplain(p: ExplainParams, signal: AbortSignal, id: number): Promise<Requests['explain']['result']> {
  const engine = await openEngine(p.model);
  try {
    const r = await explain(
      {
        model: p.model,
        train: p.train,
        test: p.test,
        testRow: p.testRow,
        table: p.table,
        images: imagesOf(p.images),
        damping: p.damping,
        head: p.head,
        stabilityTop: p.topK,
        batchSize: p.batchSize,
        layers: LAYERS[p.layers ?? 'head'],
        cache: cacheOf(p),
        signal,
        onProgress: progress(id),
      },
      engine,
    );
    const locator = r.rows.locator;
    const image = locator ? null : imageShape(p.imageShape, engine.info.inputDims, engine.info.F);
    const listed = listedRows(r, p.topK);
    const features = image
      ? await rowFeatures(p.train, r.tables.train, r.rows.offsets, allListed(listed))
      : new Map<number, number[]>();
    const files = await filesOf(locator, [...allListed(listed), ...(r.scores.flip?.rows ?? [])]);
    const t = r.test;
    const testFile =
      t.file === undefined
        ? undefined
        : (
            await rowFiles(
              {
                kind: t.fileRow === undefined ? 'images' : 'shards',
                files: [t.file],
                stamps: [],
                kinds: null,
                file: Int32Array.of(0),
                fileRow: t.fileRow === undefined ? null : Int32Array.of(t.fileRow),
                manifest: null,
              },
              [0],
              112,
            )
          ).get(0);
    const view = explainView(r, listed, { image, features, files, testFile, layers: p.layers });
    const marks = explainMarks(view);
    return {
      view,
      marks,
      log: { damping: r.damping, dampingRule: r.dampingRule, seconds: r.seconds, cache: r.train.cache },
    };
  } finally {
    await releaseEngine(engine);
  }
}

function auditRequest(p: AuditParams, signal: AbortSignal, id: number) {
  return {
    model: p.model,
    train: p.train,
    heldOut: p.heldOut,
    table: p.table,
    images: imagesOf(p.images),
    damping: p.damping,
    head: p.head,
    stabilityTop: p.topK,
    tau: p.tau,
    // The panel does not show the agreement with the last 2 layers (the command line does).
    agreement: false,
    batchSize: p.batchSize,
    cache: cacheOf(p),
    signal,
    onProgress: progress(id),
  };
}

async function doAudit(p: AuditParams, signal: AbortSignal, id: number): Promise<Requests['audit']['result']> {
  const engine = await openEngine(p.model);
  try {
    const a = await audit(auditRequest(p, signal, id), engine);
    const image = a.rows.locator ? null : imageShape(p.imageShape, engine.info.inputDims, engine.info.F);
    const { classes } = a;
    const flagged = flaggedRows(a, p.topK);
    const features = image
      ? await rowFeatures(p.train, a.tables.train, a.rows.offsets, flagged)
      : new Map<number, number[]>();
    const files = await filesOf(a.rows.locator, flagged);
    const view = auditView(a, flagged, { classes, image, trainPath: p.train, features, files });
    const marks = auditMarks(view);
    return {
      view,
      marks,
      log: { damping: a.damping, dampingRule: a.dampingRule, seconds: a.seconds, cache: a.rows.cache },
    };
  } finally {
    await releaseEngine(engine);
  }
}

async function doClean(p: CleanParams, signal: AbortSignal, id: number): Promise<Requests['clean']['result']> {
  const r = await clean({
    ...auditRequest(p, signal, id),
    remove: { kind: 'rows', rows: [...new Set(p.remove)].sort((a, b) => a - b) },
    out: p.out,
  });
  return { kept: r.kept, removed: r.removed, out: r.out, predictedHeldOutLossChange: r.predicted.heldOutLossChange };
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

const handlers: {
  [M in Method]: (p: Requests[M]['params'], signal: AbortSignal, id: number) => Promise<Requests[M]['result']>;
} = {
  explain: doExplain,
  audit: doAudit,
  clean: doClean,
  header: async (p) => {
    const columns = await sourceColumns(p.path);
    return { columns, labelGuess: guessLabelColumn(columns).name };
  },
  rowAt: (p) => rowAtLine(p.path, p.line),
  clearCache: async (p) => ({ removed: await cacheAt(p.cacheDir || defaultCacheDir()).clear() }),
  rowDetail: (p) => rowDetail(p.file, p.fileRow, p.title),
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
          send({
            id: m.id,
            error: {
              code: 'INTERNAL',
              message: err?.message ?? String(e),
              formatted: `internal error: ${err?.stack ?? String(e)}`,
            },
          });
        }
      },
    )
    .finally(() => {
      running.delete(m.id);
      if (running.size === 0)
        forgetTimer = setTimeout(() => caches.forEach((c) => c.forget()), FORGET_AFTER_MS).unref();
    });
});

// The host going away must not leave the engine running.
process.on('disconnect', () => process.exit(0));
