/**
 * Exact convex refit of the head z = θ x̃ on the damped training objective
 *
 *   J(θ) = (1/n) Σ_{i included} L(θ x̃_i, y_i) + (λ/2)‖θ‖²   (L: the task's loss, task/loss.ts),
 *
 * with n ALWAYS the full row count: a leave-one-out (or group) refit drops the removed rows'
 * terms and keeps the 1/n, so that θ̂₋ᵢ is exactly what the influence estimates approximate.
 * Layout as in task/head.ts: θ is C×D̃ row-major (index c·D̃ + j), x̃ = [h; 1] with a bias.
 *
 * Method: damped Newton with an Armijo backtracking line search. The curvature is the project's
 * own curvature code (denseHessian / Ekfac / solveCg) applied to a HeadRows
 * view whose g holds ∂L/∂z at θx̃_i for the current iterate, and 0 for excluded rows
 * (then p = the target and A_i = 0, so the row drops out of the curvature as well as the gradient).
 * On the dense path each iteration first tries a full step with the previous Cholesky factor
 * (costs one pass over the rows) and keeps it only if it cuts ‖∇J‖ tenfold; otherwise the
 * Hessian is re-formed. A leave-one-out refit from the full-data optimum then needs 1–3 Hessians.
 * Everything is float64; h (float32 from ORT) is read as float64.
 */
import { CancelledError, InfluenceError, throwIfAborted, type Progress } from './errors';
import type { Curvature } from './curvature/curvature';
import { Ekfac } from './curvature/ekfac';
import { denseHessian, solveCg } from './curvature/exact';
import { EXACT_BUDGET, REFIT_DENSE_MAX_P } from './curvature/policy';
import { addInto, cholesky, dot } from './linalg';
import { f64, i32 } from './ort/graph';
import { HeadFeed, objectiveKernel, overChunks } from './ort/kernels';
import { headDims, logits, type HeadRows } from './task/head';
import { lossAndSignal, taskFor } from './task/loss';

/** Rows per partial sum when accumulating the gradient (rounding grows with BLOCK + n/BLOCK, not n). */
const BLOCK = 256;

export type RefitMethod = 'newton' | 'newton-cg';

export interface RefitOptions {
  /** 1 = row in the objective; default all rows. */
  include?: Uint8Array;
  /** Stop when ‖∇J‖₂ ≤ tol; default 1e-10. */
  tol?: number;
  /** Newton iterations before giving up (BAD_OPTION); default 50. */
  maxIter?: number;
  /**
   * Newton direction: 'newton' = dense Cholesky of the explicit Hessian, 'newton-cg' = conjugate
   * gradients with the EK-FAC preconditioner. Default: dense when n·P² ≤ 5e10 and P ≤ REFIT_DENSE_MAX_P.
   */
  method?: RefitMethod;
  /**
   * After ‖∇J‖ ≤ tol, keep stepping while it pays: dense, up to 8 steps with the last Cholesky
   * factor (no new Hessian), each kept only if it at least halves ‖∇J‖; newton-cg, one step kept
   * if it lowers ‖∇J‖. Brings ‖∇J‖ to rounding level (~1e-16 on digits) for little cost. Default true.
   */
  polish?: boolean;
  signal?: AbortSignal;
  onProgress?: Progress;
}

export interface RefitResult {
  theta: Float64Array;
  gradNorm: number;
  /** Newton steps taken (including a polishing step and steps that reuse the last Cholesky factor). */
  iterations: number;
  /** Explicit Hessians formed and factored (dense path; 0 for newton-cg). */
  hessians: number;
  objective: number;
  method: RefitMethod;
  /** Total conjugate-gradient iterations (newton-cg only; 0 for the dense path). */
  cgIterations: number;
}

/**
 * The rows a refit needs. h may be float64 (e.g. features computed in float64 for a check);
 * ORT gives float32.
 */
export type RefitRows = Pick<HeadRows, 'n' | 'C' | 'D' | 'bias' | 'labels' | 'h'>;

/** Per-row loss, mean loss, accuracy and predictions at θ. Rows without a valid label get NaN and are left out of the means. */
export function evaluate(
  rows: RefitRows,
  theta: Float64Array,
): { loss: Float64Array; meanLoss: number; accuracy: number; predicted: Int32Array } {
  const { n, C } = rows;
  const task = taskFor(C);
  checkTheta(rows, theta);
  const z = new Float64Array(C);
  const loss = new Float64Array(n);
  const predicted = new Int32Array(n);
  let sum = 0;
  let labelled = 0;
  let correct = 0;
  for (let i = 0; i < n; i++) {
    logits(rows, theta, rows.h, i, z);
    const best = task.prediction(z).predicted;
    predicted[i] = best;
    const y = rows.labels[i];
    if (y < 0 || y >= task.classes) {
      loss[i] = NaN;
      continue;
    }
    loss[i] = task.lossAndSignal(z, 0, y, null, 0);
    sum += loss[i];
    labelled++;
    if (best === y) correct++;
  }
  return { loss, meanLoss: labelled ? sum / labelled : NaN, accuracy: labelled ? correct / labelled : NaN, predicted };
}

function checkTheta(rows: Pick<HeadRows, 'C' | 'D' | 'bias'>, theta: Float64Array): void {
  const { P } = headDims(rows);
  if (theta.length !== P)
    throw new InfluenceError('BAD_OPTION', `θ has ${theta.length} entries; the head has ${P} parameters`);
}

interface Point {
  J: number;
  grad: Float64Array;
  gradNorm: number;
  /** n×C, g_i at this point (0 for excluded rows). */
  g: Float64Array;
}

/** J, ∇J and the per-row g at θ. The gradient is summed in blocks of rows (float64 throughout). */
function objectiveAt(
  rows: RefitRows,
  include: Uint8Array | null,
  damping: number,
  theta: Float64Array,
  g: Float64Array,
): Point {
  const { n, C, D, bias, h, labels } = rows;
  const { Dt, P } = headDims(rows);
  const task = taskFor(C);
  const z = new Float64Array(C);
  const grad = new Float64Array(P);
  const block = new Float64Array(P);
  let lossSum = 0;
  let inBlock = 0;
  const flush = () => {
    for (let q = 0; q < P; q++) {
      grad[q] += block[q];
      block[q] = 0;
    }
    inBlock = 0;
  };
  for (let i = 0; i < n; i++) {
    const go = i * C;
    if (include && !include[i]) {
      g.fill(0, go, go + C);
      continue;
    }
    logits(rows, theta, h, i, z);
    lossSum += task.lossAndSignal(z, 0, labels[i], g, go);
    const o = i * D;
    for (let c = 0; c < C; c++) {
      const gc = g[go + c];
      if (gc === 0) continue;
      const bc = c * Dt;
      for (let j = 0; j < D; j++) block[bc + j] += gc * h[o + j];
      if (bias) block[bc + D] += gc;
    }
    if (++inBlock === BLOCK) flush();
  }
  flush();
  const inv = 1 / n;
  let sq = 0;
  for (let q = 0; q < P; q++) {
    grad[q] = grad[q] * inv + damping * theta[q];
    sq += grad[q] * grad[q];
  }
  const J = lossSum * inv + 0.5 * damping * dot(theta, theta);
  return { J, grad, gradNorm: Math.sqrt(sq), g };
}

/** Solves (L Lᵀ) x = b in place for the lower factor left by `cholesky`. */
function choleskySolve(L: Float64Array, m: number, b: Float64Array): void {
  for (let i = 0; i < m; i++) {
    let s = b[i];
    const ri = i * m;
    for (let k = 0; k < i; k++) s -= L[ri + k] * b[k];
    b[i] = s / L[ri + i];
  }
  for (let i = m - 1; i >= 0; i--) {
    let s = b[i];
    for (let k = i + 1; k < m; k++) s -= L[k * m + i] * b[k];
    b[i] = s / L[i * m + i];
  }
}

/** Minimises J from θ₀ by damped Newton; throws BAD_OPTION when it does not converge. */
export function refitHead(
  rows: RefitRows,
  damping: number,
  theta0: Float64Array,
  opts: RefitOptions = {},
): RefitResult {
  const { n, C, labels } = rows;
  const { P } = headDims(rows);
  if (!(damping > 0) || !Number.isFinite(damping))
    throw new InfluenceError('BAD_OPTION', `damping must be positive; got ${damping}`);
  checkTheta(rows, theta0);
  if (rows.h.length !== n * rows.D)
    throw new InfluenceError('BAD_OPTION', `h has ${rows.h.length} entries; expected ${n}×${rows.D}`);
  const include = opts.include ?? null;
  if (include && include.length !== n)
    throw new InfluenceError('BAD_OPTION', `include has ${include.length} entries; expected ${n}`);
  const classes = taskFor(C).classes;
  for (let i = 0; i < n; i++) {
    if ((!include || include[i]) && !(labels[i] >= 0 && labels[i] < classes)) {
      throw new InfluenceError(
        'BAD_OPTION',
        `row ${i} has no valid label (${labels[i]}); it cannot be part of the refit`,
      );
    }
  }
  const tol = opts.tol ?? 1e-10;
  const maxIter = opts.maxIter ?? 50;
  const polish = opts.polish ?? true;
  const { signal, onProgress } = opts;
  const method: RefitMethod =
    opts.method ?? (n * P * P <= EXACT_BUDGET && P <= REFIT_DENSE_MAX_P ? 'newton' : 'newton-cg');

  let theta: Float64Array = Float64Array.from(theta0);
  let cur = objectiveAt(rows, include, damping, theta, new Float64Array(n * C));
  let spare: Float64Array = new Float64Array(n * C);
  let iterations = 0;
  let hessians = 0;
  let cgIterations = 0;
  let polished = false;
  let polishSteps = 0;
  let factor: Float64Array | null = null;
  let ekfac: Ekfac | null = null;
  let ekfacGradNorm = Infinity;

  const notConverged = (why: string): InfluenceError =>
    new InfluenceError(
      'BAD_OPTION',
      `the exact refit of the head did not converge: ${why} (‖∇J‖ = ${cur.gradNorm.toExponential(2)}, tolerance ${tol.toExponential(0)}); the objective is too ill-conditioned at this damping, try a larger --damping`,
    );

  /**
   * Armijo backtracking on J along d (no halving when `fullOnly`). Where the predicted decrease is
   * below the rounding of J itself, J cannot arbitrate and a step that lowers ‖∇J‖ is accepted.
   */
  const lineSearch = (d: Float64Array, fullOnly: boolean): { point: Point; theta: Float64Array } | null => {
    const slope = dot(cur.grad, d);
    if (!(slope < 0)) return null;
    const roundingJ = 1e-13 * Math.max(1, Math.abs(cur.J));
    const cand = new Float64Array(P);
    for (let t = 1; t >= 1e-10; t *= 0.5) {
      for (let q = 0; q < P; q++) cand[q] = theta[q] + t * d[q];
      const point = objectiveAt(rows, include, damping, cand, spare);
      const armijo = point.J <= cur.J + 1e-4 * t * slope;
      const tiny = -t * slope <= roundingJ && point.gradNorm < cur.gradNorm;
      if (Number.isFinite(point.J) && Number.isFinite(point.gradNorm) && (armijo || tiny))
        return { point, theta: cand };
      if (fullOnly) break;
    }
    return null;
  };

  for (;;) {
    throwIfAborted(signal);
    onProgress?.('refit', iterations, maxIter);
    if (!Number.isFinite(cur.J) || !Number.isFinite(cur.gradNorm))
      throw notConverged('the objective became non-finite');
    if (cur.gradNorm <= tol) {
      // Converged. Polishing: more steps, each kept only if it lowers ‖∇J‖ (dense: cheap steps with
      // the last factor while they at least halve it; newton-cg: one step). They reach rounding level.
      if (!polish || cur.gradNorm === 0 || (polished && method === 'newton-cg') || polishSteps >= 8) break;
      polished = true;
      polishSteps++;
    }
    if (iterations >= maxIter) {
      if (polished) break;
      throw notConverged(`no convergence in ${maxIter} Newton iterations`);
    }
    iterations++;

    let step: { point: Point; theta: Float64Array } | null = null;
    if (factor) {
      // Dense path: first try a full step with the last Cholesky factor (no new Hessian). It is kept
      // only if it cuts ‖∇J‖ at least tenfold (polishing: lowers it at all); else a fresh Newton step.
      const d = cur.grad.map((v) => -v);
      choleskySolve(factor, P, d);
      step = lineSearch(d, true);
      if (step && step.point.gradNorm > (polished ? 0.5 : 0.1) * cur.gradNorm) step = null;
      if (!step && polished) break; // a fresh Hessian is not worth it for a converged iterate
    }
    if (!step) {
      // Newton direction d = −H⁻¹ ∇J at the current iterate. The curvature code only indexes h,
      // so a float64 h is read exactly as it is.
      const view: HeadRows = { n, C, D: rows.D, bias: rows.bias, h: rows.h, labels: rows.labels, g: cur.g };
      let d: Float64Array;
      if (method === 'newton') {
        factor = denseHessian(view, damping, signal);
        cholesky(factor, P);
        hessians++;
        d = cur.grad.map((v) => -v);
        choleskySolve(factor, P, d);
      } else {
        // The preconditioner need not track the iterate closely: rebuild it only while far from the optimum.
        if (!ekfac || ekfacGradNorm > 1e-3) {
          ekfac = new Ekfac(view, damping, signal);
          ekfacGradNorm = cur.gradNorm;
        }
        // Inexact Newton forcing term: loose far away, ‖r‖ ≤ ‖∇J‖² near the end (quadratic rate),
        // and never looser than a tenth of the target gradient.
        const eta = Math.max(Math.min(0.1, cur.gradNorm, (0.1 * tol) / cur.gradNorm), 1e-13);
        const r = solveCg(view, damping, [cur.grad.map((v) => -v)], ekfac, { tol: eta, signal });
        d = r.X[0];
        cgIterations += r.iterations;
      }
      step = lineSearch(d, false);
      if (!step) {
        if (polished) break; // the polishing step could not improve on a converged iterate: keep it
        throw notConverged('the line search could not decrease the objective along the Newton direction');
      }
      if (polished && step.point.gradNorm >= cur.gradNorm) break;
    }
    spare = cur.g;
    theta = step.theta;
    cur = step.point;
  }
  if (signal?.aborted) throw new CancelledError();
  return { theta, gradNorm: cur.gradNorm, iterations, hessians, objective: cur.J, method, cgIterations };
}

/** Refit without the rows in `remove` (their terms dropped, 1/n kept), warm-started from the full-data optimum. */
export function refitWithout(
  rows: RefitRows,
  damping: number,
  thetaFull: Float64Array,
  remove: number[],
  opts: Omit<RefitOptions, 'include'> = {},
): RefitResult {
  const include = new Uint8Array(rows.n).fill(1);
  for (const i of remove) {
    if (!Number.isInteger(i) || i < 0 || i >= rows.n)
      throw new InfluenceError(
        'ROW_OUT_OF_RANGE',
        `row ${i} does not exist: the training data has ${rows.n} rows (0-based)`,
      );
    include[i] = 0;
  }
  return refitHead(rows, damping, thetaFull, { ...opts, include });
}

/** What refitting the head changed. */
export interface RefitChange {
  /** ‖∇J‖ of the shipped head and of the refit one (on θ). */
  gradNormBefore: number;
  gradNormAfter: number;
  /** Training rows whose prediction changed, and the largest change of any training logit. */
  trainPredictionsChanged: number;
  maxLogitChange: number;
}

/** The rows' logits, g and loss at head θ (their inputs h unchanged). Rows without a label are taken for class 0. */
export function rowsAt(
  rows: Pick<HeadRows, 'n' | 'C' | 'D' | 'bias' | 'h' | 'labels'>,
  theta: Float64Array,
): { z: Float64Array; g: Float64Array; loss: Float64Array } {
  const { n, C } = rows;
  const z = new Float64Array(n * C);
  const g = new Float64Array(n * C);
  const loss = new Float64Array(n);
  for (let i = 0; i < n; i++) logits(rows, theta, rows.h, i, z.subarray(i * C, (i + 1) * C));
  lossAndSignal(taskFor(C), z, rows.labels, n, loss, g);
  return { z, g, loss };
}

/**
 * The head refit to the exact optimum of J at λ' (float64 Newton), and the rows as that head sees
 * them: the same inputs h, with z, g and the loss recomputed.
 */
export function refitRows<R extends HeadRows & { z: Float64Array; loss: Float64Array }>(
  rows: R,
  theta0: Float64Array,
  effectiveDamping: number,
  scale: number,
  opts: Pick<RefitOptions, 'signal' | 'onProgress'> = {},
): { rows: R; theta: Float64Array; change: Omit<RefitChange, 'gradNormBefore'> } {
  const { n, C } = rows;
  const task = taskFor(C);
  const fit = refitHead(rows, effectiveDamping, theta0, opts);
  const { z, g, loss } = rowsAt(rows, fit.theta);
  let changed = 0;
  let maxLogitChange = 0;
  for (let i = 0; i < n; i++) {
    const before = task.prediction(rows.z.subarray(i * C, (i + 1) * C)).predicted;
    if (task.prediction(z.subarray(i * C, (i + 1) * C)).predicted !== before) changed++;
    for (let c = 0; c < C; c++) maxLogitChange = Math.max(maxLogitChange, Math.abs(z[i * C + c] - rows.z[i * C + c]));
  }
  return {
    rows: { ...rows, z, g, loss },
    theta: fit.theta,
    change: { gradNormAfter: Math.abs(scale) * fit.gradNorm, trainPredictionsChanged: changed, maxLogitChange },
  };
}

/**
 * A refit for large problems (the fast path's softmax heads): damped Newton steps whose direction
 * comes from a curvature already built (a chord method: H fixed at the head it was built for), and
 * whose objective and gradient are float64 ORT passes over the rows; rows in `remove` drop their
 * terms (the 1/n is kept). When a step cuts ‖∇J‖ by less than 4× and `rebuild` is given, the
 * curvature is rebuilt at the current head (one Hessian pass), so that a head far from the optimum
 * still converges fast; the curvature last used comes back for refits that start from the result.
 */
export async function refitWithCurvature(
  rows: HeadRows,
  damping: number,
  theta0: Float64Array,
  curv: Curvature,
  opts: {
    remove?: number[];
    tol?: number;
    maxIter?: number;
    signal?: AbortSignal;
    rebuild?: (theta: Float64Array) => Promise<Curvature>;
  } = {},
): Promise<{ theta: Float64Array; gradNorm: number; iterations: number; curv: Curvature }> {
  const { n, C, D, bias } = rows;
  const { P } = headDims(rows);
  const tol = opts.tol ?? 1e-10;
  const maxIter = opts.maxIter ?? 100;
  const head = new HeadFeed(rows, true);
  const w = new Float64Array(n).fill(1);
  for (const i of opts.remove ?? []) w[i] = 0;
  const kernel = await objectiveKernel({ C, D, bias });
  const at = async (theta: Float64Array): Promise<{ J: number; grad: Float64Array; norm: number }> => {
    const grad = new Float64Array(P);
    let loss = 0;
    await overChunks(
      n,
      kernel,
      (start, k) => ({
        ...head.chunk(start, k),
        theta: f64(theta, [C, P / C]),
        labels: i32(rows.labels.subarray(start, start + k), [k]),
        w: f64(w.subarray(start, start + k), [k, 1]),
      }),
      (_start, _k, out) => {
        addInto(grad, out.grad.data as Float64Array);
        loss += (out.loss.data as Float64Array)[0];
      },
      opts.signal,
    );
    for (let q = 0; q < P; q++) grad[q] = grad[q] / n + damping * theta[q];
    return { J: loss / n + 0.5 * damping * dot(theta, theta), grad, norm: Math.sqrt(dot(grad, grad)) };
  };
  /** One step along −H⁻¹∇J with backtracking (Armijo on J; where J cannot tell, a smaller gradient decides). */
  const step = async (theta: Float64Array, cur: Awaited<ReturnType<typeof at>>, c: Curvature) => {
    const [d] = await c.solve([cur.grad], opts.signal);
    const slope = -dot(cur.grad, d);
    for (let t = 1; t >= 1e-6; t /= 2) {
      const cand = theta.map((v, q) => v - t * d[q]);
      const next = await at(cand);
      if (next.J <= cur.J + 1e-4 * t * slope || (-t * slope <= 1e-13 * Math.abs(cur.J) && next.norm < cur.norm))
        return { theta: cand, next };
    }
    return null;
  };
  try {
    let theta = Float64Array.from(theta0);
    let cur = await at(theta);
    let it = 0;
    for (; it < maxIter && cur.norm > tol; it++) {
      let s = await step(theta, cur, curv);
      if (!s && opts.rebuild) {
        curv = await opts.rebuild(theta);
        s = await step(theta, cur, curv);
      }
      if (!s) break;
      if (s.next.norm > 0.25 * cur.norm && opts.rebuild) curv = await opts.rebuild(s.theta);
      theta = s.theta;
      cur = s.next;
    }
    return { theta, gradNorm: cur.norm, iterations: it, curv };
  } finally {
    await kernel.release();
  }
}
