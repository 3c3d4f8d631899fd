/**
 * explain's and audit's scores over layers beyond the head, from a curvature over the chosen
 * parameters (curvature/ggn.ts: the exact GGN, or EK-FAC per layer). The test row's Jacobian J_t
 * (K×P: one backward pass per logit) spans every right-hand side: the curvature's row scorer gives
 * Y_i = J_t H⁻¹ ∇L_i per training row, hence influence(i) = −g_tᵀY_i and the margin changes
 * (e_ŷ − e_c)ᵀY_i/n, with the self-influence ∇L_iᵀH⁻¹∇L_i; audit's scorer gives, per row, a
 * held-out set's −(Σ_v ∇L_v)ᵀH⁻¹∇L_i and the self-influence. Each passes over the training rows
 * again, so their gradients are never stored. The leverage-corrected Newton estimate needs the
 * head's closed-form leave-one-out step and is not computed here: it is NaN (null in the JSON)
 * and the result says why.
 */
import { throwIfAborted } from '../errors';
import type { DeepCurvature, DeepTestRow } from '../curvature/ggn';
import { signals, type RowPass } from '../deepRows';
import type { DeepEngine, DeepForward } from '../model/deep';
import { probabilities, taskFor, type Task } from '../task/loss';
import { FIRST_ORDER_FLIP_LOSS, memorizedFlags, suspicionScores, type AuditScores } from './audit';
import { flipSet } from './flip';
import type { ExplainScores } from './explain';

/** The test row as the deep scores see it: its Jacobian and layer factors over the chosen parameters, g_t, logits and label. */
export interface DeepTestPoint extends DeepTestRow {
  g: Float64Array;
  z: Float64Array;
  label: number;
}

/** Row `row` of a forward batch as the test point, explained for `label`. */
export async function deepTestPoint(
  deep: DeepEngine,
  fw: DeepForward,
  row: number,
  label: number,
): Promise<DeepTestPoint> {
  const K = deep.K;
  // J_t and its factors: one backward direction per logit.
  const eye = new Float64Array(K * K);
  for (let c = 0; c < K; c++) eye[c * K + c] = 1;
  const z = fw.z.slice(row * K, (row + 1) * K);
  return {
    J: await deep.gradients(fw, row, 1, eye, K),
    factors: await deep.factors(fw, row, 1, eye, K),
    g: signals(deep, z, Int32Array.of(label), 1).g,
    z,
    label,
  };
}

/** g_tᵀY_i/n for each row of Y (rows×K): lossChangeIfRemoved = −influence/n. */
function lossChangesFrom(y: Float64Array, g: Float64Array, n: number): Float64Array {
  const K = g.length;
  const out = new Float64Array(y.length / K);
  for (let i = 0; i < out.length; i++) {
    let s = 0;
    for (let a = 0; a < K; a++) s += g[a] * y[i * K + a];
    out[i] = s / n;
  }
  return out;
}

/** Only lossChangeIfRemoved, at each of the dampings (one pass over the rows). */
export async function deepLossChanges(
  deep: DeepEngine,
  n: number,
  test: DeepTestPoint,
  curv: DeepCurvature,
  pass: RowPass,
  dampings: number[],
  signal?: AbortSignal,
): Promise<Float64Array[]> {
  const scorer = await curv.scorer(deep, test, dampings, false, signal);
  const out = dampings.map(() => new Float64Array(n));
  await pass(async (start, fw, g) => {
    const r = await scorer.run(fw, g);
    r.y.forEach((v, j) => out[j].set(lossChangesFrom(v, test.g, n), start));
  });
  return out;
}

/**
 * Every score at the curvature's damping, and lossChangeIfRemoved at the `also` dampings (the
 * stability check's λ/10 and 10λ) from the same pass.
 */
export async function deepExplainScores(
  deep: DeepEngine,
  n: number,
  task: Task,
  test: DeepTestPoint,
  curv: DeepCurvature,
  pass: RowPass,
  also: number[],
  signal?: AbortSignal,
): Promise<{ scores: ExplainScores; also: Float64Array[] }> {
  const { K } = task;
  const seconds: Record<string, number> = {};
  let t0 = performance.now();
  const scorer = await curv.scorer(deep, test, [curv.damping, ...also], true, signal);
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
  // Only each row's loss change is kept at the other dampings (not its K directions).
  const other = also.map(() => new Float64Array(n));
  await pass(async (start, fw, g) => {
    throwIfAborted(signal);
    const r = await scorer.run(fw, g);
    // Y[i, a] = (J_tᵀe_a)ᵀ H⁻¹ ∇L_i.
    const Y = r.y[0];
    r.y.slice(1).forEach((v, j) => other[j].set(lossChangesFrom(v, test.g, n), start));
    for (let row = 0; row < fw.count; row++) {
      const i = start + row;
      let inf = 0;
      for (let a = 0; a < K; a++) inf -= test.g[a] * Y[row * K + a];
      for (let j = 0; j < J; j++) {
        let d = 0;
        const m = competitors[j].m;
        for (let a = 0; a < K; a++) d += m[a] * Y[row * K + a];
        marginChange[i * J + j] = d / n;
      }
      const si = Math.max(r.self![row], 0);
      influence[i] = inf;
      lossChangeIfRemoved[i] = -inf / n;
      selfInfluence[i] = si;
      relativeInfluence[i] = si > 0 ? inf / Math.sqrt(si) : 0;
      classificationInfluence[i] = runnerUpIndex >= 0 ? marginChange[i * J + runnerUpIndex] : 0;
    }
  });
  seconds.scores = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const flip = flipSet(marginChange, n, competitors);
  seconds.flip = (performance.now() - t0) / 1000;
  return {
    scores: {
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
    },
    also: other,
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
 * audit's scores over the chosen layers, in one pass over the training rows: selfInfluence =
 * ∇L_iᵀH⁻¹∇L_i and, with a held-out set (the sum of its gradients), heldOutInfluence =
 * −(Σ_v ∇L_v)ᵀH⁻¹∇L_i, one solve for the set. The head's leave-one-out step (lossWithout,
 * marginWithout, predictedWithout) is head-only: NaN (−1 for the class). Suspicion and the
 * memorized flags take the first-order leave-one-out loss loss + selfInfluence/n in its place
 * (FIRST_ORDER_FLIP_LOSS).
 */
export async function deepAuditScores(
  deep: DeepEngine,
  rows: DeepAuditRows,
  heldOut: { gradSum: Float64Array; n: number } | null,
  curv: DeepCurvature,
  pass: RowPass,
  opts: { tau: number; signal?: AbortSignal },
): Promise<AuditScores> {
  const { n, C } = rows;
  const seconds: Record<string, number> = {};
  let t0 = performance.now();
  const scorer = await curv.auditScorer(deep, heldOut?.gradSum ?? null, opts.signal);
  seconds.solve = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const selfInfluence = new Float64Array(n);
  const heldOutInfluence = heldOut ? new Float64Array(n) : null;
  await pass(async (start, fw, g) => {
    throwIfAborted(opts.signal);
    const r = await scorer.run(fw, g);
    for (let k = 0; k < fw.count; k++) {
      selfInfluence[start + k] = Math.max(r.self[k], 0);
      if (heldOutInfluence) heldOutInfluence[start + k] = -r.toward![k];
    }
  });
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
