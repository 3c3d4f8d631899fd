/**
 * Training rows for influence beyond the head: one pass over the file through the user's graph
 * and the backward graph (model/deep.ts), giving per row what explain reports (labels, lines,
 * logits, loss), the head's view (h and g, for the damping rules and the head report) and the
 * curvature's statistics: the exact GGN's sum, or the per-layer EK-FAC factors. The scores then
 * pass over the file again (`rowPass`): per-row gradients over the chosen layers are never stored.
 */
import { throwIfAborted, type Progress } from './errors';
import type { TableInfo, TableOptions, TableSummary } from './data/table';
import { curvatureDirections } from './curvature/ggn';
import type { DeepEngine, DeepForward } from './model/deep';
import type { HeadRows } from './task/head';
import { lossAndSignal, taskFor } from './task/loss';

export interface DeepRows extends HeadRows {
  z: Float64Array;
  loss: Float64Array;
  lines: Int32Array;
  offsets: Float64Array;
  table: TableInfo;
  summary: TableSummary;
  /** The exact GGN's undamped mean H₀ (P×P), when asked for. */
  H0: Float64Array | null;
}

export interface RunControl {
  signal?: AbortSignal;
  onProgress?: Progress;
  batchSize?: number;
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
 * The pass: per-row data, and with `ggn` the exact GGN's sum (K directions per row: the columns of
 * a factor of A). `onBatch` (EK-FAC statistics) sees each batch's forward results.
 */
export async function readDeepRows(
  deep: DeepEngine,
  path: string,
  tableOpts: TableOptions,
  run: RunControl,
  opts: { ggn: boolean; onBatch?: (fw: DeepForward, g: Float64Array, labels: Int32Array) => Promise<void> },
): Promise<DeepRows> {
  const { P, K } = deep;
  const task = taskFor(K);
  const { D, b } = deep.eng.info.head;
  const col = new Collector();
  let H: Float64Array | null = opts.ggn ? new Float64Array(P * P) : null;
  const { table, summary } = await deep.pass(path, tableOpts, run, async (batch, fw) => {
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
    if (opts.onBatch) await opts.onBatch(fw, g, batch.labels);
  });
  const n = summary.rows;
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
    H0: H,
  };
}

/** Every training row again, a forward batch at a time with the rows' g (count×K): what the row scorers read. */
export type RowPass = (onBatch: (start: number, fw: DeepForward, g: Float64Array) => Promise<void>) => Promise<void>;

/** The row pass over the file the rows were read from. */
export function rowPass(
  deep: DeepEngine,
  rows: DeepRows,
  path: string,
  tableOpts: TableOptions,
  run: RunControl,
): RowPass {
  const K = deep.K;
  return async (onBatch) => {
    await deep.pass(path, tableOpts, run, async (batch, fw) => {
      run.onProgress?.('scores', batch.start, rows.n);
      await onBatch(batch.start, fw, rows.g.subarray(batch.start * K, (batch.start + batch.count) * K));
    });
  };
}
