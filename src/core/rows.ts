/**
 * Rows for a run: a data file's forward results, from the cache when it holds them (and stored in
 * it otherwise), with a store for what is derived from them (the curvature). For training rows the
 * explicit Hessian is summed on the side during the forward pass when the policy will want it.
 */
import type { RowsCache } from './cache/store';
import { rowsKey } from './cache/keys';
import { HessianFeeder } from './curvature/feeder';
import type { HessianStats } from './curvature/hessian';
import { explicitHessianFrom, type CurvatureStore, type MethodOptions } from './curvature/policy';
import type { TableOptions } from './data/table';
import type { Engine, ForwardRows, RunOptions } from './model/engine';
import { isTable, readSourceRows, type ImageRequest, type SourceRows } from './sources';

/** 'partial': a source's unchanged files came from the cache, the others were read again. */
export type CacheUse = 'hit' | 'miss' | 'off' | 'partial';

/** What a run reads of a data file. */
export interface RunRows extends ForwardRows {
  cache: CacheUse;
  /** Where the curvature of these rows is kept (null without a cache). */
  store: CurvatureStore | null;
  /** Waits for the cache writes, which go on in the background while the caller computes. */
  written: () => Promise<void>;
  /** For a source other than a text table: what it is, what was read, its notes and preprocessing. */
  source?: Pick<SourceRows, 'kind' | 'read' | 'reused' | 'notes' | 'preprocess'>;
}

/** Training rows, with the explicit Hessian if it was summed during the pass. */
export interface TrainingRows extends RunRows {
  explicitHessian: HessianStats | null;
  /** Seconds waited for the Hessian after the pass. */
  hessianSeconds: number;
}

/** The rows a head is scored on: a refit head has its own g, so neither the curvature kept for the shipped rows nor the Hessian summed during the pass applies. */
export function rowsForHead<R extends TrainingRows>(prep: { rows: R; head: { mode: string } }, rows: R): R {
  return prep.head.mode === 'refit' ? { ...prep.rows, store: null, explicitHessian: null } : rows;
}

export interface ReadOptions extends Omit<RunOptions, 'onRows'> {
  /** Reuse (and store) forward results on disk; null or absent: no cache. */
  cache?: RowsCache | null;
  /** For image sources: the image column and the preprocessing from settings or flags. */
  images?: ImageRequest;
}

/** The forward rows of a file, through the cache when one is given. */
export async function readRows(
  engine: Engine,
  path: string,
  table: TableOptions,
  run: ReadOptions,
  onRows?: RunOptions['onRows'],
): Promise<RunRows> {
  const pending: Promise<unknown>[] = [];
  const written = async () => void (await Promise.all(pending));
  if (!(await isTable(path, table))) return readSource(engine, path, table, run, onRows, pending, written);
  const forward = () =>
    engine.forward(path, table, { signal: run.signal, onProgress: run.onProgress, batchSize: run.batchSize, onRows });
  if (!run.cache) return { ...(await forward()), cache: 'off', store: null, written };
  const cache = run.cache;
  const key = rowsKey(engine.info.sha256, path, engine.tableOptions(table));
  const storeFor = (sha: string): CurvatureStore => ({
    load: (name, signal) => cache.loadDerived(key, name, sha, signal),
    save: async (name, arrays) => void pending.push(cache.storeDerived(key, name, sha, arrays)),
  });
  const hit = await cache.load(key, run.signal);
  if (hit) {
    engine.checkWidth(hit.table);
    return { ...hit, cache: 'hit', store: storeFor(hit.summary.sha256), written };
  }
  const rows = await forward();
  pending.push(cache.store(key, rows));
  return { ...rows, cache: 'miss', store: storeFor(rows.summary.sha256), written };
}

/**
 * readRows for training rows. When the fast path's explicit Hessian will be needed for them
 * (explicitHessianFrom), it is summed in a worker thread during the pass, on the core that the
 * parse leaves idle.
 */
export async function readTrainingRows(
  engine: Engine,
  path: string,
  table: TableOptions,
  run: ReadOptions,
  methods: MethodOptions,
): Promise<TrainingRows> {
  const { C, D, b } = engine.info.head;
  const shape = { C, D, bias: b !== null };
  const startAt = explicitHessianFrom(shape, methods);
  const feeder = startAt === null ? null : new HessianFeeder(shape, startAt);
  try {
    const rows = await readRows(engine, path, table, run, feeder?.onRows);
    const t0 = performance.now();
    const explicitHessian = feeder ? await feeder.finish(rows, run.signal, run.onProgress) : null;
    return { ...rows, explicitHessian, hessianSeconds: (performance.now() - t0) / 1000 };
  } finally {
    await feeder?.close();
  }
}

/** readRows for a source other than a text table (sources/): per-file reuse through the cache. */
async function readSource(
  engine: Engine,
  path: string,
  table: TableOptions,
  run: ReadOptions,
  onRows: RunOptions['onRows'],
  pending: Promise<unknown>[],
  written: () => Promise<void>,
): Promise<RunRows> {
  const cache = run.cache ?? null;
  const src = await readSourceRows(engine, path, table, run.images ?? {}, { ...run, cache });
  const { kind, read, reused, notes, preprocess, key, changed, ...rows } = src;
  if (onRows) {
    // The Hessian's worker takes the rows in order, as a forward pass would have given them.
    const { C, D } = rows;
    for (let a = 0; a < rows.n; a += 4096) {
      const b = Math.min(rows.n, a + 4096);
      onRows(rows.h.slice(a * D, b * D) as Float32Array, rows.g.slice(a * C, b * C), rows.labels.slice(a, b), b - a);
    }
  }
  const source = { kind, read, reused, notes, preprocess };
  if (!cache) return { ...rows, cache: 'off', store: null, written, source };
  if (changed) pending.push(cache.store(key, rows));
  const store: CurvatureStore = {
    load: (name, signal) => cache.loadDerived(key, name, rows.summary.sha256, signal),
    save: async (name, arrays) => void pending.push(cache.storeDerived(key, name, rows.summary.sha256, arrays)),
  };
  return { ...rows, cache: read === 0 ? 'hit' : reused === 0 ? 'miss' : 'partial', store, written, source };
}
