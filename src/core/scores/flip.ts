/** The flip set: the fewest training rows whose removal flips a prediction, to first order. */
import { select } from '../linalg';

export interface FlipSet {
  rows: number[];
  newClass: number;
}

/** A class the prediction could flip to, and the margin z_ŷ − z_c by which it trails. */
export interface Competitor {
  cls: number;
  margin: number;
}

/**
 * Shortest set of rows whose removal flips the prediction, per the first-order margin changes
 * d[i·J + j] (the change of competitor j's margin if row i is removed): for each competitor, the
 * rows sorted by d[i,j] (most negative first, ties by row), and the shortest prefix whose sum
 * reaches −margin. The competitor with the fewest rows wins (ties: the first listed, so list them
 * in class order), if that is at most ⌈0.05·n⌉ rows.
 */
export function flipSet(d: Float64Array, n: number, competitors: Competitor[]): FlipSet | null {
  const J = competitors.length;
  return flipSetOf(n, competitors, (j, out) => {
    for (let i = 0; i < n; i++) out[i] = d[i * J + j];
  });
}

/**
 * flipSet with competitor j's margin changes written into `out` (length n) on demand. Only
 * prefixes shorter than the best so far (and at most ⌈0.05·n⌉) can win, so each competitor needs
 * only its few most negative values: they are found by selection rather than by sorting all n rows.
 */
export function flipSetOf(
  n: number,
  competitors: Competitor[],
  column: (j: number, out: Float64Array) => void,
): FlipSet | null {
  const limit = Math.ceil(0.05 * n);
  let best: FlipSet | null = null;
  const col = new Float64Array(n);
  const vals = new Float64Array(n);
  const idx = new Int32Array(n);
  for (let j = 0; j < competitors.length; j++) {
    const { cls, margin } = competitors[j];
    const target = -margin;
    const most = Math.min(limit, best ? best.rows.length - 1 : limit);
    if (most < 1) continue;
    column(j, col);
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
    for (let q = 0; q < m; q++) if (vals[q] < kth) cand.push(idx[q]);
    for (let q = 0; q < m && cand.length < k; q++) if (vals[q] === kth) cand.push(idx[q]);
    cand.sort((a, b) => col[a] - col[b] || a - b);
    let sum = 0;
    let count = 0;
    for (let q = 0; q < cand.length; q++) {
      sum += col[cand[q]];
      if (sum <= target) {
        count = q + 1;
        break;
      }
    }
    if (count > 0 && count <= limit && (!best || count < best.rows.length))
      best = { rows: cand.slice(0, count), newClass: cls };
  }
  return best;
}
