/**
 * The curvature of the head's damped training objective, H = (1/n) Σ_i A_i ⊗ x̃_ix̃_iᵀ + λI, as the
 * scores use it: H⁻¹b for a few right-hand sides, and Q_i = (I⊗x̃_i)ᵀH⁻¹(I⊗x̃_i) per row. The policy
 * picks how: on the exact path, the explicit H⁻¹ (float64 ORT products: the Hessian's sum, the
 * block inverse, every Q_i) or EK-FAC-preconditioned CG in float64 JS (exact.ts); or the ORT fast
 * path (fast.ts) for large problems.
 */
import { InfluenceError, throwIfAborted, type Progress } from '../errors';
import { symMatVec } from '../linalg';
import { f64 } from '../ort/graph';
import { quadKernel } from '../ort/kernels';
import { headDims, rowInput, type HeadRows } from '../task/head';
import { probabilities, taskFor } from '../task/loss';
import { Ekfac } from './ekfac';
import { denseHessian, solveCg } from './exact';
import { FastCurvature } from './fast';
import { HessianSum } from './hessian';
import { SpdInverter } from './inverse';
import {
  chooseMethods,
  type ComputePath,
  type CurvatureOptions,
  type SelfInfluenceMethod,
  type SolverKind,
} from './policy';

/** How H⁻¹ is applied: an explicit factorisation, or CG with an EK-FAC preconditioner. */
export class Curvature {
  readonly solver: SolverKind;
  readonly selfMethod: SelfInfluenceMethod;
  readonly path: ComputePath;
  readonly seconds: Record<string, number> = {};
  cgIterations: number | null = null;
  private Hinv: Float64Array | null = null;
  /** The exact path's undamped Hessian H₀/n, kept so that another damping costs one inversion. */
  private H0: Float64Array | null = null;
  /** Exact self-influence: Q_i (C×C) of every row, row after row. */
  private quads: Float64Array | null = null;
  private ekfac: Ekfac | null = null;
  /** The fast path's state (ORT kernels, EK-FAC factors); null on the exact path. */
  fast: FastCurvature | null = null;
  private readonly P: number;

  private constructor(
    readonly rows: HeadRows,
    readonly damping: number,
    methods: { solver: SolverKind; selfMethod: SelfInfluenceMethod; path: ComputePath },
  ) {
    this.P = headDims(rows).P;
    this.solver = methods.solver;
    this.selfMethod = methods.selfMethod;
    this.path = methods.path;
  }

  static async create(rows: HeadRows, damping: number, opts: CurvatureOptions = {}): Promise<Curvature> {
    if (!(damping > 0) || !Number.isFinite(damping))
      throw new InfluenceError('BAD_OPTION', `damping must be a positive number; got ${damping}`);
    const curv = new Curvature(rows, damping, chooseMethods(rows, opts));
    const t0 = performance.now();
    if (curv.path === 'fast') {
      curv.fast = await FastCurvature.create(rows, damping, opts);
      curv.seconds[curv.fast.H0 ? 'hessian' : 'ekfac'] = (performance.now() - t0) / 1000;
      return curv;
    }
    if (curv.solver === 'cholesky' || curv.selfMethod === 'exact') {
      curv.H0 = await exactHessian(rows, opts.signal, opts.onProgress);
      curv.seconds.hessian = (performance.now() - t0) / 1000;
    }
    if (curv.solver === 'cg' || curv.selfMethod === 'ekfac') {
      const t1 = performance.now();
      curv.ekfac = new Ekfac(rows, damping, opts.signal);
      curv.seconds.ekfac = (performance.now() - t1) / 1000;
    }
    await curv.factor(opts.signal, opts.onProgress);
    return curv;
  }

  /** H⁻¹ = (H₀/n + λI)⁻¹, and with exact self-influence every row's Q_i. */
  private async factor(signal?: AbortSignal, onProgress?: Progress, quads = true): Promise<void> {
    if (!this.H0) return;
    const t0 = performance.now();
    const H = Float64Array.from(this.H0);
    for (let q = 0; q < this.P; q++) H[q * this.P + q] += this.damping;
    const inv = await SpdInverter.create();
    try {
      this.Hinv = await inv.invert(H, this.P, signal);
    } finally {
      await inv.release();
    }
    this.seconds.factor = (performance.now() - t0) / 1000;
    if (this.selfMethod === 'exact' && quads) {
      const t1 = performance.now();
      this.quads = await exactQuads(this.rows, this.Hinv, signal, onProgress);
      this.seconds.quads = (performance.now() - t1) / 1000;
    }
  }

  /**
   * The same curvature at another damping, from the statistics already computed (no pass over the
   * rows for H₀). With `need` 'solves' it serves solve() only: no exact Q_i per row.
   */
  async withDamping(damping: number, signal?: AbortSignal, need: 'all' | 'solves' = 'all'): Promise<Curvature> {
    if (!(damping > 0) || !Number.isFinite(damping))
      throw new InfluenceError('BAD_OPTION', `damping must be a positive number; got ${damping}`);
    const c = new Curvature(this.rows, damping, { solver: this.solver, selfMethod: this.selfMethod, path: this.path });
    c.H0 = this.H0;
    c.ekfac = this.ekfac?.withDamping(damping) ?? null;
    c.fast = this.fast?.withDamping(damping) ?? null;
    await c.factor(signal, undefined, need === 'all');
    return c;
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

  /** Q_i = (I⊗x̃_i)ᵀ H⁻¹ (I⊗x̃_i) (C×C) of row i, whose x̃ is x: exact, or EK-FAC (exact path only). */
  quad(i: number, x: Float64Array, Q: Float64Array, xs: Float64Array, scratch: Float64Array): void {
    const { C } = this.rows;
    if (this.quads) Q.set(this.quads.subarray(i * C * C, (i + 1) * C * C));
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

/** Rows per onnxruntime run of the exact path's kernels. */
const CHUNK = 256;

/**
 * The undamped Hessian H₀/n, float64: float64 ORT products for a softmax head on float32 h (as the
 * forward pass gives it); the float64 JS sum otherwise (a binary head, whose p(1 − p) the kernel's
 * softmax weights do not cover; checks that feed float64 features).
 */
async function exactHessian(rows: HeadRows, signal?: AbortSignal, onProgress?: Progress): Promise<Float64Array> {
  if (!(rows.h instanceof Float32Array) || !taskFor(rows.C).meanFree) return denseHessian(rows, 0, signal, onProgress);
  const { n, C, D, bias } = rows;
  const sum = await HessianSum.create({ C, D, bias }, undefined, 'f64');
  const p = new Float64Array(CHUNK * C);
  try {
    for (let start = 0; start < n; start += CHUNK) {
      throwIfAborted(signal);
      onProgress?.('hessian', start, n);
      const k = Math.min(CHUNK, n - start);
      await sum.add(
        rows.h.subarray(start * D),
        probabilities(rows.g.subarray(start * C), rows.labels.subarray(start), k, C, p),
        k,
      );
    }
  } finally {
    await sum.release();
  }
  const { H0 } = await sum.finish();
  for (let q = 0; q < H0.length; q++) H0[q] /= n;
  return H0;
}

/** Every row's Q_i from H⁻¹, by float64 ORT products in chunks of rows. */
async function exactQuads(
  rows: HeadRows,
  Hinv: Float64Array,
  signal?: AbortSignal,
  onProgress?: Progress,
): Promise<Float64Array> {
  const { n, C } = rows;
  const { Dt, P } = headDims(rows);
  // Hr[j, p·C + d] = H⁻¹[p, d·D̃ + j]: the layout the kernel multiplies x̃ into.
  const hr = new Float64Array(Dt * P * C);
  for (let q = 0; q < P; q++)
    for (let d = 0; d < C; d++) for (let j = 0; j < Dt; j++) hr[j * P * C + q * C + d] = Hinv[q * P + d * Dt + j];
  const kernel = await quadKernel(C, Dt);
  const out = new Float64Array(n * C * C);
  const x = new Float64Array(CHUNK * Dt);
  try {
    for (let start = 0; start < n; start += CHUNK) {
      throwIfAborted(signal);
      onProgress?.('self-influence', start, n);
      const k = Math.min(CHUNK, n - start);
      for (let r = 0; r < k; r++) rowInput(rows, start + r, x.subarray(r * Dt, (r + 1) * Dt));
      const q = (await kernel.run({ x: f64(x.subarray(0, k * Dt), [k, Dt]), hr: f64(hr, [Dt, P * C]) })).q
        .data as Float64Array;
      out.set(q, start * C * C);
    }
  } finally {
    await kernel.release();
  }
  return out;
}
