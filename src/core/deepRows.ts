/**
 * Training rows for influence beyond the head: one pass over the file through the user's graph
 * and the backward graph (model/deep.ts), giving per row what explain reports (labels, lines,
 * logits, loss), the head's view (h and g, for the damping rules and the head report), the loss
 * gradients over the chosen layers (kept while they fit in memory) and the curvature's statistics:
 * the exact GGN's sum, or the per-layer EK-FAC factors.
 */
import { throwIfAborted, type Progress } from './errors';
import type { RowLocator } from './data/locator';
import type { SourceInfo } from './data/source';
import type { TableOptions, TableSummary } from './data/table';
import { curvatureDirections } from './curvature/ggn';
import type { DeepEngine, DeepForward } from './model/deep';
import type { HeadRows } from './task/head';
import { lossAndSignal, taskFor } from './task/loss';

/** Gradients are kept in memory up to this many float64 values (256 MB); beyond, a second pass recomputes them. */
export const KEEP_GRADIENTS = 1 << 25;
/** Float64 values of one backward run's gradients (rows × directions × P). */
const RUN_VALUES = 1 << 22;

export interface DeepRows extends HeadRows {
  z: Float64Array;
  loss: Float64Array;
  lines: Int32Array;
  offsets: Float64Array;
  table: SourceInfo;
  summary: TableSummary;
  /** Where the rows are in a source other than a text table (image files, Parquet/Arrow rows). */
  locator?: RowLocator;
  /** n×P loss gradients over the chosen layers, or null when they did not fit (rowGradients recomputes them). */
  grads: Float64Array | null;
  /** Σ_i ∇L_i over the chosen layers (a held-out set's gradient). */
  gradSum: Float64Array;
  /** The exact GGN's undamped mean H₀ (P×P), when asked for. */
  H0: Float64Array | null;
}

export interface RunControl {
  signal?: AbortSignal;
  onProgress?: Progress;
  batchSize?: number;
}

/** Rows per backward run for R directions. */
export function runRows(deep: DeepEngine, R: number): number {
  return Math.max(1, Math.floor(RUN_VALUES / (R * deep.P)));
}

/** Growable per-row arrays. */
class Collector {
  readonly parts: {
    h: Float32Array;
    g: Float64Array;
    z: Float64Array;
    loss: Float64Array;
    labels: Int32Array;
    lines: Int32Array;
    offsets: Float64Array;
  }[] = [];
  add(part: Collector['parts'][number]): void {
    this.parts.push(part);
  }
  join<K extends keyof Collector['parts'][number]>(
    key: K,
    make: (n: number) => Collector['parts'][number][K],
  ): Collector['parts'][number][K] {
    const n = this.parts.reduce((a, p) => a + p[key].length, 0);
    const out = make(n);
    let o = 0;
    for (const p of this.parts) {
      (out as Float64Array).set(p[key] as Float64Array, o);
      o += p[key].length;
    }
    return out;
  }
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
 * The pass: per-row data and gradients, and with `ggn` the exact GGN's sum (K + 1 directions per row:
 * g, then the columns of a factor of A). `onBatch` (EK-FAC statistics) sees each batch's forward results.
 * With `keep: false` (held-out rows) only the gradients' sum is kept.
 */
export async function readDeepRows(
  deep: DeepEngine,
  path: string,
  tableOpts: TableOptions,
  run: RunControl,
  opts: {
    ggn: boolean;
    keep?: boolean;
    onBatch?: (fw: DeepForward, g: Float64Array, labels: Int32Array) => Promise<void>;
  },
): Promise<DeepRows> {
  const { P, K } = deep;
  const task = taskFor(K);
  const { D, b } = deep.eng.info.head;
  const col = new Collector();
  const gradParts: Float64Array[] = [];
  let keep = opts.keep !== false;
  let kept = 0;
  const sum = new Float64Array(P);
  let H: Float64Array | null = opts.ggn ? new Float64Array(P * P) : null;
  const { table, summary, locator } = await deep.pass(path, tableOpts, run, async (batch, fw) => {
    const k = batch.count;
    const { g, loss } = signals(deep, fw.z, batch.labels, k);
    col.add({
      h: fw.h,
      g,
      z: fw.z,
      loss,
      labels: batch.labels.slice(0, k),
      lines: batch.lines.slice(0, k),
      offsets: batch.offsets.slice(0, k + 1),
    });
    const R = opts.ggn ? K + 1 : 1;
    const step = runRows(deep, R);
    for (let s = 0; s < k; s += step) {
      throwIfAborted(run.signal);
      run.onProgress?.(opts.ggn ? 'curvature' : 'gradients', batch.start + s, batch.start + k);
      const m = Math.min(step, k - s);
      let grads: Float64Array;
      if (H) {
        const sig = new Float64Array(m * R * K);
        for (let r = 0; r < m; r++) {
          sig.set(g.subarray((s + r) * K, (s + r + 1) * K), r * R * K);
          curvatureDirections(task, g, (s + r) * K, batch.labels[s + r], sig, r * R * K + K);
        }
        const out = await deep.ggn(fw, s, m, sig, H);
        grads = out.grad;
        H = out.H;
      } else grads = await deep.gradients(fw, s, m, g.subarray(s * K, (s + m) * K), 1);
      for (let q = 0; q < grads.length; q++) sum[q % P] += grads[q];
      if (keep && kept + grads.length <= KEEP_GRADIENTS) {
        gradParts.push(grads);
        kept += grads.length;
      } else {
        keep = false;
        gradParts.length = 0;
      }
    }
    if (opts.onBatch) await opts.onBatch(fw, g, batch.labels);
  });
  const n = summary.rows;
  let grads: Float64Array | null = null;
  if (keep) {
    grads = new Float64Array(n * P);
    let o = 0;
    for (const p of gradParts) {
      grads.set(p, o);
      o += p.length;
    }
  }
  const h = col.join('h', (m) => new Float32Array(m));
  const offsets = new Float64Array(n + 1);
  let o = 0;
  // Each batch's offsets hold count + 1 entries; the next batch starts where it ended.
  for (const part of col.parts) {
    offsets.set(part.offsets.subarray(0, part.offsets.length - 1), o);
    o += part.offsets.length - 1;
    offsets[o] = part.offsets[part.offsets.length - 1];
  }
  if (H) for (let q = 0; q < H.length; q++) H[q] /= n;
  return {
    n,
    C: K,
    D,
    bias: b !== null,
    h,
    g: col.join('g', (m) => new Float64Array(m)),
    z: col.join('z', (m) => new Float64Array(m)),
    loss: col.join('loss', (m) => new Float64Array(m)),
    labels: col.join('labels', (m) => new Int32Array(m)),
    lines: col.join('lines', (m) => new Int32Array(m)),
    offsets,
    table,
    summary,
    ...(locator ? { locator } : {}),
    grads,
    gradSum: sum,
    H0: H,
  };
}

/**
 * Every row's loss gradient over the chosen layers in chunks (start, k, k×P): from memory when the
 * pass kept them, else by another pass over the file.
 */
export async function rowGradients(
  deep: DeepEngine,
  rows: DeepRows,
  path: string,
  tableOpts: TableOptions,
  run: RunControl,
  onChunk: (start: number, k: number, G: Float64Array) => Promise<void>,
): Promise<void> {
  const { P, K } = deep;
  if (rows.grads) {
    const step = Math.max(1, Math.floor(RUN_VALUES / P));
    for (let s = 0; s < rows.n; s += step) {
      throwIfAborted(run.signal);
      const k = Math.min(step, rows.n - s);
      await onChunk(s, k, rows.grads.subarray(s * P, (s + k) * P));
    }
    return;
  }
  await deep.pass(path, tableOpts, run, async (batch, fw) => {
    const step = runRows(deep, 1);
    for (let s = 0; s < batch.count; s += step) {
      throwIfAborted(run.signal);
      run.onProgress?.('gradients', batch.start + s, rows.n);
      const m = Math.min(step, batch.count - s);
      const g = rows.g.subarray((batch.start + s) * K, (batch.start + s + m) * K);
      await onChunk(batch.start + s, m, await deep.gradients(fw, s, m, g, 1));
    }
  });
}
