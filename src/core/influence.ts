/**
 * Influence of every training row on one prediction, for the final linear layer.
 *
 * Conventions (README, "The maths"): θ = [W | b] flattened row-major (index c·D̃ + j, D̃ = D + 1
 * with a bias), x̃ = [h; 1], per-example gradient ∇L_i = g_i ⊗ x̃_i with g = softmax(z) − e_y,
 * H = (1/n) Σ_i A_i ⊗ x̃_i x̃_iᵀ + λI with A_i = diag(p_i) − p_i p_iᵀ.
 *
 * Every right-hand side we need for one test row lies in span{e_c ⊗ x̃_t}, so C solves give
 * S_c = H⁻¹(e_c ⊗ x̃_t), and every score reduces to T_i[c', c] = (e_c' ⊗ x̃_t)ᵀ H⁻¹ (e_c ⊗ x̃_i)
 * = S_c'[c,:]·x̃_i, formed one row at a time (never n·P numbers at once).
 *
 * Two paths compute the same numbers. The exact path (small problems, and every check against
 * numpy) is plain float64 JS. The fast path (the default where n·P² > 5e10) runs the dense
 * products as small onnxruntime graphs (ortmath.ts): EK-FAC statistics in float64, block CG whose
 * Hessian-vector products are float32 GEMMs summed per chunk in float64, and one pass per row
 * chunk for every per-row score; it agrees with the exact path to ~1e-6 relative.
 */
import { CancelledError, InfluenceError, throwIfAborted, type Progress } from './errors';
import { addInto, cholesky, dot, inverseFromCholesky, select, solveSmall, symmetricEigen } from './linalg';
import { HessianSum, probabilities, type HessianStats } from './hessian';
import { denseHvpKernel, f32, f64, gramKernel, hvpKernel, i32, i64, lambdaKernel, preconditionKernel, rowKernel, type Feed, type HeadShape, type Kernel } from './ortmath';

/** The head's view of the training rows: its inputs h and backprop signals g. */
export interface HeadRows {
  n: number;
  C: number;
  D: number;
  bias: boolean;
  /** n×D, the head inputs (float32 as ORT computes them; float64 for checks). */
  h: Float32Array | Float64Array;
  /** n×C, g = softmax(z) − onehot(y), float64 from the logits. */
  g: Float64Array;
  labels: Int32Array;
}

/**
 * Where the fast path keeps its curvature between runs: the disk cache, beside the rows it was
 * computed from and valid only with them. Named sets of float64 arrays.
 */
export interface CurvatureStore {
  load(name: string, signal?: AbortSignal): Promise<Float64Array[] | null>;
  save(name: string, arrays: Float64Array[]): Promise<void>;
}

export interface TestPoint {
  /** x̃_t = [h_t; 1] (or h_t without a bias), float64. */
  x: Float64Array;
  /** g_t for the test row's label. */
  g: Float64Array;
  /** logits z_t, float64. */
  z: Float64Array;
  /** The label that g_t is taken for. */
  label: number;
}

export type SolverKind = 'cholesky' | 'cg';
export type SelfInfluenceMethod = 'exact' | 'ekfac';

export interface ExplainOptions {
  damping: number;
  /** Force a solver; by default Cholesky when the explicit Hessian is affordable. */
  solver?: SolverKind;
  /** Force the self-influence method; by default exact when n·P² ≤ 5e10. */
  selfInfluence?: SelfInfluenceMethod;
  /** Force the computation path; by default 'fast' for the problems that default to CG + EK-FAC. */
  path?: ComputePath;
  /** The fast path's Hessian: explicit (P ≤ FAST_DENSE_MAX_P, the default there) or matrix-free products. */
  hessian?: 'explicit' | 'matrix-free';
  /** Reuse (and keep) the fast path's curvature across runs. */
  store?: CurvatureStore | null;
  /** The explicit Hessian's sums, if already formed during the forward pass (HessianFeeder). */
  explicitHessian?: HessianStats | null;
  signal?: AbortSignal;
  onProgress?: Progress;
}

export interface FlipSet {
  rows: number[];
  newClass: number;
}

export interface ExplainScores {
  predicted: number;
  margin: number;
  /** The runner-up class c* that defines the margin. */
  runnerUp: number;
  influence: Float64Array;
  lossChangeIfRemoved: Float64Array;
  lossChangeIfRemovedNewton: Float64Array;
  selfInfluence: Float64Array;
  relativeInfluence: Float64Array;
  classificationInfluence: Float64Array;
  flip: FlipSet | null;
  solver: SolverKind;
  selfInfluenceMethod: SelfInfluenceMethod;
  cgIterations: number | null;
  seconds: Record<string, number>;
}

/** The exact-self-influence budget from the spec: n·P² multiply-adds. */
export const EXACT_BUDGET = 5e10;
/** Largest P for which we form and factor the explicit P×P Hessian. */
export const DENSE_MAX_P = 3000;

export function headDims(rows: Pick<HeadRows, 'C' | 'D' | 'bias'>): { Dt: number; P: number } {
  const Dt = rows.D + (rows.bias ? 1 : 0);
  return { Dt, P: rows.C * Dt };
}

/** Writes x̃_i into out (length D̃). */
export function rowInput(rows: HeadRows, i: number, out: Float64Array): void {
  const { D, h } = rows;
  const o = i * D;
  for (let j = 0; j < D; j++) out[j] = h[o + j];
  if (rows.bias) out[D] = 1;
}

/** p_i = g_i + e_{y_i}; A_i = diag(p) − ppᵀ into A (C×C). */
function rowCurvature(rows: HeadRows, i: number, p: Float64Array, A: Float64Array): void {
  const { C, g, labels } = rows;
  for (let c = 0; c < C; c++) p[c] = g[i * C + c];
  p[labels[i]] += 1;
  for (let c = 0; c < C; c++) {
    for (let d = 0; d < C; d++) A[c * C + d] = -p[c] * p[d];
    A[c * C + c] += p[c];
  }
}

/**
 * The `auto` damping rule: λ from the model's metadata (`influence_lens.l2`) when present,
 * else 1e-3 × the mean eigenvalue of the undamped Hessian, trace(H₀)/P (floored at 1e-8).
 */
export function autoDamping(rows: HeadRows, metadataL2: number | null): { damping: number; rule: string } {
  if (metadataL2 !== null) return { damping: metadataL2, rule: 'model metadata influence_lens.l2' };
  const { C, n } = rows;
  const { Dt, P } = headDims(rows);
  const x = new Float64Array(Dt);
  let tr = 0;
  for (let i = 0; i < n; i++) {
    rowInput(rows, i, x);
    let trA = 0;
    for (let c = 0; c < C; c++) {
      const pc = rows.g[i * C + c] + (rows.labels[i] === c ? 1 : 0);
      trA += pc - pc * pc;
    }
    tr += trA * dot(x, x);
  }
  const damping = Math.max(1e-3 * (tr / n / P), 1e-8);
  return { damping, rule: '1e-3 × trace(H₀)/P (no influence_lens.l2 in the model)' };
}

/** `--damping X|auto` to a value and the rule that gave it. */
export function resolveDamping(option: number | 'auto' | undefined, rows: HeadRows, metadataL2: number | null): { damping: number; rule: string } {
  if (option === undefined || option === 'auto') return autoDamping(rows, metadataL2);
  if (!(option > 0) || !Number.isFinite(option)) throw new InfluenceError('BAD_OPTION', `--damping must be a positive number or 'auto'; got ${option}`);
  return { damping: option, rule: '--damping' };
}

/** Explicit damped Hessian, P×P. Cost n·C²·D̃²/4 multiply-adds. */
export function denseHessian(rows: HeadRows, damping: number, signal?: AbortSignal, onProgress?: Progress): Float64Array {
  const { n, C } = rows;
  const { Dt, P } = headDims(rows);
  const H = new Float64Array(P * P);
  const x = new Float64Array(Dt);
  const p = new Float64Array(C);
  const A = new Float64Array(C * C);
  const xx = new Float64Array(Dt * Dt);
  for (let i = 0; i < n; i++) {
    if ((i & 255) === 0) {
      throwIfAborted(signal);
      onProgress?.('hessian', i, n);
    }
    rowInput(rows, i, x);
    rowCurvature(rows, i, p, A);
    for (let j = 0; j < Dt; j++) for (let k = j; k < Dt; k++) xx[j * Dt + k] = x[j] * x[k];
    for (let c = 0; c < C; c++) {
      for (let d = c; d < C; d++) {
        const a = A[c * C + d];
        if (a === 0) continue;
        const base = c * Dt * P + d * Dt;
        for (let j = 0; j < Dt; j++) {
          const row = base + j * P;
          const xr = j * Dt;
          for (let k = j; k < Dt; k++) H[row + k] += a * xx[xr + k];
        }
      }
    }
  }
  // Each block is symmetric and H_dc = H_cdᵀ: mirror the computed upper triangles.
  const inv = 1 / n;
  for (let c = 0; c < C; c++) {
    for (let d = c; d < C; d++) {
      for (let j = 0; j < Dt; j++) {
        for (let k = j; k < Dt; k++) {
          const v = H[(c * Dt + j) * P + d * Dt + k] * inv;
          H[(c * Dt + j) * P + d * Dt + k] = v;
          H[(c * Dt + k) * P + d * Dt + j] = v;
          H[(d * Dt + j) * P + c * Dt + k] = v;
          H[(d * Dt + k) * P + c * Dt + j] = v;
        }
      }
    }
  }
  for (let q = 0; q < P; q++) H[q * P + q] += damping;
  return H;
}

/** Hessian-vector products in factored form for R right-hand sides at once (each C×D̃). */
export function hessianVectorProducts(rows: HeadRows, damping: number, V: Float64Array[], signal?: AbortSignal): Float64Array[] {
  const { n, C } = rows;
  const { Dt, P } = headDims(rows);
  const R = V.length;
  const out = V.map(() => new Float64Array(P));
  const x = new Float64Array(Dt);
  const p = new Float64Array(C);
  const u = new Float64Array(C);
  for (let i = 0; i < n; i++) {
    if ((i & 4095) === 0) throwIfAborted(signal);
    rowInput(rows, i, x);
    for (let c = 0; c < C; c++) p[c] = rows.g[i * C + c];
    p[rows.labels[i]] += 1;
    for (let r = 0; r < R; r++) {
      const v = V[r];
      const o = out[r];
      let s = 0;
      for (let c = 0; c < C; c++) {
        let t = 0;
        const vc = c * Dt;
        for (let j = 0; j < Dt; j++) t += v[vc + j] * x[j];
        u[c] = t;
        s += p[c] * t;
      }
      for (let c = 0; c < C; c++) {
        const w = p[c] * (u[c] - s);
        if (w === 0) continue;
        const oc = c * Dt;
        for (let j = 0; j < Dt; j++) o[oc + j] += w * x[j];
      }
    }
  }
  const inv = 1 / n;
  for (let r = 0; r < R; r++) for (let q = 0; q < P; q++) out[r][q] = out[r][q] * inv + damping * V[r][q];
  return out;
}

/**
 * Eigenvalue-corrected Kronecker factorisation (George et al. 2018) of the head's Hessian:
 * eigenbases of E[A] and E[x̃x̃ᵀ], with the exact diagonal of H₀ in that basis.
 * Used to approximate self-influence when the exact cost is too high, and as the CG preconditioner.
 */
export class Ekfac {
  readonly UA: Float64Array; // C×C, eigenvectors as columns
  readonly US: Float64Array; // D̃×D̃
  /** Λ[a·D̃ + b] + λ. */
  readonly denom: Float64Array;

  constructor(private readonly rows: HeadRows, damping: number, signal?: AbortSignal) {
    const { n, C } = rows;
    const { Dt } = headDims(rows);
    const Abar = new Float64Array(C * C);
    const S = new Float64Array(Dt * Dt);
    const x = new Float64Array(Dt);
    const p = new Float64Array(C);
    const A = new Float64Array(C * C);
    for (let i = 0; i < n; i++) {
      if ((i & 4095) === 0) throwIfAborted(signal);
      rowInput(rows, i, x);
      rowCurvature(rows, i, p, A);
      for (let q = 0; q < C * C; q++) Abar[q] += A[q];
      for (let j = 0; j < Dt; j++) for (let k = j; k < Dt; k++) S[j * Dt + k] += x[j] * x[k];
    }
    for (let j = 0; j < Dt; j++) for (let k = j; k < Dt; k++) S[k * Dt + j] = S[j * Dt + k];
    this.UA = symmetricEigen(Abar, C).vectors;
    this.US = symmetricEigen(S, Dt).vectors;
    const lam = new Float64Array(C * Dt);
    const xs = new Float64Array(Dt);
    const w = new Float64Array(C);
    for (let i = 0; i < n; i++) {
      if ((i & 4095) === 0) throwIfAborted(signal);
      rowInput(rows, i, x);
      rowCurvature(rows, i, p, A);
      this.project(x, xs);
      for (let a = 0; a < C; a++) {
        // w_a = u_aᵀ A_i u_a = Σ p_c u_ca² − (Σ p_c u_ca)².
        let s1 = 0;
        let s2 = 0;
        for (let c = 0; c < C; c++) {
          const u = this.UA[c * C + a];
          s1 += p[c] * u * u;
          s2 += p[c] * u;
        }
        w[a] = s1 - s2 * s2;
      }
      for (let a = 0; a < C; a++) for (let b = 0; b < Dt; b++) lam[a * Dt + b] += w[a] * xs[b] * xs[b];
    }
    this.denom = new Float64Array(C * Dt);
    for (let q = 0; q < C * Dt; q++) this.denom[q] = Math.max(lam[q] / n, 0) + damping;
  }

  /** xs = U_Sᵀ x. */
  project(x: Float64Array, xs: Float64Array): void {
    const Dt = xs.length;
    for (let b = 0; b < Dt; b++) {
      let s = 0;
      for (let j = 0; j < Dt; j++) s += this.US[j * Dt + b] * x[j];
      xs[b] = s;
    }
  }

  /** Approximate H⁻¹ v for v as a C×D̃ matrix: U (Uᵀ v / denom). */
  apply(v: Float64Array): Float64Array {
    const { C } = this.rows;
    const Dt = this.denom.length / C;
    const t = new Float64Array(C * Dt);
    // t = U_Aᵀ V U_S
    const m = new Float64Array(C * Dt);
    for (let c = 0; c < C; c++)
      for (let b = 0; b < Dt; b++) {
        let s = 0;
        for (let j = 0; j < Dt; j++) s += v[c * Dt + j] * this.US[j * Dt + b];
        m[c * Dt + b] = s;
      }
    for (let a = 0; a < C; a++)
      for (let b = 0; b < Dt; b++) {
        let s = 0;
        for (let c = 0; c < C; c++) s += this.UA[c * C + a] * m[c * Dt + b];
        t[a * Dt + b] = s / this.denom[a * Dt + b];
      }
    // back: U_A t U_Sᵀ
    for (let c = 0; c < C; c++)
      for (let b = 0; b < Dt; b++) {
        let s = 0;
        for (let a = 0; a < C; a++) s += this.UA[c * C + a] * t[a * Dt + b];
        m[c * Dt + b] = s;
      }
    const out = new Float64Array(C * Dt);
    for (let c = 0; c < C; c++)
      for (let j = 0; j < Dt; j++) {
        let s = 0;
        for (let b = 0; b < Dt; b++) s += m[c * Dt + b] * this.US[j * Dt + b];
        out[c * Dt + j] = s;
      }
    return out;
  }

  /** Approximate Q_i = (I⊗x̃)ᵀ H⁻¹ (I⊗x̃) into Q (C×C), given xs = U_Sᵀ x̃. */
  quad(xs: Float64Array, Q: Float64Array, scratch: Float64Array): void {
    const { C } = this.rows;
    const Dt = xs.length;
    for (let a = 0; a < C; a++) {
      let s = 0;
      for (let b = 0; b < Dt; b++) s += (xs[b] * xs[b]) / this.denom[a * Dt + b];
      scratch[a] = s;
    }
    for (let c = 0; c < C; c++)
      for (let d = c; d < C; d++) {
        let s = 0;
        for (let a = 0; a < C; a++) s += this.UA[c * C + a] * this.UA[d * C + a] * scratch[a];
        Q[c * C + d] = s;
        Q[d * C + c] = s;
      }
  }
}

/** Preconditioned conjugate gradients for several right-hand sides, sharing each pass over the rows. */
export function solveCg(
  rows: HeadRows,
  damping: number,
  B: Float64Array[],
  pre: Ekfac,
  opts: { tol?: number; maxIter?: number; signal?: AbortSignal; onProgress?: Progress } = {},
): { X: Float64Array[]; iterations: number } {
  const tol = opts.tol ?? 1e-11;
  const maxIter = opts.maxIter ?? 1000;
  const R = B.length;
  const X = B.map((b) => new Float64Array(b.length));
  const Rr = B.map((b) => Float64Array.from(b));
  const Z = Rr.map((r) => pre.apply(r));
  const Pd = Z.map((z) => Float64Array.from(z));
  const rz = Rr.map((r, k) => dot(r, Z[k]));
  const bnorm = B.map((b) => Math.sqrt(dot(b, b)));
  const active = new Set<number>();
  for (let k = 0; k < R; k++) if (bnorm[k] > 0) active.add(k);
  let it = 0;
  while (active.size > 0) {
    if (it >= maxIter) {
      throw new InfluenceError('BAD_OPTION', `conjugate gradients did not converge in ${maxIter} iterations; increase --damping`);
    }
    it++;
    opts.onProgress?.('solve', it, maxIter);
    const ks = [...active];
    const HP = hessianVectorProducts(rows, damping, ks.map((k) => Pd[k]), opts.signal);
    ks.forEach((k, idx) => {
      const hp = HP[idx];
      const alpha = rz[k] / dot(Pd[k], hp);
      const x = X[k];
      const r = Rr[k];
      const pk = Pd[k];
      for (let q = 0; q < x.length; q++) {
        x[q] += alpha * pk[q];
        r[q] -= alpha * hp[q];
      }
      if (Math.sqrt(dot(r, r)) <= tol * bnorm[k]) {
        active.delete(k);
        return;
      }
      const z = pre.apply(r);
      const rzNew = dot(r, z);
      const beta = rzNew / rz[k];
      rz[k] = rzNew;
      for (let q = 0; q < pk.length; q++) pk[q] = z[q] + beta * pk[q];
    });
  }
  return { X, iterations: it };
}

function argmaxExcept(z: Float64Array, except: number): number {
  let best = -1;
  for (let c = 0; c < z.length; c++) if (c !== except && (best < 0 || z[c] > z[best])) best = c;
  return best;
}

/**
 * Shortest set of rows whose removal flips the prediction, per the first-order margin changes
 * d[i·C + c] (the change of z_ŷ − z_c if row i is removed): for each class c ≠ ŷ, the rows sorted
 * by d[i,c] (most negative first, ties by row), and the shortest prefix whose sum reaches
 * −(z_ŷ − z_c).
 */
export function flipSet(d: Float64Array, n: number, C: number, z: Float64Array, predicted: number): FlipSet | null {
  return flipSetOf(n, C, z, predicted, (c, out) => {
    for (let i = 0; i < n; i++) out[i] = d[i * C + c];
  });
}

/**
 * flipSet with the margin changes of class c written into `out` (length n) on demand. Only
 * prefixes shorter than the best so far (and at most ⌈0.05·n⌉) can win, so each class needs only
 * its few most negative values: they are found by selection rather than by sorting all n rows.
 */
export function flipSetOf(n: number, C: number, z: Float64Array, predicted: number, column: (c: number, out: Float64Array) => void): FlipSet | null {
  const limit = Math.ceil(0.05 * n);
  let best: FlipSet | null = null;
  const col = new Float64Array(n);
  const vals = new Float64Array(n);
  const idx = new Int32Array(n);
  for (let c = 0; c < C; c++) {
    if (c === predicted) continue;
    const target = -(z[predicted] - z[c]);
    const most = Math.min(limit, best ? best.rows.length - 1 : limit);
    if (most < 1) continue;
    column(c, col);
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
    for (let j = 0; j < m; j++) if (vals[j] < kth) cand.push(idx[j]);
    for (let j = 0; j < m && cand.length < k; j++) if (vals[j] === kth) cand.push(idx[j]);
    cand.sort((a, b) => col[a] - col[b] || a - b);
    let sum = 0;
    let count = 0;
    for (let j = 0; j < cand.length; j++) {
      sum += col[cand[j]];
      if (sum <= target) {
        count = j + 1;
        break;
      }
    }
    if (count > 0 && count <= limit && (!best || count < best.rows.length)) best = { rows: cand.slice(0, count), newClass: c };
  }
  return best;
}

/**
 * How the numbers are computed. 'exact': float64 JS throughout (explicit Hessian and Cholesky, or
 * CG with float64 Hessian-vector products). 'fast': for large problems, CG whose Hessian-vector
 * products, the EK-FAC statistics and the per-row products run as small onnxruntime graphs
 * (float32 products where the results keep 1e-5 relative accuracy, float64 elsewhere).
 */
export type ComputePath = 'exact' | 'fast';

/** Solver, self-influence method and path for a problem, from the options and its size. */
export function chooseMethods(
  rows: Pick<HeadRows, 'n' | 'C' | 'D' | 'bias' | 'h'>,
  opts: Pick<ExplainOptions, 'solver' | 'selfInfluence' | 'path'>,
): { solver: SolverKind; selfMethod: SelfInfluenceMethod; path: ComputePath } {
  const { P } = headDims(rows);
  const dense = rows.n * P * P <= EXACT_BUDGET && P <= DENSE_MAX_P;
  const large = !dense || opts.path === 'fast';
  const solver = opts.solver ?? (large ? 'cg' : 'cholesky');
  const selfMethod = opts.selfInfluence ?? (large ? 'ekfac' : 'exact');
  // By default the fast path serves the large problems that it can (CG + EK-FAC, float32 h as ORT gives it).
  const fastable = solver === 'cg' && selfMethod === 'ekfac';
  const path = opts.path ?? (!dense && fastable && rows.h instanceof Float32Array ? 'fast' : 'exact');
  if (path === 'fast' && !fastable) {
    throw new InfluenceError('BAD_OPTION', `the fast path needs the CG solver and EK-FAC self-influence (got ${solver} and ${selfMethod})`);
  }
  return { solver, selfMethod, path };
}

/**
 * From how many training rows the fast path with the explicit Hessian is chosen for a head, under
 * these options (as chooseMethods and FastCurvature.create decide); null if it never is.
 */
export function explicitHessianFrom(head: Pick<HeadRows, 'C' | 'D' | 'bias'>, opts: Pick<ExplainOptions, 'solver' | 'selfInfluence' | 'path' | 'hessian'>): number | null {
  const { P } = headDims(head);
  if (!explicitHessian(P, opts)) return null;
  if (opts.path === 'exact' || (opts.solver ?? 'cg') !== 'cg' || (opts.selfInfluence ?? 'ekfac') !== 'ekfac') return null;
  if (opts.path === 'fast' || P > DENSE_MAX_P) return 0;
  return Math.floor(EXACT_BUDGET / (P * P)) + 1;
}

/** Whether the fast path forms the explicit Hessian for P parameters: by default while P ≤ FAST_DENSE_MAX_P. */
export function explicitHessian(P: number, opts: Pick<ExplainOptions, 'hessian'>): boolean {
  return (opts.hessian ?? (P <= FAST_DENSE_MAX_P ? 'explicit' : 'matrix-free')) === 'explicit';
}

/** How H⁻¹ is applied: an explicit factorisation, or CG with an EK-FAC preconditioner. */
export class Curvature {
  readonly solver: SolverKind;
  readonly selfMethod: SelfInfluenceMethod;
  readonly path: ComputePath;
  readonly seconds: Record<string, number> = {};
  cgIterations: number | null = null;
  private Hinv: Float64Array | null = null;
  private ekfac: Ekfac | null = null;
  /** The fast path's state (ORT kernels, EK-FAC factors); null on the exact path. */
  fast: FastCurvature | null = null;
  private readonly Dt: number;
  private readonly P: number;

  private constructor(
    readonly rows: HeadRows,
    readonly damping: number,
    methods: { solver: SolverKind; selfMethod: SelfInfluenceMethod; path: ComputePath },
  ) {
    const { Dt, P } = headDims(rows);
    this.Dt = Dt;
    this.P = P;
    this.solver = methods.solver;
    this.selfMethod = methods.selfMethod;
    this.path = methods.path;
  }

  static async create(rows: HeadRows, damping: number, opts: Pick<ExplainOptions, 'solver' | 'selfInfluence' | 'path' | 'hessian' | 'store' | 'explicitHessian' | 'signal' | 'onProgress'> = {}): Promise<Curvature> {
    if (!(damping > 0) || !Number.isFinite(damping)) throw new InfluenceError('BAD_OPTION', `damping must be a positive number; got ${damping}`);
    const curv = new Curvature(rows, damping, chooseMethods(rows, opts));
    let t0 = performance.now();
    const lap = (name: string) => {
      const t = performance.now();
      curv.seconds[name] = (t - t0) / 1000;
      t0 = t;
    };
    if (curv.path === 'fast') {
      curv.fast = await FastCurvature.create(rows, damping, opts);
      lap(curv.fast.H0 ? 'hessian' : 'ekfac');
      return curv;
    }
    if (curv.solver === 'cholesky' || curv.selfMethod === 'exact') {
      const H = denseHessian(rows, damping, opts.signal, opts.onProgress);
      lap('hessian');
      cholesky(H, curv.P);
      curv.Hinv = inverseFromCholesky(H, curv.P);
      lap('factor');
    }
    if (curv.solver === 'cg' || curv.selfMethod === 'ekfac') {
      curv.ekfac = new Ekfac(rows, damping, opts.signal);
      lap('ekfac');
    }
    return curv;
  }

  /** H⁻¹ b for each b (P-vectors, C×D̃ row-major). */
  async solve(B: Float64Array[], signal?: AbortSignal, onProgress?: Progress): Promise<Float64Array[]> {
    const t0 = performance.now();
    let X: Float64Array[];
    if (this.fast) {
      const r = await this.fast.solve(B, { signal, onProgress });
      this.cgIterations = (this.cgIterations ?? 0) + r.iterations;
      X = r.X;
    } else if (this.solver === 'cholesky') X = B.map((b) => symMatVec(this.Hinv!, b, this.P));
    else {
      const r = solveCg(this.rows, this.damping, B, this.ekfac!, { signal, onProgress });
      this.cgIterations = (this.cgIterations ?? 0) + r.iterations;
      X = r.X;
    }
    this.seconds.solve = (this.seconds.solve ?? 0) + (performance.now() - t0) / 1000;
    return X;
  }

  /** Q = (I⊗x̃)ᵀ H⁻¹ (I⊗x̃), C×C: exact, or EK-FAC (exact path only). */
  quad(x: Float64Array, Q: Float64Array, xs: Float64Array, scratch: Float64Array): void {
    const { C } = this.rows;
    if (this.selfMethod === 'exact') exactQuad(this.Hinv!, x, C, this.Dt, this.P, Q);
    else if (this.ekfac) {
      this.ekfac.project(x, xs);
      this.ekfac.quad(xs, Q, scratch);
    } else throw new Error('Curvature.quad is for the exact path');
  }

  /** Frees the fast path's onnxruntime sessions (they are rebuilt if this curvature is used again). */
  async release(): Promise<void> {
    await this.fast?.release();
  }
}

/**
 * The leverage-corrected Newton weights: given Q = Q_i, A = ∇²_z L_i, g = g_i and Qg, writes
 * w = g + (A/n)(I − Q A/n)⁻¹ Q g (so that Δθ = (1/n) H⁻¹ (w ⊗ x̃_i)). M is C×C scratch.
 */
function newtonWeights(Q: Float64Array, A: Float64Array, g: Float64Array, Qg: Float64Array, n: number, C: number, M: Float64Array, w: Float64Array): void {
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
    rowCurvature(rows, i, this.p, A);
    for (let c = 0; c < C; c++) g[c] = rows.g[i * C + c];
    this.curv.quad(x, Q, this.xs, this.scratch);
    for (let c = 0; c < C; c++) Qg[c] = dot(Q.subarray(c * C, (c + 1) * C), g, C);
    this.self = Math.max(dot(g, Qg, C), 0);
    newtonWeights(Q, A, g, Qg, n, C, M, w);
  }
}

/** The per-row scores of one explain, as either path fills them, and the result they make. */
class ScoreSheet {
  readonly predicted: number;
  readonly runnerUp: number;
  readonly margin: number;
  readonly influence: Float64Array;
  readonly lossChangeIfRemoved: Float64Array;
  readonly newton: Float64Array;
  readonly selfInfluence: Float64Array;
  readonly relativeInfluence: Float64Array;
  readonly classificationInfluence: Float64Array;
  /** p_t = g_t + e_y, for the Newton estimate's exact test loss. */
  readonly testP: Float64Array;

  constructor(
    private readonly n: number,
    private readonly test: TestPoint,
  ) {
    this.predicted = argmaxExcept(test.z, -1);
    this.runnerUp = argmaxExcept(test.z, this.predicted);
    this.margin = test.z[this.predicted] - test.z[this.runnerUp];
    this.influence = new Float64Array(n);
    this.lossChangeIfRemoved = new Float64Array(n);
    this.newton = new Float64Array(n);
    this.selfInfluence = new Float64Array(n);
    this.relativeInfluence = new Float64Array(n);
    this.classificationInfluence = new Float64Array(n);
    this.testP = Float64Array.from(test.g);
    this.testP[test.label] += 1;
  }

  /**
   * Row i: its influence, self-influence, first-order margin change (classification influence)
   * and dz, the change of the test logits under the leverage-corrected Newton step.
   */
  set(i: number, influence: number, self: number, marginChange: number, dz: Float64Array): void {
    this.influence[i] = influence;
    this.lossChangeIfRemoved[i] = -influence / this.n;
    this.classificationInfluence[i] = marginChange;
    this.selfInfluence[i] = self;
    this.relativeInfluence[i] = self > 0 ? influence / Math.sqrt(self) : 0;
    this.newton[i] = lossShift(this.testP, dz, this.test.label);
  }

  result(curv: Curvature, flip: FlipSet | null, seconds: Record<string, number>): ExplainScores {
    return {
      predicted: this.predicted,
      margin: this.margin,
      runnerUp: this.runnerUp,
      influence: this.influence,
      lossChangeIfRemoved: this.lossChangeIfRemoved,
      lossChangeIfRemovedNewton: this.newton,
      selfInfluence: this.selfInfluence,
      relativeInfluence: this.relativeInfluence,
      classificationInfluence: this.classificationInfluence,
      flip,
      solver: curv.solver,
      selfInfluenceMethod: curv.selfMethod,
      cgIterations: curv.cgIterations,
      seconds,
    };
  }
}

export async function explainScores(rows: HeadRows, test: TestPoint, opts: ExplainOptions, curvature?: Curvature): Promise<ExplainScores> {
  const curv = curvature ?? (await Curvature.create(rows, opts.damping, opts));
  try {
    return curv.fast ? await explainFast(rows, test, opts, curv, curv.fast) : await explainExact(rows, test, opts, curv);
  } finally {
    if (!curvature) await curv.release();
  }
}

async function explainExact(rows: HeadRows, test: TestPoint, opts: ExplainOptions, curv: Curvature): Promise<ExplainScores> {
  const { n, C } = rows;
  const { Dt, P } = headDims(rows);
  const { signal, onProgress } = opts;
  const seconds: Record<string, number> = {};
  let t0 = performance.now();

  // S[c'] = H⁻¹ (e_c' ⊗ x̃_t), each C×D̃.
  const rhs = Array.from({ length: C }, (_, c) => {
    const v = new Float64Array(P);
    v.set(test.x, c * Dt);
    return v;
  });
  const S = await curv.solve(rhs, signal, onProgress);
  Object.assign(seconds, curv.seconds);
  t0 = performance.now();

  const sheet = new ScoreSheet(n, test);
  const { predicted, runnerUp } = sheet;
  const marginChange = new Float64Array(n * C); // first-order change of z_ŷ − z_c if row i is removed

  const row = new RowRemoval(curv);
  const { x, g: gi } = row;
  const T = new Float64Array(C * C);
  const Rv = new Float64Array(C);
  const dz = new Float64Array(C);
  for (let i = 0; i < n; i++) {
    if ((i & 1023) === 0) {
      throwIfAborted(signal);
      onProgress?.('scores', i, n);
    }
    row.load(i);
    for (let a = 0; a < C; a++) {
      const Sa = S[a];
      for (let c = 0; c < C; c++) T[a * C + c] = dot(x, Sa.subarray(c * Dt, (c + 1) * Dt), Dt);
    }
    // R = g_tᵀ T: R[c] = ∇L_tᵀ H⁻¹ (e_c ⊗ x̃_i).
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let a = 0; a < C; a++) s += test.g[a] * T[a * C + c];
      Rv[c] = s;
    }
    const infl = -dot(Rv, gi, C);
    const tpg = dot(T.subarray(predicted * C, (predicted + 1) * C), gi, C);
    for (let c = 0; c < C; c++) {
      marginChange[i * C + c] = c === predicted ? 0 : (tpg - dot(T.subarray(c * C, (c + 1) * C), gi, C)) / n;
    }
    // The Newton step moves the test logits by Δz[c'] = (1/n) T[c',:]·w exactly (z is linear in θ);
    // the test loss is evaluated exactly there.
    for (let a = 0; a < C; a++) dz[a] = dot(T.subarray(a * C, (a + 1) * C), row.w, C) / n;
    sheet.set(i, infl, row.self, marginChange[i * C + runnerUp], dz);
  }
  seconds.scores = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const flip = flipSet(marginChange, n, C, test.z, predicted);
  seconds.flip = (performance.now() - t0) / 1000;
  if (signal?.aborted) throw new CancelledError();
  return sheet.result(curv, flip, seconds);
}

/**
 * The fast path of explain. Only C − 1 solves are needed: with A_i 1 = 0, H(1 ⊗ v) = λ(1 ⊗ v), so
 * the class-mean part of every right-hand side is solved exactly, and every score is blind to it
 * (g_i, w_i and g_t sum to 0 over the classes, margins are differences, and the test loss is
 * invariant to a common shift of the logits). The solves are S_c = H⁻¹((e_c − 1/C) ⊗ x̃_t) for
 * c ≠ ŷ, and S_ŷ = −Σ_{c≠ŷ} S_c. One pass over the rows then gives, per row,
 * Y = T g_i and Z = T w_i (T_i[a,c] = S_a[c,:]·x̃_i), from which every score follows.
 */
async function explainFast(rows: HeadRows, test: TestPoint, opts: ExplainOptions, curv: Curvature, fast: FastCurvature): Promise<ExplainScores> {
  const { n, C } = rows;
  const { Dt, P } = headDims(rows);
  const { signal, onProgress } = opts;
  const seconds: Record<string, number> = {};
  const sheet = new ScoreSheet(n, test);
  const { predicted, runnerUp } = sheet;
  const dirs = Array.from({ length: C }, (_, c) => c).filter((c) => c !== predicted);
  const rhs = dirs.map((c) => {
    const v = new Float64Array(P);
    for (let a = 0; a < C; a++) {
      const f = (a === c ? 1 : 0) - 1 / C;
      for (let j = 0; j < Dt; j++) v[a * Dt + j] = f * test.x[j];
    }
    return v;
  });
  const S = await curv.solve(rhs, signal, onProgress);
  Object.assign(seconds, curv.seconds);
  let t1 = performance.now();
  // The class-mean parts (H⁻¹ of 1 ⊗ x̃_t/C, identical for every S_c) drop out of every score.
  for (const s of S) centerClasses(s, C, Dt);

  // The margin changes are kept as the kernel's float32 Y (and Y_ŷ in float64), half the memory
  // of n×C float64; the flip set recomputes each class's column from them, identically.
  const M = dirs.length;
  const yAll = new Float32Array(n * M);
  const yPred = new Float64Array(n);
  const col = new Int32Array(C).fill(-1);
  dirs.forEach((c, m) => (col[c] = m));
  const Y = new Float64Array(C);
  const dz = new Float64Array(C);
  await fast.rowPass({ testS: S, signal, onProgress, stage: 'scores' }, (i, out) => {
    // Y[a] = (e_a ⊗ x̃_t)ᵀ H⁻¹ ∇L_i up to a common shift, for every class a.
    let sy = 0;
    let sz = 0;
    for (let m = 0; m < M; m++) {
      Y[dirs[m]] = out.y[m];
      dz[dirs[m]] = out.z[m] / n;
      sy += out.y[m];
      sz += out.z[m];
    }
    Y[predicted] = -sy;
    dz[predicted] = -sz / n;
    yAll.set(out.y, i * M);
    yPred[i] = -sy;
    sheet.set(i, -dot(test.g, Y, C), Math.max(out.self, 0), (Y[predicted] - Y[runnerUp]) / n, dz);
  });
  seconds.scores = (performance.now() - t1) / 1000;
  t1 = performance.now();
  const flip = flipSetOf(n, C, test.z, predicted, (c, out) => {
    const m = col[c];
    for (let i = 0; i < n; i++) out[i] = (yPred[i] - yAll[i * M + m]) / n;
  });
  seconds.flip = (performance.now() - t1) / 1000;
  if (signal?.aborted) throw new CancelledError();
  return sheet.result(curv, flip, seconds);
}

/** Subtracts the class mean from a C×D̃ matrix (the component along 1 ⊗ v). */
function centerClasses(v: Float64Array, C: number, Dt: number): void {
  for (let j = 0; j < Dt; j++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += v[c * Dt + j];
    s /= C;
    for (let c = 0; c < C; c++) v[c * Dt + j] -= s;
  }
}

/** Rows per onnxruntime run on the fast path. */
const CHUNK = 4096;
/** Bounds on the terms of the Neumann series for the Newton weights (chosen per problem from a sample of rows). */
const NEUMANN_MIN_TERMS = 4;
const NEUMANN_MAX_TERMS = 40;
/** Relative truncation error allowed in the Newton weights' correction. */
const NEUMANN_TOL = 1e-12;
/** Relative residual at which the fast path's CG stops (matrix-free products: each costs a pass over the rows). */
const FAST_CG_TOL = 3e-7;
/** With the explicit Hessian a product costs milliseconds: CG goes on to this residual. */
const DENSE_CG_TOL = 1e-10;
/**
 * Largest P for which the fast path forms the explicit Hessian (P² float64: 134 MB at 4096). Forming
 * it costs about as much as 18 block-CG iterations of matrix-free products (one pass of
 * (C+1)(D̃+1)/2 weighted Grams against (C−1)·C directions per iteration), and it is cached: later
 * solves on the same rows need no pass over them at all.
 */
export const FAST_DENSE_MAX_P = 4096;
/** Cache name (and version) of the fast path's curvature. */
const CURVATURE_ENTRY = 'curvature1';

/** Counters of the fast path (for tests and the bench). */
export const fastStats = { fallbackRows: 0 };

/** What the fast row pass gives for one row. */
export interface FastRow {
  self: number;
  /** Newton weights w (C). */
  w: Float64Array;
  /** Explain: Y = T g and Z = T w over the test directions. */
  y: Float64Array;
  z: Float64Array;
  /** Audit: Q w (C) and Σ_c g_c (U_c·x̃) for the held-out solution U. */
  qw: Float64Array;
  heldOut: number;
}

/**
 * The fast path's curvature: EK-FAC factors computed with float64 ORT products, CG whose
 * Hessian-vector products are float32 ORT products, and one ORT pass per row chunk for the scores.
 */
export class FastCurvature {
  private hvpK: Kernel | null = null;
  private preK: Kernel | null = null;
  /** The explicit H₀ = Σ_i A_i ⊗ x̃_ix̃_iᵀ (P×P float64, not divided by n), or null (matrix-free). */
  H0: Float64Array | null = null;
  /** For the matrix-free HVP kernel: the rows grouped by most probable class, and chunks within the groups. */
  private grouping: { order: BigInt64Array; groups: { start: number; k: number; ref: BigInt64Array }[] } | null = null;
  private readonly ones = new Float32Array(CHUNK).fill(1);
  private readonly h32: Float32Array;
  private readonly pBuf: Float64Array;
  readonly shape: HeadShape;
  UA: Float64Array = new Float64Array(0);
  US: Float64Array = new Float64Array(0);
  private nullColumn = 0;
  private nullLeak = 1;
  denom: Float64Array = new Float64Array(0);

  private constructor(
    readonly rows: HeadRows,
    readonly damping: number,
  ) {
    const { C, D, bias } = rows;
    this.shape = { C, D, bias };
    // A float64 h (checks only) is rounded to float32.
    this.h32 = rows.h instanceof Float32Array ? rows.h : Float32Array.from(rows.h);
    this.pBuf = new Float64Array(CHUNK * C);
  }

  /** Rows grouped by their most probable class (stable), and chunks that stay within a group. */
  private groupRows(): NonNullable<FastCurvature['grouping']> {
    const rows = this.rows;
    const { n, C } = rows;
    const ref = new Int32Array(n);
    const count = new Int32Array(C + 1);
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let c = 1; c < C; c++) if (rows.g[i * C + c] + (rows.labels[i] === c ? 1 : 0) > rows.g[i * C + best] + (rows.labels[i] === best ? 1 : 0)) best = c;
      ref[i] = best;
      count[best + 1]++;
    }
    for (let c = 0; c < C; c++) count[c + 1] += count[c];
    const order = new BigInt64Array(n);
    const next = count.slice(0, C);
    for (let i = 0; i < n; i++) order[next[ref[i]]++] = BigInt(i);
    const groups: { start: number; k: number; ref: BigInt64Array }[] = [];
    for (let c = 0; c < C; c++)
      for (let start = count[c]; start < count[c + 1]; start += CHUNK) groups.push({ start, k: Math.min(CHUNK, count[c + 1] - start), ref: BigInt64Array.of(BigInt(c)) });
    return { order, groups };
  }

  static async create(rows: HeadRows, damping: number, opts: Pick<ExplainOptions, 'hessian' | 'store' | 'explicitHessian' | 'signal' | 'onProgress'> = {}): Promise<FastCurvature> {
    const f = new FastCurvature(rows, damping);
    const { C } = rows;
    const { Dt, P } = headDims(rows);
    const explicit = explicitHessian(P, opts);
    const name = `${CURVATURE_ENTRY}-${explicit ? 'explicit' : 'ekfac'}`;
    // What does not depend on the damping: EK-FAC's eigenvectors U_A, U_S and eigenvalue sums, and (explicit) H₀.
    const sizes = [C * C, Dt * Dt, C * Dt, ...(explicit ? [P * P] : [])];
    const cached = await opts.store?.load(name, opts.signal);
    if (cached && cached.length === sizes.length && cached.every((a, i) => a.length === sizes[i])) {
      const [UA, US, lam, H0] = cached;
      f.setBasis(UA, US);
      f.setLambda(lam);
      f.H0 = H0 ?? null;
      return f;
    }
    let S: Float64Array;
    let Abar: Float64Array;
    if (explicit) {
      const stats = opts.explicitHessian?.n === rows.n ? opts.explicitHessian : await f.buildHessian(opts.signal, opts.onProgress);
      ({ S, Abar } = stats);
      f.H0 = stats.H0;
    } else ({ S, Abar } = await f.gram(opts.signal, opts.onProgress));
    // Exactly symmetric, as the JS Ekfac's are.
    symmetrize(S, Dt);
    symmetrize(Abar, C);
    f.setBasis(symmetricEigen(Abar, C).vectors, symmetricEigen(S, Dt).vectors);
    const lam = await f.lambda(opts.signal, opts.onProgress);
    f.setLambda(lam);
    await opts.store?.save(name, [f.UA, f.US, lam, ...(f.H0 ? [f.H0] : [])]);
    return f;
  }

  /** Frees the solver's onnxruntime sessions (and their memory); they are rebuilt if needed again. */
  async release(): Promise<void> {
    const ks = [this.hvpK, this.preK];
    this.hvpK = this.preK = null;
    for (const k of ks) await k?.release();
  }

  /** Feeds of rows [start, start + k): h, ones. */
  private headFeed(start: number, k: number): Feed {
    const { D, bias } = this.rows;
    const h = this.h32.subarray(start * D, (start + k) * D);
    const feed: Feed = { h: f32(h, [k, D]) };
    if (bias) feed.ones = f32(this.ones.subarray(0, k), [k, 1]);
    return feed;
  }

  /** p = g + e_y in float64 for rows [start, start + k). */
  private pChunk(start: number, k: number): Float64Array {
    const { C, g, labels } = this.rows;
    return probabilities(g.subarray(start * C), labels.subarray(start), k, C, this.pBuf);
  }

  /** EK-FAC's first pass: X̃ᵀX̃ and Σ A_i in float64 products. */
  private async gram(signal?: AbortSignal, onProgress?: Progress): Promise<{ S: Float64Array; Abar: Float64Array }> {
    const { n, C } = this.rows;
    const Dt = this.shape.D + (this.shape.bias ? 1 : 0);
    const S = new Float64Array(Dt * Dt);
    const Abar = new Float64Array(C * C);
    const gram = await gramKernel(this.shape);
    try {
      for (let start = 0; start < n; start += CHUNK) {
        throwIfAborted(signal);
        onProgress?.('ekfac', start, 2 * n);
        const k = Math.min(CHUNK, n - start);
        const out = await gram.run({ ...this.headFeed(start, k), p: f64(this.pChunk(start, k), [k, C]) });
        addInto(S, out.xtx.data as Float64Array);
        const ptp = out.ptp.data as Float64Array;
        const psum = out.psum.data as Float64Array;
        for (let c = 0; c < C; c++) {
          for (let d = 0; d < C; d++) Abar[c * C + d] -= ptp[c * C + d];
          Abar[c * C + c] += psum[c];
        }
      }
    } finally {
      await gram.release();
    }
    return { S, Abar };
  }

  /** One pass over the rows that forms the explicit H₀ and, from the same products, X̃ᵀX̃ and Σ A_i for EK-FAC. */
  private async buildHessian(signal?: AbortSignal, onProgress?: Progress): Promise<HessianStats> {
    const { n } = this.rows;
    const sum = await HessianSum.create(this.shape);
    try {
      for (let start = 0; start < n; start += CHUNK) {
        throwIfAborted(signal);
        onProgress?.('hessian', start, n);
        const k = Math.min(CHUNK, n - start);
        await sum.add(this.h32.subarray(start * this.shape.D), this.pChunk(start, k), k);
      }
    } finally {
      await sum.release();
    }
    return sum.finish();
  }

  /** EK-FAC's eigenvectors: U_A of Σ A_i (C×C) and U_S of X̃ᵀX̃ (D̃×D̃). */
  private setBasis(UA: Float64Array, US: Float64Array): void {
    const { C } = this.rows;
    this.UA = UA;
    this.US = US;
    // The eigenvector of Ā along 1 (Ā1 = 0), and how much of it lies off 1.
    let best = -1;
    for (let a = 0; a < C; a++) {
      let t = 0;
      for (let c = 0; c < C; c++) t += this.UA[c * C + a];
      if ((t * t) / C > best) {
        best = (t * t) / C;
        this.nullColumn = a;
      }
    }
    this.nullLeak = Math.max(1 - best, 0);
  }

  /** EK-FAC's second pass: the eigenvalue sums Σ_i W[i,a] xs_ib² (C×D̃). */
  private async lambda(signal?: AbortSignal, onProgress?: Progress): Promise<Float64Array> {
    const { n, C } = this.rows;
    const Dt = this.shape.D + (this.shape.bias ? 1 : 0);
    const lam = new Float64Array(C * Dt);
    const lk = await lambdaKernel(this.shape, this.US, this.UA);
    try {
      for (let start = 0; start < n; start += CHUNK) {
        throwIfAborted(signal);
        onProgress?.('ekfac', start, n);
        const k = Math.min(CHUNK, n - start);
        const out = await lk.run({ ...this.headFeed(start, k), p: f64(this.pChunk(start, k), [k, C]) });
        addInto(lam, out.lam.data as Float64Array);
      }
    } finally {
      await lk.release();
    }
    return lam;
  }

  private setLambda(lam: Float64Array): void {
    const { n } = this.rows;
    this.denom = new Float64Array(lam.length);
    for (let q = 0; q < lam.length; q++) this.denom[q] = Math.max(lam[q] / n, 0) + this.damping;
  }

  /**
   * H v for class-centred directions (each C×D̃), all at once: float32 products of H₀ summed per
   * chunk in float64, the class-mean part of the result removed (it is 0 in exact arithmetic),
   * then λv added in float64.
   */
  async hvp(V: Float64Array[], signal?: AbortSignal): Promise<Float64Array[]> {
    if (this.H0) return this.denseHvp(V);
    const { n, C } = this.rows;
    const Dt = this.shape.D + (this.shape.bias ? 1 : 0);
    const R = V.length;
    this.hvpK ??= await hvpKernel(this.shape);
    const v32 = new Float32Array(R * C * Dt);
    V.forEach((v, r) => v32.set(v, r * C * Dt));
    const acc = new Float64Array(R * C * Dt);
    const vt = f32(v32, [R * C, Dt]);
    const { D } = this.shape;
    const hall = f32(this.h32, [n, D]);
    const gall = f64(this.rows.g, [n, C]);
    const labels = i32(this.rows.labels, [n]);
    this.grouping ??= this.groupRows();
    const { order, groups } = this.grouping;
    for (const { start, k, ref } of groups) {
      throwIfAborted(signal);
      const feed: Feed = {
        hall,
        gall,
        labels,
        idx: i64(order.subarray(start, start + k), [k]),
        r: i64(ref, [1]),
        v: vt,
      };
      if (this.shape.bias) feed.ones = f32(this.ones.subarray(0, k), [k, 1]);
      const out = await this.hvpK!.run(feed);
      addInto(acc, out.out.data as Float32Array);
    }
    return V.map((v, r) => {
      const o = acc.slice(r * C * Dt, (r + 1) * C * Dt);
      centerClasses(o, C, Dt);
      for (let q = 0; q < o.length; q++) o[q] = o[q] / n + this.damping * v[q];
      return o;
    });
  }

  /** H v with the explicit H₀, float64. */
  private async denseHvp(V: Float64Array[]): Promise<Float64Array[]> {
    const { n, C } = this.rows;
    const { Dt, P } = headDims(this.rows);
    this.hvpK ??= await denseHvpKernel(P);
    const all = new Float64Array(V.length * P);
    V.forEach((v, r) => all.set(v, r * P));
    const out = (await this.hvpK.run({ v: f64(all, [V.length, P]), H: f64(this.H0!, [P, P]) })).out.data as Float64Array;
    return V.map((v, r) => {
      const o = out.slice(r * P, (r + 1) * P);
      centerClasses(o, C, Dt);
      for (let q = 0; q < P; q++) o[q] = o[q] / n + this.damping * v[q];
      return o;
    });
  }

  /** The EK-FAC preconditioner on class-centred directions (result centred). */
  async precondition(V: Float64Array[]): Promise<Float64Array[]> {
    const { C } = this.rows;
    const Dt = this.shape.D + (this.shape.bias ? 1 : 0);
    const R = V.length;
    this.preK ??= await preconditionKernel(this.shape, this.US, this.UA, this.denom);
    const all = new Float64Array(R * C * Dt);
    V.forEach((v, r) => all.set(v, r * C * Dt));
    const out = (await this.preK!.run({ v: f64(all, [R, C, Dt]) })).out.data as Float64Array;
    return V.map((_, r) => {
      const o = out.slice(r * C * Dt, (r + 1) * C * Dt);
      centerClasses(o, C, Dt);
      return o;
    });
  }

  /**
   * Block preconditioned CG (O'Leary 1980) for several right-hand sides at once. The class-mean part
   * of each b is solved exactly (H(1⊗v) = λ(1⊗v)); CG works on the rest, in the subspace that H
   * keeps invariant. The right-hand sides of one explain (e_c ⊗ x̃_t) share much of their Krylov
   * spaces, and the block method uses that: on the bench it needs about half the iterations of
   * independent CG, at the same cost per iteration (one pass over the rows for all directions).
   * Every column iterates until all have ‖r‖ ≤ tol·‖b‖.
   */
  async solve(B: Float64Array[], opts: { tol?: number; maxIter?: number; signal?: AbortSignal; onProgress?: Progress } = {}): Promise<{ X: Float64Array[]; iterations: number }> {
    const tol = opts.tol ?? (this.H0 ? DENSE_CG_TOL : FAST_CG_TOL);
    const maxIter = opts.maxIter ?? 1000;
    const { C } = this.rows;
    const Dt = this.shape.D + (this.shape.bias ? 1 : 0);
    const P = C * Dt;
    const mean = B.map((b) => {
      const m = new Float64Array(Dt);
      for (let c = 0; c < C; c++) for (let j = 0; j < Dt; j++) m[j] += b[c * Dt + j] / C;
      return m;
    });
    const X = B.map((b) => new Float64Array(b.length));
    const cols: number[] = [];
    const Rall = B.map((b, k) => {
      const r = Float64Array.from(b);
      for (let c = 0; c < C; c++) for (let j = 0; j < Dt; j++) r[c * Dt + j] -= mean[k][j];
      if (dot(r, r) > 0) cols.push(k);
      return r;
    });
    const s = cols.length;
    let it = 0;
    if (s > 0) {
      const R = cols.map((k) => Rall[k]);
      const Xs = cols.map((k) => X[k]);
      const bnorm = R.map((r) => Math.sqrt(dot(r, r)));
      let Z = await this.precondition(R);
      let Pd = Z.map((z) => Float64Array.from(z));
      let ZR = blockGram(Z, R);
      for (;;) {
        if (it >= maxIter) {
          throw new InfluenceError('BAD_OPTION', `conjugate gradients did not converge in ${maxIter} iterations; increase --damping`);
        }
        it++;
        opts.onProgress?.('solve', it, maxIter);
        const Q = await this.hvp(Pd, opts.signal);
        // α = (PᵀHP)⁻¹(ZᵀR); X += Pα; R −= (HP)α.
        const alpha = solveSpd(blockGram(Pd, Q), ZR, s);
        combineInto(Xs, Pd, alpha, 1, P);
        combineInto(R, Q, alpha, -1, P);
        if (R.every((r, k) => Math.sqrt(dot(r, r)) <= tol * bnorm[k])) break;
        Z = await this.precondition(R);
        const ZRnew = blockGram(Z, R);
        // β = (ZᵀR)⁻¹_old (ZᵀR)_new; P = Z + Pβ.
        const beta = solveSpd(ZR, ZRnew, s);
        ZR = ZRnew;
        const next = Z.map((z) => Float64Array.from(z));
        combineInto(next, Pd, beta, 1, P);
        Pd = next;
      }
    }
    // Add back the exactly solved class-mean parts.
    X.forEach((x, k) => {
      for (let c = 0; c < C; c++) for (let j = 0; j < Dt; j++) x[c * Dt + j] += mean[k][j] / this.damping;
    });
    return { X, iterations: it };
  }

  /**
   * One pass over the rows in chunks, calling `each(i, row)` for every row in order.
   * testS (explain): the class-centred test-side solutions S_m (each C×D̃), giving y and z.
   * heldOut (audit): the held-out solution U (C×D̃), giving heldOut; audit also gives qw.
   * Rows where the Neumann series of the Newton weights may not have converged (to NEUMANN_TOL)
   * are recomputed exactly in float64 JS (C×C Gaussian elimination, as the exact path does).
   */
  async rowPass(
    opts: { testS?: Float64Array[]; audit?: { heldOut: Float64Array | null }; signal?: AbortSignal; onProgress?: Progress; stage: string },
    each: (i: number, row: FastRow) => void,
  ): Promise<void> {
    const { n, C } = this.rows;
    const Dt = this.shape.D + (this.shape.bias ? 1 : 0);
    const M = opts.testS?.length ?? 0;
    // The solver's sessions are done with: free their memory before this pass allocates its own.
    await this.release();
    const terms = this.neumannTerms();
    const kernel = await rowKernel({ ...this.shape, n, US: this.US, UA: this.UA, denom: this.denom, terms, testDirections: M || undefined, audit: opts.audit ? { heldOut: opts.audit.heldOut !== null } : undefined });
    try {
      const extra: Feed = {};
      if (M > 0) {
        const st = new Float32Array(Dt * M * C);
        opts.testS!.forEach((s, m) => {
          for (let c = 0; c < C; c++) for (let j = 0; j < Dt; j++) st[j * M * C + m * C + c] = s[c * Dt + j];
        });
        extra.st = f32(st, [Dt, M * C]);
      }
      if (opts.audit?.heldOut) extra.uho = f64(opts.audit.heldOut, [C, Dt]);
      const row: FastRow = { self: 0, w: new Float64Array(C), y: new Float64Array(M), z: new Float64Array(M), qw: new Float64Array(C), heldOut: 0 };
      const exact = new ExactRow(this, opts.testS ?? null);
      for (let start = 0; start < n; start += CHUNK) {
        throwIfAborted(opts.signal);
        opts.onProgress?.(opts.stage, start, n);
        const k = Math.min(CHUNK, n - start);
        const p = this.pChunk(start, k);
        const out = await kernel.run({ ...this.headFeed(start, k), g: f64(this.rows.g.subarray(start * C, (start + k) * C), [k, C]), p: f64(p, [k, C]), ...extra });
        const s = out.s.data as Float64Array;
        const self = out.self.data as Float64Array;
        const w = out.w.data as Float64Array;
        const yz = M > 0 ? (out.yz.data as Float32Array) : null;
        const qw = opts.audit ? (out.qw.data as Float64Array) : null;
        const ho = opts.audit?.heldOut ? (out.ho.data as Float64Array) : null;
        const ry = row.y;
        const rz = row.z;
        for (let r = 0; r < k; r++) {
          const i = start + r;
          const ratio = this.neumannRatio(s, p, r * C);
          row.self = self[r];
          row.heldOut = ho ? ho[r] : 0;
          if (yz) for (let m = 0; m < M; m++) ry[m] = yz[(r * M + m) * 2];
          if (ratio < 0.5 && ratio ** terms / (1 - ratio) <= NEUMANN_TOL) {
            for (let c = 0; c < C; c++) row.w[c] = w[r * C + c];
            if (yz) for (let m = 0; m < M; m++) rz[m] = yz[(r * M + m) * 2 + 1];
            if (qw) for (let c = 0; c < C; c++) row.qw[c] = qw[r * C + c];
          } else {
            fastStats.fallbackRows++;
            exact.load(i, s.subarray(r * C, (r + 1) * C), row);
          }
          each(i, row);
        }
      }
    } finally {
      await kernel.release();
    }
  }

  /**
   * Terms of the Neumann series for the row pass: enough for the largest ratio found in a sample
   * of rows, with a margin. Rows that need more are caught one by one and solved exactly.
   */
  private neumannTerms(): number {
    const { n, C } = this.rows;
    const Dt = this.shape.D + (this.shape.bias ? 1 : 0);
    const x = new Float64Array(Dt);
    const xs = new Float64Array(Dt);
    const s = new Float64Array(C);
    const p = new Float64Array(C);
    const step = Math.max(1, Math.floor(n / 1024));
    let worst = 0;
    for (let i = 0; i < n; i += step) {
      rowInput(this.rows, i, x);
      xs.fill(0);
      for (let j = 0; j < Dt; j++) {
        const xj = x[j];
        const o = j * Dt;
        for (let b = 0; b < Dt; b++) xs[b] += this.US[o + b] * xj;
      }
      for (let b = 0; b < Dt; b++) xs[b] *= xs[b];
      for (let a = 0; a < C; a++) {
        let t = 0;
        for (let b = 0; b < Dt; b++) t += xs[b] / this.denom[a * Dt + b];
        s[a] = t;
        p[a] = this.rows.g[i * C + a] + (this.rows.labels[i] === a ? 1 : 0);
      }
      worst = Math.max(worst, this.neumannRatio(s, p, 0));
    }
    const r = Math.min(2 * worst, 0.5);
    let terms = NEUMANN_MIN_TERMS;
    while (terms < NEUMANN_MAX_TERMS && r ** terms / (1 - r) > NEUMANN_TOL) terms++;
    return terms;
  }

  /**
   * A bound on ρ(K), K = A^{1/2}QA^{1/2}/n, the ratio of the Neumann series of the Newton weights:
   * the truncation error after j terms is at most ρʲ/(1 − ρ) times the size of the correction.
   * ‖A‖ ≤ min(max_c p_c, max_c 2p_c(1 − p_c)) (A ⪯ diag p; Gershgorin), and since A1 = 0 only
   * ΠQΠ matters (Π removes the class mean): ‖ΠQΠ‖ ≤ max over the other eigenvectors of s_a plus
   * s_a₀‖Πu_a₀‖² for the eigenvector u_a₀ of Ā along 1.
   */
  private neumannRatio(s: Float64Array, p: Float64Array, o: number): number {
    const { C, n } = this.rows;
    let smax = 0;
    let pmax = 0;
    let gmax = 0;
    for (let a = 0; a < C; a++) {
      if (a !== this.nullColumn) smax = Math.max(smax, s[o + a]);
      const pa = p[o + a];
      pmax = Math.max(pmax, pa);
      gmax = Math.max(gmax, 2 * pa * (1 - pa));
    }
    smax += s[o + this.nullColumn] * this.nullLeak;
    return (smax * Math.min(pmax, gmax)) / n;
  }
}

/** The fast row pass's float64 JS fallback for one row, with Q = U_A diag(s) U_Aᵀ. */
class ExactRow {
  private readonly x: Float64Array;
  private readonly p: Float64Array;
  private readonly g: Float64Array;
  private readonly A: Float64Array;
  private readonly Q: Float64Array;
  private readonly Qg: Float64Array;
  private readonly M: Float64Array;

  constructor(
    private readonly fast: FastCurvature,
    private readonly testS: Float64Array[] | null,
  ) {
    const { C } = fast.rows;
    this.x = new Float64Array(headDims(fast.rows).Dt);
    this.p = new Float64Array(C);
    this.g = new Float64Array(C);
    this.A = new Float64Array(C * C);
    this.Q = new Float64Array(C * C);
    this.Qg = new Float64Array(C);
    this.M = new Float64Array(C * C);
  }

  load(i: number, s: Float64Array, row: FastRow): void {
    const rows = this.fast.rows;
    const { n, C } = rows;
    const { Dt } = headDims(rows);
    const { x, g, A, Q, Qg, M } = this;
    const UA = this.fast.UA;
    rowInput(rows, i, x);
    rowCurvature(rows, i, this.p, A);
    for (let c = 0; c < C; c++) g[c] = rows.g[i * C + c];
    for (let c = 0; c < C; c++)
      for (let d = c; d < C; d++) {
        let t = 0;
        for (let a = 0; a < C; a++) t += UA[c * C + a] * UA[d * C + a] * s[a];
        Q[c * C + d] = t;
        Q[d * C + c] = t;
      }
    for (let c = 0; c < C; c++) Qg[c] = dot(Q.subarray(c * C, (c + 1) * C), g, C);
    newtonWeights(Q, A, g, Qg, n, C, M, row.w);
    for (let c = 0; c < C; c++) row.qw[c] = dot(Q.subarray(c * C, (c + 1) * C), row.w, C);
    if (this.testS) {
      this.testS.forEach((S, m) => {
        let t = 0;
        for (let c = 0; c < C; c++) t += row.w[c] * dot(x, S.subarray(c * Dt, (c + 1) * Dt), Dt);
        row.z[m] = t;
      });
    }
  }
}

/** G[i,j] = A_i · B_j (s×s, symmetrised: every use is of a symmetric matrix up to rounding). */
function blockGram(A: Float64Array[], B: Float64Array[]): Float64Array {
  const s = A.length;
  const G = new Float64Array(s * s);
  for (let i = 0; i < s; i++) for (let j = 0; j < s; j++) G[i * s + j] = dot(A[i], B[j]);
  symmetrize(G, s);
  return G;
}

/** G⁻¹F for a symmetric positive (semi)definite G (s×s), by eigendecomposition, ignoring null directions. */
function solveSpd(G: Float64Array, F: Float64Array, s: number): Float64Array {
  const { values, vectors } = symmetricEigen(G, s);
  let vmax = 0;
  for (let a = 0; a < s; a++) vmax = Math.max(vmax, Math.abs(values[a]));
  const out = new Float64Array(s * s);
  const vf = new Float64Array(s);
  for (let a = 0; a < s; a++) {
    if (!(Math.abs(values[a]) > 1e-14 * vmax)) continue;
    for (let j = 0; j < s; j++) {
      let t = 0;
      for (let i = 0; i < s; i++) t += vectors[i * s + a] * F[i * s + j];
      vf[j] = t / values[a];
    }
    for (let i = 0; i < s; i++) {
      const v = vectors[i * s + a];
      for (let j = 0; j < s; j++) out[i * s + j] += v * vf[j];
    }
  }
  return out;
}

/** Y_j += sign · Σ_i X_i a[i,j] for blocks of P-vectors. */
function combineInto(Y: Float64Array[], Xb: Float64Array[], a: Float64Array, sign: number, P: number): void {
  const s = Xb.length;
  for (let j = 0; j < Y.length; j++) {
    const y = Y[j];
    for (let i = 0; i < s; i++) {
      const f = sign * a[i * s + j];
      if (f === 0) continue;
      const x = Xb[i];
      for (let q = 0; q < P; q++) y[q] += f * x[q];
    }
  }
}

function symmetrize(A: Float64Array, m: number): void {
  for (let i = 0; i < m; i++)
    for (let j = i + 1; j < m; j++) {
      const v = 0.5 * (A[i * m + j] + A[j * m + i]);
      A[i * m + j] = v;
      A[j * m + i] = v;
    }
}

/**
 * CE(z + dz) − CE(z) for softmax probabilities p = softmax(z), evaluated without cancellation:
 * log Σ_c p_c e^{dz_c} − dz_y = log1p(Σ_c p_c expm1(dz_c)) − dz_y.
 */
export function lossShift(p: Float64Array, dz: Float64Array, y: number): number {
  let s = 0;
  for (let c = 0; c < p.length; c++) s += p[c] * Math.expm1(dz[c]);
  return Math.log1p(s) - dz[y];
}

function symMatVec(M: Float64Array, v: Float64Array, m: number): Float64Array {
  const out = new Float64Array(m);
  for (let i = 0; i < m; i++) out[i] = dot(M.subarray(i * m, (i + 1) * m), v, m);
  return out;
}

/** Q[c,d] = x̃ᵀ (H⁻¹)_{cd} x̃, exactly. */
function exactQuad(Hinv: Float64Array, x: Float64Array, C: number, Dt: number, P: number, Q: Float64Array): void {
  for (let c = 0; c < C; c++)
    for (let d = c; d < C; d++) {
      let s = 0;
      for (let j = 0; j < Dt; j++) {
        const row = (c * Dt + j) * P + d * Dt;
        let t = 0;
        for (let k = 0; k < Dt; k++) t += Hinv[row + k] * x[k];
        s += x[j] * t;
      }
      Q[c * C + d] = s;
      Q[d * C + c] = s;
    }
}
