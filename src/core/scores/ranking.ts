/** Rankings of training rows: the top rows by a score, and the order in which to review them. */
import { select } from '../linalg';

/** Indices of the `top` rows with the largest positive and the most negative values of `v` (ties: lower row first). */
export function topRows(v: Float64Array, top: number): { helpful: number[]; harmful: number[] } {
  return { helpful: largest(v, top, 1), harmful: largest(v, top, -1) };
}

/** The `top` indices with the largest sign·v > 0, in order, by selection rather than a sort of all n. */
function largest(v: Float64Array, top: number, sign: 1 | -1): number[] {
  if (!(top > 0)) return [];
  let count = 0;
  for (let i = 0; i < v.length; i++) if (sign * v[i] > 0) count++;
  let threshold = 0;
  if (count > top) {
    const vals = new Float64Array(count);
    for (let i = 0, k = 0; i < v.length; i++) if (sign * v[i] > 0) vals[k++] = sign * v[i];
    threshold = select(vals, count - top);
  }
  const idx: number[] = [];
  for (let i = 0; i < v.length; i++) if (sign * v[i] > 0 && sign * v[i] >= threshold) idx.push(i);
  return idx.sort((a, b) => sign * (v[b] - v[a]) || a - b).slice(0, top);
}

/** Every row, most suspicious first (ties: lower row first): the order in which to review them. */
export function suspicionOrder(suspicion: Float64Array): number[] {
  return Array.from({ length: suspicion.length }, (_, i) => i).sort((a, b) => suspicion[b] - suspicion[a] || a - b);
}

/**
 * The first-order change of the mean held-out loss if the rows `removed` are dropped together
 * (group influence): −Σ_{i∈removed} heldOutInfluence_i / (n·|V|).
 */
export function heldOutChangeIfRemoved(
  heldOutInfluence: Float64Array,
  removed: number[],
  n: number,
  heldOutRows: number,
): number {
  let sum = 0;
  for (const i of removed) sum += heldOutInfluence[i];
  return -sum / (n * heldOutRows);
}
