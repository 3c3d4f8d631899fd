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
 */
import { CancelledError, InfluenceError, throwIfAborted, type Progress } from './errors';
import { cholesky, dot, inverseFromCholesky, solveSmall, symmetricEigen } from './linalg';

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

/** Shortest set of rows whose removal flips the prediction, per the first-order margin changes. */
export function flipSet(d: Float64Array, n: number, C: number, z: Float64Array, predicted: number): FlipSet | null {
  const limit = Math.ceil(0.05 * n);
  let best: FlipSet | null = null;
  const order = new Int32Array(n);
  for (let c = 0; c < C; c++) {
    if (c === predicted) continue;
    const target = -(z[predicted] - z[c]);
    for (let i = 0; i < n; i++) order[i] = i;
    const dc = (i: number) => d[i * C + c];
    order.sort((a, b) => dc(a) - dc(b) || a - b);
    let sum = 0;
    let k = 0;
    for (; k < n; k++) {
      const v = dc(order[k]);
      if (v >= 0) break; // later rows only raise the sum
      sum += v;
      if (sum <= target) break;
    }
    if (sum <= target && k < n) {
      const count = k + 1;
      if (count <= limit && (!best || count < best.rows.length)) best = { rows: Array.from(order.subarray(0, count)), newClass: c };
    }
  }
  return best;
}

/** How H⁻¹ is applied: an explicit factorisation, or CG with an EK-FAC preconditioner. */
export class Curvature {
  readonly solver: SolverKind;
  readonly selfMethod: SelfInfluenceMethod;
  readonly seconds: Record<string, number> = {};
  cgIterations: number | null = null;
  private readonly Hinv: Float64Array | null = null;
  private readonly ekfac: Ekfac | null = null;
  private readonly Dt: number;
  private readonly P: number;

  constructor(
    readonly rows: HeadRows,
    readonly damping: number,
    opts: Pick<ExplainOptions, 'solver' | 'selfInfluence' | 'signal' | 'onProgress'> = {},
  ) {
    if (!(damping > 0) || !Number.isFinite(damping)) throw new InfluenceError('BAD_OPTION', `damping must be a positive number; got ${damping}`);
    const { Dt, P } = headDims(rows);
    this.Dt = Dt;
    this.P = P;
    const dense = rows.n * P * P <= EXACT_BUDGET && P <= DENSE_MAX_P;
    this.solver = opts.solver ?? (dense ? 'cholesky' : 'cg');
    this.selfMethod = opts.selfInfluence ?? (dense ? 'exact' : 'ekfac');
    let t0 = performance.now();
    const lap = (name: string) => {
      const t = performance.now();
      this.seconds[name] = (t - t0) / 1000;
      t0 = t;
    };
    if (this.solver === 'cholesky' || this.selfMethod === 'exact') {
      const H = denseHessian(rows, damping, opts.signal, opts.onProgress);
      lap('hessian');
      cholesky(H, P);
      this.Hinv = inverseFromCholesky(H, P);
      lap('factor');
    }
    if (this.solver === 'cg' || this.selfMethod === 'ekfac') {
      this.ekfac = new Ekfac(rows, damping, opts.signal);
      lap('ekfac');
    }
  }

  /** H⁻¹ b for each b (P-vectors, C×D̃ row-major). */
  solve(B: Float64Array[], signal?: AbortSignal, onProgress?: Progress): Float64Array[] {
    const t0 = performance.now();
    let X: Float64Array[];
    if (this.solver === 'cholesky') X = B.map((b) => symMatVec(this.Hinv!, b, this.P));
    else {
      const r = solveCg(this.rows, this.damping, B, this.ekfac!, { signal, onProgress });
      this.cgIterations = (this.cgIterations ?? 0) + r.iterations;
      X = r.X;
    }
    this.seconds.solve = (this.seconds.solve ?? 0) + (performance.now() - t0) / 1000;
    return X;
  }

  /** Q = (I⊗x̃)ᵀ H⁻¹ (I⊗x̃), C×C: exact, or EK-FAC. */
  quad(x: Float64Array, Q: Float64Array, xs: Float64Array, scratch: Float64Array): void {
    const { C } = this.rows;
    if (this.selfMethod === 'exact') exactQuad(this.Hinv!, x, C, this.Dt, this.P, Q);
    else {
      this.ekfac!.project(x, xs);
      this.ekfac!.quad(xs, Q, scratch);
    }
  }
}

/**
 * Per-row quantities of removing row i, shared by explain and audit. After `load(i)`:
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
}

export function explainScores(rows: HeadRows, test: TestPoint, opts: ExplainOptions, curvature?: Curvature): ExplainScores {
  const { n, C } = rows;
  const { Dt, P } = headDims(rows);
  const { signal, onProgress } = opts;
  const curv = curvature ?? new Curvature(rows, opts.damping, opts);
  const seconds: Record<string, number> = {};
  let t0 = performance.now();

  // S[c'] = H⁻¹ (e_c' ⊗ x̃_t), each C×D̃.
  const rhs = Array.from({ length: C }, (_, c) => {
    const v = new Float64Array(P);
    v.set(test.x, c * Dt);
    return v;
  });
  const S = curv.solve(rhs, signal, onProgress);
  Object.assign(seconds, curv.seconds);
  t0 = performance.now();

  const predicted = argmaxExcept(test.z, -1);
  const runnerUp = argmaxExcept(test.z, predicted);
  const margin = test.z[predicted] - test.z[runnerUp];

  const influence = new Float64Array(n);
  const lossChangeIfRemoved = new Float64Array(n);
  const newton = new Float64Array(n);
  const selfInfluence = new Float64Array(n);
  const relativeInfluence = new Float64Array(n);
  const classificationInfluence = new Float64Array(n);
  const marginChange = new Float64Array(n * C); // first-order change of z_ŷ − z_c if row i is removed

  const row = new RowRemoval(curv);
  const { x, g: gi } = row;
  const T = new Float64Array(C * C);
  const Rv = new Float64Array(C);
  const dz = new Float64Array(C);
  const testP = Float64Array.from(test.g);
  testP[test.label] += 1;
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
    influence[i] = infl;
    lossChangeIfRemoved[i] = -infl / n;
    const tpg = dot(T.subarray(predicted * C, (predicted + 1) * C), gi, C);
    for (let c = 0; c < C; c++) {
      marginChange[i * C + c] = c === predicted ? 0 : (tpg - dot(T.subarray(c * C, (c + 1) * C), gi, C)) / n;
    }
    classificationInfluence[i] = marginChange[i * C + runnerUp];
    selfInfluence[i] = row.self;
    relativeInfluence[i] = row.self > 0 ? infl / Math.sqrt(row.self) : 0;
    // The Newton step moves the test logits by Δz[c'] = (1/n) T[c',:]·w exactly (z is linear in θ);
    // the test loss is evaluated exactly there.
    for (let a = 0; a < C; a++) dz[a] = dot(T.subarray(a * C, (a + 1) * C), row.w, C) / n;
    newton[i] = lossShift(testP, dz, test.label);
  }
  seconds.scores = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const flip = flipSet(marginChange, n, C, test.z, predicted);
  seconds.flip = (performance.now() - t0) / 1000;
  if (signal?.aborted) throw new CancelledError();
  return {
    predicted,
    margin,
    runnerUp,
    influence,
    lossChangeIfRemoved,
    lossChangeIfRemovedNewton: newton,
    selfInfluence,
    relativeInfluence,
    classificationInfluence,
    flip,
    solver: curv.solver,
    selfInfluenceMethod: curv.selfMethod,
    cgIterations: curv.cgIterations,
    seconds,
  };
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
