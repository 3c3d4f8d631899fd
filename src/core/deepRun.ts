/**
 * What explain and audit share beyond the head: the chosen layers and the curvature method, the
 * training rows with their damping-free curvature statistics (the exact GGN's H₀, or the EK-FAC
 * blocks), the pass over the training rows that the scorers read, and a held-out set's gradient
 * sum, through the rows cache when one is given. A cached run skips the passes that gather them:
 * the rows and the statistics are entries keyed by the data file, the model and the chosen layers
 * (deepRowsKey), each derived entry also by the data's content hash. Per-row gradients are never
 * kept: the scores pass over the rows again (rowPass).
 */
import { InfluenceError } from './errors';
import type { RowsCache } from './cache/store';
import { deepRowsKey, rowsKey, type CacheKeyParts } from './cache/keys';
import { EXACT_GGN_MAX_P, ExactGgn, type DeepCurvature, type DeepCurvatureMethod } from './curvature/ggn';
import { LayerEkfac, type EkfacBlock } from './curvature/layerEkfac';
import type { SourceOptions } from './data/source';
import { readDeepRows, rowPass, type DeepRows, type RowPass, type RunControl } from './deepRows';
import type { HeadMode, HeadReport, PreparedHead } from './headfit';
import { DeepEngine, type PassRows, type TapForward } from './model/deep';
import { ForwardMemo } from './model/forwardMemo';
import type { Engine, ForwardRows } from './model/engine';
import { describeLayers, type LayerSpec } from './model/layers';
import type { CacheUse, RunRows } from './rows';
import type { ScoredRows } from './scores/audit';
import { isTable, readSourceRows } from './sources';
import { STATIONARITY_WARN } from './task/fit';

export interface DeepRequest {
  layers: LayerSpec;
  curvature?: DeepCurvatureMethod;
  head?: HeadMode;
}

/** The curvature asked for, else the exact GGN where it fits: per-layer EK-FAC agrees with it only loosely on trained models (Pearson 0.4–0.8 on the LDS fixtures; README). */
export function deepMethod(P: number, asked?: DeepCurvatureMethod): DeepCurvatureMethod {
  return asked ?? (P <= EXACT_GGN_MAX_P ? 'exact' : 'ekfac');
}

/** The chosen layers, and the curvature: the exact GGN where it fits, else EK-FAC per layer. */
export async function openDeep(
  eng: Engine,
  req: DeepRequest,
): Promise<{ deep: DeepEngine; method: DeepCurvatureMethod }> {
  if (req.head === 'refit')
    throw new InfluenceError(
      'BAD_OPTION',
      '--head refit refits the head alone; it cannot be combined with --layers beyond the head',
    );
  const deep = await DeepEngine.open(eng, req.layers);
  const method = deepMethod(deep.P, req.curvature);
  try {
    if (method === 'exact') ExactGgn.check(deep.P, `the chosen layers (${describeLayers(deep.chosen)})`);
  } catch (e) {
    await deep.release();
    throw e;
  }
  return { deep, method };
}

/** The training side of a run beyond the head. */
export interface DeepTraining {
  rows: DeepRows;
  cache: CacheUse;
  /** The curvature at a damping, from the kept statistics (no pass over the rows). */
  curvature(damping: number, signal?: AbortSignal): Promise<DeepCurvature>;
  /** The training rows again, for the scorers. */
  pass: RowPass;
  /** The training rows a last time: each kept forward batch is let go once read. */
  lastPass: RowPass;
  /** Arrays derived from these rows in the cache (null without a cache or such an entry), and storing some. */
  loadDerived(name: string): Promise<Float64Array[] | null>;
  storeDerived(name: string, data: Float64Array[]): void;
  /** Waits for the cache writes, which go on in the background while the caller computes. */
  written(): Promise<void>;
}

/** The rows of a cached deep entry, with no statistics or gradients yet. */
function deepRowsOf(f: ForwardRows): DeepRows {
  const { n, C, D, bias, h, g, z, loss, labels, lines, offsets, summary } = f;
  return {
    n,
    C,
    D,
    bias,
    h,
    g,
    z,
    loss,
    labels,
    lines,
    offsets,
    table: f.table,
    summary,
    ...(f.locator ? { locator: f.locator } : {}),
    gradSum: null,
    H0: null,
  };
}

/** The EK-FAC blocks as a cache entry's arrays (U_S, U_A, Λ per layer), and back (null if they do not fit these layers). */
function packBlocks(blocks: EkfacBlock[]): Float64Array[] {
  return blocks.flatMap((b) => [b.US, b.UA, b.lam]);
}

function unpackBlocks(deep: DeepEngine, arrays: Float64Array[]): EkfacBlock[] | null {
  if (arrays.length !== 3 * deep.chosen.length) return null;
  const blocks = deep.chosen.map((l, q): EkfacBlock => {
    const { out, Dt, T } = deep.shapes[q];
    const [US, UA, lam] = arrays.slice(3 * q, 3 * q + 3);
    return { out, Dt, T, offset: deep.offsets[q], P: l.parameters, US, UA, lam };
  });
  const fits = blocks.every(
    (b) => b.US.length === b.out * b.out && b.UA.length === b.Dt * b.Dt && b.lam.length === b.out * b.Dt,
  );
  return fits ? blocks : null;
}

/**
 * A cached entry of the rows beyond the head, if it still describes the data: a text table's is
 * checked against its file's stamp (and content hash); another source's (image folder, manifest,
 * Parquet/Arrow: a folder's stamp does not follow its files) against the source's rows as the
 * head's cache reads them now, file by file, by their content hash.
 */
async function loadDeepRows(
  deep: DeepEngine,
  cache: RowsCache,
  key: CacheKeyParts,
  path: string,
  tableOpts: SourceOptions,
  run: RunControl,
): Promise<ForwardRows | null> {
  if (await isTable(path, tableOpts)) return cache.load(key, run.signal);
  const hit = await cache.loadSource(key, run.signal);
  if (!hit) return null;
  const now = await readSourceRows(deep.eng, path, tableOpts, run.images ?? {}, run);
  return now.summary.sha256 === hit.summary.sha256 ? hit : null;
}

function keyFor(deep: DeepEngine, path: string, tableOpts: SourceOptions): CacheKeyParts {
  const base = rowsKey(deep.eng.info.sha256, path, deep.eng.tableOptions(tableOpts));
  return deepRowsKey(
    base,
    deep.chosen.map((l) => l.name),
  );
}

/**
 * The training rows over the chosen layers and the curvature's statistics for `method`: from the
 * cache when it holds both, otherwise by the training pass (and, for EK-FAC, its second pass),
 * whose results are then stored. The training pass's forward batches are kept for the passes after
 * it when they fit `memoBytes` (by default MEMO_BYTES), given the rows the pass is expected to read.
 */
export async function trainDeep(
  deep: DeepEngine,
  method: DeepCurvatureMethod,
  path: string,
  tableOpts: SourceOptions,
  run: RunControl,
  memoBytes?: (rows: number) => number,
): Promise<DeepTraining> {
  const { P } = deep;
  const pending: Promise<unknown>[] = [];
  const written = async () => void (await Promise.all(pending));
  const cache = run.cache ?? null;
  const key = cache ? keyFor(deep, path, tableOpts) : null;
  let rows: DeepRows | null = null;
  let blocks: EkfacBlock[] | null = null;
  let use: CacheUse = cache ? 'miss' : 'off';
  if (cache && key) {
    const hit = await loadDeepRows(deep, cache, key, path, tableOpts, run);
    if (hit) {
      const sha = hit.summary.sha256;
      const stats = await cache.loadDerived(key, method === 'exact' ? 'ggn' : 'ekfac', sha, run.signal);
      if (stats) {
        const r = deepRowsOf(hit);
        if (method === 'exact' && stats.length === 1 && stats[0].length === P * P) r.H0 = stats[0];
        if (method === 'ekfac') blocks = unpackBlocks(deep, stats);
        if (r.H0 || blocks) {
          rows = r;
          use = 'hit';
        }
      }
    }
  }
  // The training pass keeps its forward batches when they fit, for EK-FAC's second pass and the scores.
  const memo = new ForwardMemo(memoBytes);
  const read = (fn: (batch: PassRows, fw: TapForward) => Promise<void>) => deep.pass(path, tableOpts, run, fn);
  if (!rows) {
    const ekfac = method === 'ekfac' ? LayerEkfac.collector(deep) : null;
    rows = await readDeepRows(deep, path, tableOpts, run, { ggn: method === 'exact', onBatch: ekfac?.onBatch, memo });
    if (ekfac && rows.n > 0) blocks = await ekfac.finish((fn) => memo.again(read, fn, run.signal), run.signal);
    if (cache && key && rows.n > 0) {
      const sha = rows.summary.sha256;
      pending.push(cache.store(key, rows));
      pending.push(
        cache.storeDerived(key, method === 'exact' ? 'ggn' : 'ekfac', sha, rows.H0 ? [rows.H0] : packBlocks(blocks!)),
      );
    }
  }
  const r = rows;
  return {
    rows: r,
    cache: use,
    curvature: async (damping, signal) =>
      method === 'exact' ? ExactGgn.create(r.H0!, P, damping, signal) : LayerEkfac.create(blocks!, P, r.n, damping),
    pass: rowPass(deep, r, path, tableOpts, run, memo),
    lastPass: rowPass(deep, r, path, tableOpts, run, memo, true),
    loadDerived: async (name) => (cache && key ? cache.loadDerived(key, name, r.summary.sha256, run.signal) : null),
    storeDerived: (name, data) => {
      if (cache && key) pending.push(cache.storeDerived(key, name, r.summary.sha256, data));
    },
    written,
  };
}

/** A held-out set over the chosen layers: its rows and the sum of its gradients, through the cache. */
export async function heldOutDeep(
  deep: DeepEngine,
  path: string,
  tableOpts: SourceOptions,
  run: RunControl,
): Promise<{ rows: DeepRows; cache: CacheUse; written: () => Promise<void> }> {
  const cache = run.cache ?? null;
  const pending: Promise<unknown>[] = [];
  const written = async () => void (await Promise.all(pending));
  if (!cache)
    return {
      rows: await readDeepRows(deep, path, tableOpts, run, { ggn: false, gradSum: true }),
      cache: 'off',
      written,
    };
  const key = keyFor(deep, path, tableOpts);
  const hit = await loadDeepRows(deep, cache, key, path, tableOpts, run);
  if (hit) {
    const sum = await cache.loadDerived(key, 'gradsum', hit.summary.sha256, run.signal);
    if (sum?.length === 1 && sum[0].length === deep.P) {
      const rows = deepRowsOf(hit);
      rows.gradSum = sum[0];
      return { rows, cache: 'hit', written };
    }
  }
  const rows = await readDeepRows(deep, path, tableOpts, run, { ggn: false, gradSum: true });
  if (rows.n > 0) {
    pending.push(cache.store(key, rows));
    pending.push(cache.storeDerived(key, 'gradsum', rows.summary.sha256, [rows.gradSum!]));
  }
  return { rows, cache: 'miss', written };
}

/** Deep rows as the rows of a run (what audit's result and the CLI read of them). */
export function asRunRows(rows: DeepRows, cache: CacheUse, written: () => Promise<void>): RunRows {
  const { n, C, D, bias, h, g, z, loss, labels, lines, offsets, locator, table, summary } = rows;
  return { n, C, D, bias, h, g, z, loss, labels, lines, offsets, locator, table, summary, cache, store: null, written };
}

/**
 * The damping rule and the head report of a run beyond the head: the rules read the head (its L2
 * is the weight decay of every layer), and the head's stationarity is reported without the hint
 * to --head refit (which refits the head alone).
 */
export function deepHead(prep: PreparedHead<ScoredRows>): {
  damping: number;
  dampingRule: string;
  impliedL2: PreparedHead<ScoredRows>['damping']['implied'];
  head: HeadReport;
} {
  const { damping, rule, implied } = prep.damping;
  return {
    damping,
    dampingRule: rule === '--damping' ? rule : `${rule}; read on the head, applied to every chosen layer`,
    impliedL2: implied,
    head: {
      ...prep.head,
      message: prep.head.warning
        ? `this head is not at the optimum that influence assumes (relative gradient norm ${prep.head.relGradNorm.toPrecision(2)} > ${STATIONARITY_WARN}); the estimates describe a refit model`
        : null,
    },
  };
}
