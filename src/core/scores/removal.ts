/**
 * Removing one training row: its self-influence and the leverage-corrected Newton step. With
 * Q_i = (I⊗x̃_i)ᵀH⁻¹(I⊗x̃_i) and A_i = ∇²_z L_i, one Newton step on the leave-one-out objective from
 * θ̂, with row i's own curvature taken out of H, is Δθ_i = (1/n) H⁻¹ (w_i ⊗ x̃_i).
 */
import { dot, solveSmall } from '../linalg';
import { headDims, rowInput } from '../task/head';
import { rowCurvature } from '../task/loss';
import type { Curvature } from '../curvature/curvature';

/**
 * The leverage-corrected Newton weights: given Q = Q_i, A = ∇²_z L_i, g = g_i and Qg, writes
 * w = g + (A/n)(I − Q A/n)⁻¹ Q g (so that Δθ = (1/n) H⁻¹ (w ⊗ x̃_i)). M is C×C scratch.
 */
export function newtonWeights(
  Q: Float64Array,
  A: Float64Array,
  g: Float64Array,
  Qg: Float64Array,
  n: number,
  C: number,
  M: Float64Array,
  w: Float64Array,
): void {
  for (let c = 0; c < C; c++)
    for (let d = 0; d < C; d++) {
      let s = 0;
      for (let e = 0; e < C; e++) s += Q[c * C + e] * A[e * C + d];
      M[c * C + d] = (c === d ? 1 : 0) - s / n;
    }
  const y = solveSmall(M, Qg, C);
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let d = 0; d < C; d++) s += A[c * C + d] * y[d];
    w[c] = g[c] + s / n;
  }
}

/**
 * Per-row quantities of removing row i, shared by explain and audit (exact path). After `load(i)`:
 * x = x̃_i, g = g_i, A = ∇²_z L_i, Q = Q_i, Qg = Q g, self = ∇L_iᵀH⁻¹∇L_i, and w such that the
 * leverage-corrected Newton step of removing row i is Δθ = (1/n) H⁻¹ (w ⊗ x̃_i), i.e.
 * (1/n)(H − (1/n)∇²L_i)⁻¹ ∇L_i by Woodbury on the rank-(C−1) term:
 * w = g + (A/n)(I − Q A/n)⁻¹ Q g.
 */
export class RowRemoval {
  readonly x: Float64Array;
  readonly g: Float64Array;
  readonly p: Float64Array;
  readonly A: Float64Array;
  readonly Q: Float64Array;
  readonly Qg: Float64Array;
  readonly w: Float64Array;
  self = 0;
  private readonly M: Float64Array;
  private readonly xs: Float64Array;
  private readonly scratch: Float64Array;

  constructor(private readonly curv: Curvature) {
    const { C } = curv.rows;
    const { Dt } = headDims(curv.rows);
    this.x = new Float64Array(Dt);
    this.xs = new Float64Array(Dt);
    this.scratch = new Float64Array(Math.max(C, Dt));
    this.g = new Float64Array(C);
    this.p = new Float64Array(C);
    this.A = new Float64Array(C * C);
    this.Q = new Float64Array(C * C);
    this.Qg = new Float64Array(C);
    this.w = new Float64Array(C);
    this.M = new Float64Array(C * C);
  }

  load(i: number): void {
    const rows = this.curv.rows;
    const { n, C } = rows;
    const { x, g, A, Q, Qg, M, w } = this;
    rowInput(rows, i, x);
    rowCurvature(rows.g, rows.labels, i, C, this.p, A);
    for (let c = 0; c < C; c++) g[c] = rows.g[i * C + c];
    this.curv.quad(i, x, Q, this.xs, this.scratch);
    for (let c = 0; c < C; c++) Qg[c] = dot(Q.subarray(c * C, (c + 1) * C), g, C);
    this.self = Math.max(dot(g, Qg, C), 0);
    newtonWeights(Q, A, g, Qg, n, C, M, w);
  }
}
