/**
 * Curvature policy: the budgets that decide how H⁻¹ is applied for a problem of a given size, and
 * the damping λ. Nothing here touches the rows beyond their sizes, except the damping rule.
 */
import { InfluenceError, type Progress } from '../errors';
import { dot } from '../linalg';
import { headDims, rowInput, type HeadRows, type HeadShape } from '../task/head';
import { curvatureTrace, taskFor } from '../task/loss';
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
/** Largest P for which the exact path forms and factors the explicit P×P Hessian. */
export const DENSE_MAX_P = 3000;
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
export function chooseMethods(rows: Pick<HeadRows, 'n' | 'C' | 'D' | 'bias' | 'h'>, opts: MethodOptions): { solver: SolverKind; selfMethod: SelfInfluenceMethod; path: ComputePath } {
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
    throw new InfluenceError('BAD_OPTION', meanFree ? `the fast path needs the CG solver and EK-FAC self-influence (got ${solver} and ${selfMethod})` : 'the fast path serves softmax heads only; a binary head uses the exact path');
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
  if (opts.path === 'exact' || (opts.solver ?? 'cg') !== 'cg' || (opts.selfInfluence ?? 'ekfac') !== 'ekfac') return null;
  if (opts.path === 'fast' || P > DENSE_MAX_P) return 0;
  return Math.floor(EXACT_BUDGET / (P * P)) + 1;
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
}

/**
 * The `auto` damping rule: λ from the model's metadata (`influence_lens.l2`) when present,
 * else 1e-3 × the mean eigenvalue of the undamped Hessian, trace(H₀)/P (floored at 1e-8).
 */
export function autoDamping(rows: HeadRows, metadataL2: number | null, scale = 1): Damping {
  const s2 = scale * scale;
  if (metadataL2 !== null) return { damping: metadataL2, effective: metadataL2 / s2, rule: 'model metadata influence_lens.l2' };
  const { C, n } = rows;
  const { Dt, P } = headDims(rows);
  const x = new Float64Array(Dt);
  let tr = 0;
  for (let i = 0; i < n; i++) {
    rowInput(rows, i, x);
    tr += curvatureTrace(rows.g, rows.labels, i, C) * dot(x, x);
  }
  // The trace on θ is s² times the trace on the rows' effective head.
  const effective = Math.max(1e-3 * (tr / n / P), 1e-8 / s2);
  return { damping: effective * s2, effective, rule: '1e-3 × trace(H₀)/P (no influence_lens.l2 in the model)' };
}

/** `--damping X|auto` to a value and the rule that gave it. */
export function resolveDamping(option: number | 'auto' | undefined, rows: HeadRows, metadataL2: number | null, scale = 1): Damping {
  if (option === undefined || option === 'auto') return autoDamping(rows, metadataL2, scale);
  if (!(option > 0) || !Number.isFinite(option)) throw new InfluenceError('BAD_OPTION', `--damping must be a positive number or 'auto'; got ${option}`);
  return { damping: option, effective: option / (scale * scale), rule: '--damping' };
}
