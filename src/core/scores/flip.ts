/** The flip set: the fewest training rows whose removal flips a prediction, to first order. */
import { select } from '../linalg';

export interface FlipSet {
  rows: number[];
  newClass: number;
}

/**
 * Shortest set of rows whose removal flips the prediction, per the first-order margin changes
 * d[i·C + c] (the change of z_ŷ − z_c if row i is removed): for each class c ≠ ŷ, the rows sorted
 * by d[i,c] (most negative first, ties by row), and the shortest prefix whose sum reaches
 * −(z_ŷ − z_c).
 */
export function flipSet(d: Float64Array, n: number, C: number, z: Float64Array, predicted: number): FlipSet | null {
  return flipSetOf(n, C, z, predicted, (c, out) => {
    for (let i = 0; i < n; i++) out[i] = d[i * C + c];
  });
}

/**
 * flipSet with the margin changes of class c written into `out` (length n) on demand. Only
 * prefixes shorter than the best so far (and at most ⌈0.05·n⌉) can win, so each class needs only
 * its few most negative values: they are found by selection rather than by sorting all n rows.
 */
export function flipSetOf(n: number, C: number, z: Float64Array, predicted: number, column: (c: number, out: Float64Array) => void): FlipSet | null {
  const limit = Math.ceil(0.05 * n);
  let best: FlipSet | null = null;
  const col = new Float64Array(n);
  const vals = new Float64Array(n);
  const idx = new Int32Array(n);
  for (let c = 0; c < C; c++) {
    if (c === predicted) continue;
    const target = -(z[predicted] - z[c]);
    const most = Math.min(limit, best ? best.rows.length - 1 : limit);
    if (most < 1) continue;
    column(c, col);
    // The negative values (later rows only raise the sum) and their total.
    let m = 0;
    let total = 0;
    for (let i = 0; i < n; i++) {
      const v = col[i];
      if (v < 0) {
        vals[m] = v;
        idx[m++] = i;
        total += v;
      }
    }
    // Even all of them cannot reach the target (with a margin far above the rounding of the sum).
    if (m === 0 || total - target > 1e-9 * -total) continue;
    // The `most` smallest values in (value, row) order.
    const k = Math.min(most, m);
    const kth = k < m ? select(vals.slice(0, m), k - 1) : Infinity;
    const cand: number[] = [];
    for (let j = 0; j < m; j++) if (vals[j] < kth) cand.push(idx[j]);
    for (let j = 0; j < m && cand.length < k; j++) if (vals[j] === kth) cand.push(idx[j]);
    cand.sort((a, b) => col[a] - col[b] || a - b);
    let sum = 0;
    let count = 0;
    for (let j = 0; j < cand.length; j++) {
      sum += col[cand[j]];
      if (sum <= target) {
        count = j + 1;
        break;
      }
    }
    if (count > 0 && count <= limit && (!best || count < best.rows.length)) best = { rows: cand.slice(0, count), newClass: c };
  }
  return best;
}
