/**
 * Training rows for influence beyond the head: one pass over the file through the user's graph
 * and the backward graph (model/deep.ts), giving per row what explain reports (labels, lines,
 * logits, loss), the head's view (h and g, for the damping rules and the head report) and the
 * curvature's statistics: the exact GGN's sum, or the per-layer EK-FAC factors; for a held-out
 * set, the sum of its gradients. The scores then pass over the file again (`rowPass`): per-row
 * gradients over the chosen layers are never stored.
 */
import { throwIfAborted, type Progress } from './errors';
import type { RowLocator } from './data/locator';
import type { SourceInfo, SourceOptions } from './data/source';
import type { TableSummary } from './data/table';
import { curvatureDirections } from './curvature/ggn';
import type { DeepEngine, PassRows, TapForward } from './model/deep';
import type { ForwardMemo } from './model/forwardMemo';
import { RowsBuilder } from './model/engine';
import type { ImageRequest } from './sources';
import type { RowsCache } from './cache/store';
import type { HeadRows } from './task/head';
import { lossAndSignal, taskFor } from './task/loss';

export interface DeepRows extends HeadRows {
  z: Float64Array;
  loss: Float64Array;
  lines: Int32Array;
  offsets: Float64Array;
  table: SourceInfo;
  summary: TableSummary;
  /** Where the rows are in a source other than a text table (image files, Parquet/Arrow rows). */
  locator?: RowLocator;
  /** With `gradSum`: Σ_i ∇L_i over the chosen layers (a held-out set's gradient). */
  gradSum: Float64Array | null;
  /** The exact GGN's undamped mean H₀ (P×P), when asked for. */
  H0: Float64Array | null;
}

export interface RunControl {
  signal?: AbortSignal;
  onProgress?: Progress;
  batchSize?: number;
  /** Image sources: the image column and the preprocessing. */
  images?: ImageRequest;
  /** The head's source rows cache, which the passes over a source other than a text table read through. */
  cache?: RowsCache | null;
}

/** g and the loss of k rows of logits, in float64 from the logits (task/loss.ts). */
export function signals(
  deep: DeepEngine,
  z: Float64Array,
  labels: Int32Array,
  k: number,
): { g: Float64Array; loss: Float64Array } {
  const g = new Float64Array(k * deep.K);
  const loss = new Float64Array(k);
  lossAndSignal(taskFor(deep.K), z, labels, k, loss, g);
  return { g, loss };
}

/**
 * The pass: per-row data, and with `ggn` the exact GGN's sum (K directions per row: the columns of
 * a factor of A), with `gradSum` the sum of the rows' gradients. `onBatch` (EK-FAC statistics) sees
 * each batch's forward results; `memo` keeps them for the passes after this one.
 */
export async function readDeepRows(
  deep: DeepEngine,
  path: string,
  tableOpts: SourceOptions,
  run: RunControl,
  opts: {
    ggn: boolean;
    gradSum?: boolean;
    onBatch?: (fw: TapForward, g: Float64Array, labels: Int32Array) => Promise<void>;
    memo?: ForwardMemo;
  },
): Promise<DeepRows> {
  const { P, K } = deep;
  const task = taskFor(K);
  const { D, b } = deep.eng.info.head;
  const acc = new RowsBuilder(K, D);
  let H: Float64Array | null = opts.ggn ? new Float64Array(P * P) : null;
  const sum = opts.gradSum ? new Float64Array(P) : null;
  const { table, summary, locator } = await deep.pass(path, tableOpts, run, async (batch, fw, extent) => {
    const k = batch.count;
    const { g, loss } = signals(deep, fw.z, batch.labels, k);
    if ('rows' in extent) {
      if (batch.start === 0) acc.reserve(extent.rows);
    } else acc.reserveFor(batch, extent.bytes);
    acc.append(batch, { h: fw.h, g, z: fw.z, loss });
    if (H) {
      // The GGN's kernel forms every direction's whole gradient (P values).
      const step = deep.rowsPerRun(K, P);
      for (let s = 0; s < k; s += step) {
        throwIfAborted(run.signal);
        run.onProgress?.('curvature', batch.start + s, batch.start + k);
        const m = Math.min(step, k - s);
        const sig = new Float64Array(m * K * K);
        for (let r = 0; r < m; r++) curvatureDirections(task, g, (s + r) * K, batch.labels[s + r], sig, r * K * K);
        H = await deep.ggn(fw, s, m, sig, H);
      }
    } else run.onProgress?.('curvature', batch.start + k, batch.start + k);
    if (sum) {
      // A chunk's gradients (P values per row), summed and let go.
      const step = deep.rowsPerRun(1, P);
      for (let s = 0; s < k; s += step) {
        throwIfAborted(run.signal);
        const m = Math.min(step, k - s);
        const G = await deep.gradients(fw, s, m, g.subarray(s * K, (s + m) * K), 1);
        for (let r = 0; r < m; r++) for (let q = 0; q < P; q++) sum[q] += G[r * P + q];
      }
    }
    if (opts.onBatch) await opts.onBatch(fw, g, batch.labels);
    opts.memo?.keep(batch, fw, extent);
  });
  opts.memo?.complete();
  const n = summary.rows;
  if (H) for (let q = 0; q < H.length; q++) H[q] /= n;
  return { ...acc.finish(n, b !== null), table, summary, ...(locator ? { locator } : {}), gradSum: sum, H0: H };
}

/** Every training row again, a forward batch at a time with the rows' g (count×K): what the row scorers read. */
export type RowPass = (onBatch: (start: number, fw: TapForward, g: Float64Array) => Promise<void>) => Promise<void>;

/** The row pass over the file the rows were read from, or over the batches `memo` kept of it (with `last`, letting them go). */
export function rowPass(
  deep: DeepEngine,
  rows: DeepRows,
  path: string,
  tableOpts: SourceOptions,
  run: RunControl,
  memo?: ForwardMemo,
  last = false,
): RowPass {
  const K = deep.K;
  return async (onBatch) => {
    const each = async (batch: PassRows, fw: TapForward) => {
      run.onProgress?.('scores', batch.start, rows.n);
      await onBatch(batch.start, fw, rows.g.subarray(batch.start * K, (batch.start + batch.count) * K));
    };
    const read = (fn: typeof each) => deep.pass(path, tableOpts, run, fn);
    await (memo ? memo.again(read, each, run.signal, last) : read(each));
  };
}
