/**
 * Orders and group estimates over an audit's per-row scores, shared by the command line and the
 * extension so that both review rows in the same order and predict the same held-out change.
 */

/** Every row index, most suspicious first; equal suspicions keep the lower row first. */
export function suspicionOrder(suspicion: Float64Array): number[] {
  return Array.from({ length: suspicion.length }, (_, i) => i).sort((a, b) => suspicion[b] - suspicion[a] || a - b);
}

/**
 * First-order change of the mean held-out loss if `rows` are removed together (group influence):
 * −Σ_{i∈rows} heldOutInfluence_i / (n·|V|), with n training rows and |V| = `heldOutRows`.
 */
export function heldOutChangeIfRemoved(heldOutInfluence: Float64Array, rows: number[], n: number, heldOutRows: number): number {
  let sum = 0;
  for (const i of rows) sum += heldOutInfluence[i];
  return -sum / (n * heldOutRows);
}
