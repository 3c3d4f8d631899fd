/**
 * Curvature policy: the budgets that decide how H⁻¹ is applied for a problem of a given size, and
 * the damping λ. Nothing here touches the rows beyond their sizes, except the damping rule.
 */
import { InfluenceError, type Progress } from '../errors';
import { dot } from '../linalg';
import { headDims, rowInput, type HeadRows, type HeadShape } from '../task/head';
import { curvatureTrace, taskFor } from '../task/loss';
import { impliedL2 } from '../task/fit';
import type { HessianStats } from './hessian';

export type SolverKind = 'cholesky' | 'cg';
export type SelfInfluenceMethod = 'exact' | 'ekfac';
/**
 * How the numbers are computed. 'exact': float64 JS throughout (explicit Hessian and Cholesky, or
 * CG with float64 Hessian-vector products). 'fast': for large problems, CG whose Hessian-vector
 * products, the EK-FAC statistics and the per-row products run as small onnxruntime graphs
 * (float32 products where the results keep 1e-5 relative accuracy, float64 elsewhere).
 */
export type ComputePath = 'exact' | 'fast';

/** The exact-self-influence budget: n·P² multiply-adds. */
export const EXACT_BUDGET = 5e10;
/**
 * Largest P for which the exact path forms and inverts the explicit P×P Hessian (float64 ORT
 * products: about 2P³ flops, 1–2 s at P = 2570 on these two cores; 3 P² float64 in memory).
 */
export const DENSE_MAX_P = 3000;
/** Largest P for which the refit's Newton steps factor the explicit Hessian in float64 JS (about P³/3 flops each). */
export const REFIT_DENSE_MAX_P = 1000;
/**
 * Largest P for which the fast path forms the explicit Hessian (P² float64: 134 MB at 4096). Forming
 * it costs about as much as 18 block-CG iterations of matrix-free products (one pass of
 * (C+1)(D̃+1)/2 weighted Grams against (C−1)·C directions per iteration), and it is cached: later
 * solves on the same rows need no pass over them at all.
 */
export const FAST_DENSE_MAX_P = 4096;

/** Where the fast path keeps its curvature between runs: named sets of float64 arrays, valid only with the rows they came from. */
export interface CurvatureStore {
  load(name: string, signal?: AbortSignal): Promise<Float64Array[] | null>;
  save(name: string, arrays: Float64Array[]): Promise<void>;
}

/** The method choices a caller may force; by default they follow from the problem's size. */
export interface MethodOptions {
  /** Force a solver; by default Cholesky when the explicit Hessian is affordable. */
  solver?: SolverKind;
  /** Force the self-influence method; by default exact when n·P² ≤ EXACT_BUDGET. */
  selfInfluence?: SelfInfluenceMethod;
  /** Force the computation path; by default 'fast' for the problems that default to CG + EK-FAC. */
  path?: ComputePath;
  /** The fast path's Hessian: explicit (P ≤ FAST_DENSE_MAX_P, the default there) or matrix-free products. */
  hessian?: 'explicit' | 'matrix-free';
}

/** Everything that builds a curvature: the method choices, where to keep it, and its run controls. */
export interface CurvatureOptions extends MethodOptions {
  /** Reuse (and keep) the fast path's curvature across runs. */
  store?: CurvatureStore | null;
  /** The explicit Hessian's sums, if already formed during the forward pass (HessianFeeder). */
  explicitHessian?: HessianStats | null;
  signal?: AbortSignal;
  onProgress?: Progress;
}

/** Solver, self-influence method and path for a problem, from the options and its size. */
export function chooseMethods(
  rows: Pick<HeadRows, 'n' | 'C' | 'D' | 'bias' | 'h'>,
  opts: MethodOptions,
): { solver: SolverKind; selfMethod: SelfInfluenceMethod; path: ComputePath } {
  const { P } = headDims(rows);
  const dense = rows.n * P * P <= EXACT_BUDGET && P <= DENSE_MAX_P;
  const large = !dense || opts.path === 'fast';
  const solver = opts.solver ?? (large ? 'cg' : 'cholesky');
  const selfMethod = opts.selfInfluence ?? (large ? 'ekfac' : 'exact');
  // By default the fast path serves the large problems that it can (CG + EK-FAC, float32 h as ORT gives it).
  // The fast path solves the class-mean part exactly (A1 = 0), which a binary head does not have.
  const meanFree = taskFor(rows.C).meanFree;
  const fastable = solver === 'cg' && selfMethod === 'ekfac' && meanFree;
  const path = opts.path ?? (!dense && fastable && rows.h instanceof Float32Array ? 'fast' : 'exact');
  if (path === 'fast' && !fastable) {
    throw new InfluenceError(
      'BAD_OPTION',
      meanFree
        ? `the fast path needs the CG solver and EK-FAC self-influence (got ${solver} and ${selfMethod})`
        : 'the fast path serves softmax heads only; a binary head uses the exact path',
    );
  }
  return { solver, selfMethod, path };
}

/** Whether the fast path forms the explicit Hessian for P parameters: by default while P ≤ FAST_DENSE_MAX_P. */
export function explicitHessian(P: number, opts: Pick<MethodOptions, 'hessian'>): boolean {
  return (opts.hessian ?? (P <= FAST_DENSE_MAX_P ? 'explicit' : 'matrix-free')) === 'explicit';
}

/**
 * From how many training rows the fast path with the explicit Hessian is chosen for a head, under
 * these options (as chooseMethods and FastCurvature.create decide); null if it never is.
 */
export function explicitHessianFrom(head: HeadShape, opts: MethodOptions): number | null {
  const { P } = headDims(head);
  if (!explicitHessian(P, opts) || !taskFor(head.C).meanFree) return null;
  if (opts.path === 'exact' || (opts.solver ?? 'cg') !== 'cg' || (opts.selfInfluence ?? 'ekfac') !== 'ekfac')
    return null;
  if (opts.path === 'fast' || P > DENSE_MAX_P) return 0;
  return Math.floor(EXACT_BUDGET / (P * P)) + 1;
}

/** `--damping`: a value, or a rule. */
export type DampingOption = number | 'auto' | 'trace' | 'implied';

/** What the damping rules read of the model: its metadata L2 and its (effective) head. */
export interface DampingModel {
  l2: number | null;
  /** θ' = sθ, the head the rows hold. */
  theta: Float64Array;
  /** s, the factor on the head's logits. */
  scale: number;
}

/** λ as the user states it (on θ), and λ for the curvature of the rows (on the logits the rows hold). */
export interface Damping {
  damping: number;
  /**
   * When the model's logits are s·z (a temperature after the head), the rows hold the effective head
   * θ' = sθ, whose objective has λ' = λ/s²: the same influence, refits and scores as θ at λ.
   */
  effective: number;
  rule: string;
  /** The L2 the head's gradient implies (on θ) and how well stationarity fits it (when that rule was considered). */
  implied: { lambda: number; residual: number } | null;
}

/** What `auto` uses when the model carries no influence_lens.l2 (chosen by LDS against retraining: README). */
export const AUTO_RULE: 'trace' | 'implied' = 'implied';

/** The trace rule's λ' = 1e-3 × the mean eigenvalue of the undamped Hessian, trace(H₀)/P, and that mean. */
function traceRule(rows: HeadRows): { lambda: number; meanEigenvalue: number } {
  const { C, n } = rows;
  const { Dt, P } = headDims(rows);
  const x = new Float64Array(Dt);
  let tr = 0;
  for (let i = 0; i < n; i++) {
    rowInput(rows, i, x);
    tr += curvatureTrace(rows.g, rows.labels, i, C) * dot(x, x);
  }
  const meanEigenvalue = tr / n / P;
  return { lambda: Math.max(1e-3 * meanEigenvalue, 1e-8), meanEigenvalue };
}

/**
 * `--damping X|auto|trace|implied` to λ and the rule that gave it:
 * - X: as given;
 * - trace: 1e-3 × trace(H₀)/P, a thousandth of the mean eigenvalue of the undamped Hessian;
 * - implied: the L2 the head's gradient implies at stationarity (fit.ts impliedL2), clamped to
 *   [the trace rule, trace(H₀)/P]; the trace rule when it implies none (λ̂ ≤ 0);
 * - auto: the model's metadata `influence_lens.l2` when present (the λ it was trained with),
 *   else AUTO_RULE.
 * λ is never 0, because (diag p − ppᵀ)·1 = 0 makes H₀ singular.
 */
export function resolveDamping(
  option: DampingOption | undefined,
  rows: HeadRows,
  model: DampingModel,
  G: Float64Array,
): Damping {
  const s2 = model.scale * model.scale;
  const on = (effective: number, rule: string, implied: Damping['implied'] = null): Damping => ({
    damping: effective * s2,
    effective,
    rule,
    implied,
  });
  if (typeof option === 'number') {
    if (!(option > 0) || !Number.isFinite(option))
      throw new InfluenceError(
        'BAD_OPTION',
        `--damping must be a positive number or auto, trace or implied; got ${option}`,
      );
    return { damping: option, effective: option / s2, rule: '--damping', implied: null };
  }
  const rule = option ?? 'auto';
  if (rule === 'auto' && model.l2 !== null)
    return { damping: model.l2, effective: model.l2 / s2, rule: 'model metadata influence_lens.l2', implied: null };
  const trace = traceRule(rows);
  const traceText = '1e-3 × trace(H₀)/P';
  if (rule === 'trace' || (rule === 'auto' && AUTO_RULE === 'trace'))
    return on(trace.lambda, rule === 'auto' ? `${traceText} (no influence_lens.l2 in the model)` : traceText);
  const fit = impliedL2(G, model.theta);
  const implied = { lambda: fit.lambda * s2, residual: fit.residual };
  if (!(fit.lambda > trace.lambda))
    return on(
      trace.lambda,
      `${traceText}: the head's gradient implies no larger L2 (λ̂ = ${fit.lambda.toPrecision(3)})`,
      implied,
    );
  if (fit.lambda > trace.meanEigenvalue)
    return on(
      trace.meanEigenvalue,
      `trace(H₀)/P, the ceiling of the L2 implied by the head's gradient (λ̂ = ${fit.lambda.toPrecision(3)})`,
      implied,
    );
  return on(
    fit.lambda,
    `the L2 implied by the head's gradient at stationarity (residual ${fit.residual.toPrecision(2)})`,
    implied,
  );
}
