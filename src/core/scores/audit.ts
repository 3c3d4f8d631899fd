/**
 * The scores of an audit: which training rows the model memorizes rather than generalizes from,
 * and which to review first. The reasoning is in the README.
 */
import { throwIfAborted } from '../errors';
import type { Reason } from '../shapes';

export type { Reason };
import { dot } from '../linalg';
import { headDims, type HeadRows } from '../task/head';
import { probabilities, taskFor } from '../task/loss';
import { Curvature } from '../curvature/curvature';
import type { CurvatureOptions, SelfInfluenceMethod, SolverKind } from '../curvature/policy';
import { RowRemoval } from './removal';
import { heldOutChangeIfRemoved } from './ranking';
import { fastRowPass } from './rowpass';

/** Rows as the audit reads them (training or held-out): the head's view, with each row's logits and loss. */
export interface ScoredRows extends HeadRows {
  z: Float64Array;
  loss: Float64Array;
}

export interface HeldOut {
  path: string;
  source: 'validation' | 'test';
  rows: ScoredRows;
}

/** The damping, how to build the curvature, and tau. */
export interface AuditOptions extends CurvatureOptions {
  damping: number;
  /** memorized needs heldOutInfluence ≥ −tau. */
  tau: number;
}

export interface AuditScores {
  n: number;
  predicted: Int32Array;
  /** p of the predicted class. */
  pPredicted: Float64Array;
  selfInfluence: Float64Array;
  /** −(Σ_v ∇L_v)ᵀ H⁻¹ ∇L_i, or null without a held-out set. */
  heldOutInfluence: Float64Array | null;
  /** Own-label margin now, and after a leverage-corrected Newton step removing the row. */
  margin: Float64Array;
  marginWithout: Float64Array;
  predictedWithout: Int32Array;
  /** The row's own loss after that step: its leave-one-out loss. */
  lossWithout: Float64Array;
  /**
   * How the leave-one-out step was taken: the head's leverage-corrected Newton step, or (beyond
   * the head) none, the first-order loss + selfInfluence/n standing in (lossWithout etc. NaN).
   */
  leaveOneOut: 'newton' | 'firstOrder';
  suspicion: Float64Array;
  memorized: Uint8Array | null;
  heldOutRows: number;
  /** How H⁻¹ is applied: the head's solvers, or beyond it the explicit inverse ('cholesky') or EK-FAC. */
  solver: SolverKind | 'ekfac';
  selfInfluenceMethod: SelfInfluenceMethod;
  cgIterations: number | null;
  seconds: Record<string, number>;
}

/** The held-out rows' mean loss and accuracy (predicted as labelled). */
export function heldOutFit(h: Pick<ScoredRows, 'n' | 'C' | 'z' | 'loss' | 'labels'>): {
  loss: number;
  accuracy: number;
} {
  const task = taskFor(h.C);
  let loss = 0;
  let correct = 0;
  for (let i = 0; i < h.n; i++) {
    loss += h.loss[i];
    if (task.ownMargin(h.z.subarray(i * h.C, (i + 1) * h.C), h.labels[i]).margin > 0) correct++;
  }
  return { loss: loss / h.n, accuracy: correct / h.n };
}

/** Σ_v g_v ⊗ x̃_v over the held-out rows: the gradient of their summed loss. */
function heldOutGradient(h: HeadRows, Dt: number): Float64Array {
  const { n, C, D } = h;
  const v = new Float64Array(C * Dt);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < C; c++) {
      const gc = h.g[i * C + c];
      if (gc === 0) continue;
      const o = c * Dt;
      for (let j = 0; j < D; j++) v[o + j] += gc * h.h[i * D + j];
      if (Dt > D) v[o + D] += gc;
    }
  }
  return v;
}

export async function auditScores(
  rows: ScoredRows,
  heldOut: HeldOut | null,
  opts: AuditOptions,
  curvature?: Curvature,
): Promise<AuditScores> {
  const curv = curvature ?? (await Curvature.create(rows, opts.damping, opts));
  try {
    return await auditWith(rows, heldOut, opts, curv);
  } finally {
    if (!curvature) await curv.release();
  }
}

async function auditWith(
  rows: ScoredRows,
  heldOut: HeldOut | null,
  opts: AuditOptions,
  curv: Curvature,
): Promise<AuditScores> {
  const { n, C } = rows;
  const { Dt } = headDims(rows);
  const seconds: Record<string, number> = {};
  let U: Float64Array | null = null;
  if (heldOut) {
    [U] = await curv.solve([heldOutGradient(heldOut.rows, Dt)], opts.signal, opts.onProgress);
  }
  Object.assign(seconds, curv.seconds);
  const t0 = performance.now();

  const predicted = new Int32Array(n);
  const pPredicted = new Float64Array(n);
  const selfInfluence = new Float64Array(n);
  const heldOutInfluence = U ? new Float64Array(n) : null;
  const margin = new Float64Array(n);
  const marginWithout = new Float64Array(n);
  const predictedWithout = new Int32Array(n);
  const lossWithout = new Float64Array(n);
  const task = taskFor(C);
  const dz = new Float64Array(C);
  const zNew = new Float64Array(C);
  /** Row i given p_i, its self-influence and Q_i w_i (Δz = Q w / n: the leverage-corrected Newton step). */
  const record = (i: number, p: Float64Array, self: number, qw: Float64Array) => {
    const y = rows.labels[i];
    const z = rows.z.subarray(i * C, (i + 1) * C);
    const now = task.ownMargin(z, y);
    predicted[i] = now.predicted;
    pPredicted[i] = task.classProbability(p, now.predicted);
    margin[i] = now.margin;
    selfInfluence[i] = self;
    // Removing row i moves its own logits by Δz = (1/n) Q_i w_i (leverage-corrected Newton step).
    for (let c = 0; c < C; c++) {
      dz[c] = qw[c] / n;
      zNew[c] = z[c] + dz[c];
    }
    const after = task.ownMargin(zNew, y);
    marginWithout[i] = after.margin;
    predictedWithout[i] = after.predicted;
    lossWithout[i] = rows.loss[i] + task.lossShift(p, dz, y);
  };
  if (curv.fast) {
    const p = new Float64Array(C);
    await fastRowPass(
      curv.fast,
      { audit: { heldOut: U }, signal: opts.signal, onProgress: opts.onProgress, stage: 'audit' },
      (i, row) => {
        probabilities(rows.g.subarray(i * C), rows.labels.subarray(i), 1, C, p);
        record(i, p, Math.max(row.self, 0), row.qw);
        // −vᵀH⁻¹(g ⊗ x̃) = −Σ_c g_c (U_c · x̃).
        if (heldOutInfluence) heldOutInfluence[i] = -row.heldOut;
      },
    );
  } else {
    const row = new RowRemoval(curv);
    const qw = new Float64Array(C);
    for (let i = 0; i < n; i++) {
      if ((i & 1023) === 0) {
        throwIfAborted(opts.signal);
        opts.onProgress?.('audit', i, n);
      }
      row.load(i);
      for (let c = 0; c < C; c++) qw[c] = dot(row.Q.subarray(c * C, (c + 1) * C), row.w, C);
      record(i, row.p, row.self, qw);
      if (U && heldOutInfluence) {
        // −vᵀH⁻¹(g ⊗ x̃) = −Σ_c g_c (U_c · x̃).
        let s = 0;
        for (let c = 0; c < C; c++) s += row.g[c] * dot(U.subarray(c * Dt, (c + 1) * Dt), row.x, Dt);
        heldOutInfluence[i] = -s;
      }
    }
  }
  const suspicion = suspicionScores(lossWithout, rows.loss, heldOutInfluence, heldOut?.rows.n ?? 0);
  const memorized = heldOutInfluence
    ? memorizedFlags(predicted, rows.labels, (i) => marginWithout[i] < 0, heldOutInfluence, opts.tau)
    : null;
  seconds.audit = (performance.now() - t0) / 1000;
  return {
    n,
    predicted,
    pPredicted,
    selfInfluence,
    heldOutInfluence,
    margin,
    marginWithout,
    predictedWithout,
    lossWithout,
    leaveOneOut: 'newton',
    suspicion,
    memorized,
    heldOutRows: heldOut?.rows.n ?? 0,
    solver: curv.solver,
    selfInfluenceMethod: curv.selfMethod,
    cgIterations: curv.cgIterations,
    seconds,
  };
}

/**
 * memorized(i): predicted as labelled now, right only because it is in the training set
 * (`selfFlip`), and not helping held-out data (heldOutInfluence ≥ −tau).
 */
export function memorizedFlags(
  predicted: Int32Array,
  labels: Int32Array,
  selfFlip: (i: number) => boolean,
  heldOutInfluence: Float64Array,
  tau: number,
): Uint8Array {
  const out = new Uint8Array(predicted.length);
  for (let i = 0; i < out.length; i++)
    out[i] = predicted[i] === labels[i] && selfFlip(i) && heldOutInfluence[i] >= -tau ? 1 : 0;
  return out;
}

/**
 * Beyond the head, a row is "right only because it is in the training set" when its first-order
 * leave-one-out loss, loss + selfInfluence/n, passes ln 2: without it, the label's probability
 * would fall below 1/2 (for a binary head, exactly a flip of the prediction; for more classes,
 * a condition that any flip implies). It stands in for the head's Newton step (marginWithout < 0).
 */
export const FIRST_ORDER_FLIP_LOSS = Math.LN2;

/**
 * suspicion(i) = lossWithout_i + (lossWithout_i − loss_i) + max(heldOutInfluence_i, 0)/|V|:
 * - lossWithout, the row's loss once the model is refit without it (leverage-corrected Newton
 *   step): how strongly a model that did not see the row disagrees with its label;
 * - lossWithout − loss, the part of the row's fit that it owes to itself (≈ selfInfluence/n to
 *   first order): memorization;
 * - heldOutInfluence/|V| = n/|V| · (heldOutInfluence/n): the increase of the held-out loss that
 *   the row causes, scaled to a held-out set as large as the training set. Only harm counts.
 */
export function suspicionScores(
  lossWithout: Float64Array,
  loss: Float64Array,
  heldOutInfluence: Float64Array | null,
  heldOutRows: number,
): Float64Array {
  const s = new Float64Array(lossWithout.length);
  for (let i = 0; i < s.length; i++) {
    s[i] =
      2 * lossWithout[i] -
      loss[i] +
      (heldOutInfluence && heldOutRows > 0 ? Math.max(heldOutInfluence[i], 0) / heldOutRows : 0);
  }
  return s;
}

/** Machine-readable reasons for row i; the extension words them. A reason whose numbers are not finite is not given (a NON_FINITE warning says so). */
export function reasonsFor(
  a: AuditScores,
  rows: Pick<ScoredRows, 'labels' | 'loss' | 'n'>,
  i: number,
  selfInfluenceP95: number,
): Reason[] {
  const out: Reason[] = [];
  const y = rows.labels[i];
  const firstOrder = rows.loss[i] + a.selfInfluence[i] / rows.n;
  if (a.predicted[i] !== y) out.push({ code: 'LABEL_DISAGREES', predicted: a.predicted[i], p: a.pPredicted[i] });
  else if (a.leaveOneOut === 'firstOrder') {
    if (firstOrder > FIRST_ORDER_FLIP_LOSS && Number.isFinite(firstOrder))
      out.push({ code: 'SELF_FLIP_FIRST_ORDER', loss: rows.loss[i], lossWithout: firstOrder });
  } else if (a.marginWithout[i] < 0 && Number.isFinite(a.marginWithout[i]))
    out.push({
      code: 'SELF_FLIP',
      margin: a.margin[i],
      marginWithout: a.marginWithout[i],
      predictedWithout: a.predictedWithout[i],
    });
  if (a.heldOutInfluence && a.heldOutInfluence[i] > 0 && Number.isFinite(a.heldOutInfluence[i]) && a.heldOutRows > 0) {
    out.push({
      code: 'HARMS_HELD_OUT',
      heldOutLossChangeIfRemoved: heldOutChangeIfRemoved(a.heldOutInfluence, [i], rows.n, a.heldOutRows),
    });
  }
  if (a.selfInfluence[i] >= selfInfluenceP95 && selfInfluenceP95 > 0 && Number.isFinite(a.selfInfluence[i])) {
    out.push({ code: 'HIGH_SELF_INFLUENCE', selfInfluence: a.selfInfluence[i], percentile: 95 });
  }
  if (a.lossWithout[i] > Math.LN2 + rows.loss[i] && a.lossWithout[i] > 1 && Number.isFinite(a.lossWithout[i]))
    out.push({ code: 'LOO_LOSS', loss: rows.loss[i], lossWithout: a.lossWithout[i] });
  return out;
}

export function quantile(v: Float64Array, q: number): number {
  if (v.length === 0) return 0;
  const s = Float64Array.from(v).sort();
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}
