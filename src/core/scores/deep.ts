/**
 * explain's and audit's scores over layers beyond the head, from a curvature over the chosen
 * parameters (curvature/ggn.ts: the exact GGN, or EK-FAC per layer). The test row's Jacobian J_t (K×P: one
 * backward pass per logit) spans every right-hand side: with S = J_t H⁻¹ (K solves),
 * Y_i = S ∇L_i gives influence(i) = −g_tᵀY_i and the margin changes (e_ŷ − e_c)ᵀY_i/n, and the
 * self-influence is ∇L_iᵀH⁻¹∇L_i. The leverage-corrected Newton estimate needs the head's
 * closed-form leave-one-out step and is not computed here: it is NaN (null in the JSON) and the
 * result says why.
 */
import { throwIfAborted, type Progress } from '../errors';
import { f64 } from '../ort/graph';
import { gemm64Kernel } from '../ort/kernels';
import { probabilities, taskFor, type Task } from '../task/loss';
import type { DeepCurvature } from '../curvature/ggn';
import { FIRST_ORDER_FLIP_LOSS, memorizedFlags, suspicionScores, type AuditScores } from './audit';
import { flipSet } from './flip';
import type { ExplainScores } from './explain';

/** The test row as the deep scores see it: its Jacobian over the chosen parameters, g_t, logits and label. */
export interface DeepTestPoint {
  /** K×P: row c = J_tᵀe_c. */
  J: Float64Array;
  g: Float64Array;
  z: Float64Array;
  label: number;
}

/** ∇L_t = J_tᵀ g_t. */
export function testGradient(test: DeepTestPoint, K: number, P: number): Float64Array {
  const out = new Float64Array(P);
  for (let c = 0; c < K; c++) {
    const gc = test.g[c];
    if (gc === 0) continue;
    for (let q = 0; q < P; q++) out[q] += gc * test.J[c * P + q];
  }
  return out;
}

/** Every row's gradient in chunks, as deepRows.rowGradients gives them. */
export type GradientChunks = (onChunk: (start: number, k: number, G: Float64Array) => Promise<void>) => Promise<void>;

/** Only lossChangeIfRemoved at a curvature (for the stability check). */
export async function deepLossChanges(
  n: number,
  K: number,
  test: DeepTestPoint,
  curv: DeepCurvature,
  chunks: GradientChunks,
): Promise<Float64Array> {
  const u = await curv.solveRows(testGradient(test, K, curv.P), 1);
  const out = new Float64Array(n);
  const P = curv.P;
  await chunks(async (start, k, G) => {
    for (let i = 0; i < k; i++) {
      let s = 0;
      for (let q = 0; q < P; q++) s += u[q] * G[i * P + q];
      // lossChangeIfRemoved = −influence/n = g_tᵀH⁻¹g_i/n.
      out[start + i] = s / n;
    }
  });
  return out;
}

export async function deepExplainScores(
  n: number,
  task: Task,
  test: DeepTestPoint,
  curv: DeepCurvature,
  chunks: GradientChunks,
  signal?: AbortSignal,
): Promise<ExplainScores> {
  const { K } = task;
  const P = curv.P;
  const seconds: Record<string, number> = {};
  let t0 = performance.now();
  const S = await curv.solveRows(test.J, K);
  seconds.solve = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const { predicted, runnerUp, margin } = task.prediction(test.z);
  const competitors = task.competitors(test.z, predicted);
  const J = competitors.length;
  const runnerUpIndex = competitors.findIndex((c) => c.cls === runnerUp);
  const influence = new Float64Array(n);
  const lossChangeIfRemoved = new Float64Array(n);
  const selfInfluence = new Float64Array(n);
  const relativeInfluence = new Float64Array(n);
  const classificationInfluence = new Float64Array(n);
  const marginChange = new Float64Array(n * J);
  const nt = await gemm64Kernel(0, 1);
  try {
    await chunks(async (start, k, G) => {
      throwIfAborted(signal);
      // Y = G Sᵀ: Y[i, a] = (J_tᵀe_a)ᵀ H⁻¹ ∇L_i.
      const Y = (await nt.run({ a: f64(G, [k, P]), b: f64(S, [K, P]) })).c.data as Float64Array;
      const self = await curv.quad(G, k);
      for (let r = 0; r < k; r++) {
        const i = start + r;
        let inf = 0;
        for (let a = 0; a < K; a++) inf -= test.g[a] * Y[r * K + a];
        for (let j = 0; j < J; j++) {
          let d = 0;
          const m = competitors[j].m;
          for (let a = 0; a < K; a++) d += m[a] * Y[r * K + a];
          marginChange[i * J + j] = d / n;
        }
        const si = Math.max(self[r], 0);
        influence[i] = inf;
        lossChangeIfRemoved[i] = -inf / n;
        selfInfluence[i] = si;
        relativeInfluence[i] = si > 0 ? inf / Math.sqrt(si) : 0;
        classificationInfluence[i] = runnerUpIndex >= 0 ? marginChange[i * J + runnerUpIndex] : 0;
      }
    });
  } finally {
    await nt.release();
  }
  seconds.scores = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const flip = flipSet(marginChange, n, competitors);
  seconds.flip = (performance.now() - t0) / 1000;
  return {
    predicted,
    margin,
    runnerUp,
    influence,
    lossChangeIfRemoved,
    lossChangeIfRemovedNewton: new Float64Array(n).fill(NaN),
    selfInfluence,
    relativeInfluence,
    classificationInfluence,
    flip,
    solver: 'cholesky',
    selfInfluenceMethod: curv.method === 'exact' ? 'exact' : 'ekfac',
    cgIterations: null,
    seconds,
  };
}

/** audit's rows as the deep scores read them: labels, logits, loss and g per row. */
export interface DeepAuditRows {
  n: number;
  C: number;
  labels: Int32Array;
  z: Float64Array;
  loss: Float64Array;
  g: Float64Array;
}

/**
 * audit's scores over the chosen layers: selfInfluence = ∇L_iᵀH⁻¹∇L_i and, with a held-out set
 * (the sum of its gradients), heldOutInfluence = −(Σ_v ∇L_v)ᵀH⁻¹∇L_i, one solve for the set. The
 * head's leave-one-out step (lossWithout, marginWithout, predictedWithout) is head-only: NaN (−1
 * for the class). Suspicion and the memorized flags take the first-order leave-one-out loss
 * loss + selfInfluence/n in its place (FIRST_ORDER_FLIP_LOSS).
 */
export async function deepAuditScores(
  rows: DeepAuditRows,
  heldOut: { gradSum: Float64Array; n: number } | null,
  curv: DeepCurvature,
  chunks: GradientChunks,
  opts: { tau: number; signal?: AbortSignal; onProgress?: Progress },
): Promise<AuditScores> {
  const { n, C } = rows;
  const P = curv.P;
  const seconds: Record<string, number> = {};
  let t0 = performance.now();
  const u = heldOut ? await curv.solveRows(heldOut.gradSum, 1) : null;
  seconds.solve = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const selfInfluence = new Float64Array(n);
  const heldOutInfluence = u ? new Float64Array(n) : null;
  const nt = await gemm64Kernel(0, 1);
  try {
    await chunks(async (start, k, G) => {
      throwIfAborted(opts.signal);
      opts.onProgress?.('audit', start, n);
      const self = await curv.quad(G, k);
      for (let r = 0; r < k; r++) selfInfluence[start + r] = Math.max(self[r], 0);
      if (u && heldOutInfluence) {
        // −(H⁻¹Σ_v ∇L_v)·∇L_i for the chunk's rows.
        const y = (await nt.run({ a: f64(G, [k, P]), b: f64(u, [1, P]) })).c.data as Float64Array;
        for (let r = 0; r < k; r++) heldOutInfluence[start + r] = -y[r];
      }
    });
  } finally {
    await nt.release();
  }
  const task = taskFor(C);
  const predicted = new Int32Array(n);
  const pPredicted = new Float64Array(n);
  const margin = new Float64Array(n);
  const firstOrder = new Float64Array(n);
  const p = new Float64Array(C);
  for (let i = 0; i < n; i++) {
    const now = task.ownMargin(rows.z.subarray(i * C, (i + 1) * C), rows.labels[i]);
    probabilities(rows.g.subarray(i * C), rows.labels.subarray(i), 1, C, p);
    predicted[i] = now.predicted;
    pPredicted[i] = task.classProbability(p, now.predicted);
    margin[i] = now.margin;
    firstOrder[i] = rows.loss[i] + selfInfluence[i] / n;
  }
  // Suspicion's definition, with the first-order leave-one-out loss for the head's Newton one.
  const suspicion = suspicionScores(firstOrder, rows.loss, heldOutInfluence, heldOut?.n ?? 0);
  const memorized = heldOutInfluence
    ? memorizedFlags(predicted, rows.labels, (i) => firstOrder[i] > FIRST_ORDER_FLIP_LOSS, heldOutInfluence, opts.tau)
    : null;
  seconds.audit = (performance.now() - t0) / 1000;
  return {
    n,
    predicted,
    pPredicted,
    selfInfluence,
    heldOutInfluence,
    margin,
    marginWithout: new Float64Array(n).fill(NaN),
    predictedWithout: new Int32Array(n).fill(-1),
    lossWithout: new Float64Array(n).fill(NaN),
    leaveOneOut: 'firstOrder',
    suspicion,
    memorized,
    heldOutRows: heldOut?.n ?? 0,
    solver: curv.method === 'exact' ? 'cholesky' : 'ekfac',
    selfInfluenceMethod: curv.method === 'exact' ? 'exact' : 'ekfac',
    cgIterations: null,
    seconds,
  };
}
