/**
 * The curvature of the head's damped training objective, H = (1/n) Σ_i A_i ⊗ x̃_ix̃_iᵀ + λI, as the
 * scores use it: H⁻¹b for a few right-hand sides, and Q_i = (I⊗x̃_i)ᵀH⁻¹(I⊗x̃_i) per row. The policy
 * picks how: an explicit factorisation or EK-FAC-preconditioned CG in float64 JS (exact.ts), or
 * the ORT fast path (fast.ts) for large problems.
 */
import { InfluenceError, type Progress } from '../errors';
import { cholesky, inverseFromCholesky, symMatVec } from '../linalg';
import { headDims, type HeadRows } from '../task/head';
import { Ekfac } from './ekfac';
import { denseHessian, exactQuad, solveCg } from './exact';
import { FastCurvature } from './fast';
import { chooseMethods, type ComputePath, type CurvatureOptions, type SelfInfluenceMethod, type SolverKind } from './policy';

/** How H⁻¹ is applied: an explicit factorisation, or CG with an EK-FAC preconditioner. */
export class Curvature {
  readonly solver: SolverKind;
  readonly selfMethod: SelfInfluenceMethod;
  readonly path: ComputePath;
  readonly seconds: Record<string, number> = {};
  cgIterations: number | null = null;
  private Hinv: Float64Array | null = null;
  /** The exact path's undamped Hessian H₀/n, kept so that another damping costs one factorisation. */
  private H0: Float64Array | null = null;
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

  static async create(rows: HeadRows, damping: number, opts: CurvatureOptions = {}): Promise<Curvature> {
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
      curv.H0 = denseHessian(rows, 0, opts.signal, opts.onProgress);
      lap('hessian');
      curv.factor();
      lap('factor');
    }
    if (curv.solver === 'cg' || curv.selfMethod === 'ekfac') {
      curv.ekfac = new Ekfac(rows, damping, opts.signal);
      lap('ekfac');
    }
    return curv;
  }

  /** H⁻¹ = (H₀/n + λI)⁻¹ by Cholesky. */
  private factor(): void {
    const H = Float64Array.from(this.H0!);
    for (let q = 0; q < this.P; q++) H[q * this.P + q] += this.damping;
    cholesky(H, this.P);
    this.Hinv = inverseFromCholesky(H, this.P);
  }

  /** The same curvature at another damping, from the statistics already computed (no pass over the rows). */
  withDamping(damping: number): Curvature {
    if (!(damping > 0) || !Number.isFinite(damping)) throw new InfluenceError('BAD_OPTION', `damping must be a positive number; got ${damping}`);
    const c = new Curvature(this.rows, damping, { solver: this.solver, selfMethod: this.selfMethod, path: this.path });
    const t0 = performance.now();
    c.H0 = this.H0;
    if (c.H0) c.factor();
    c.ekfac = this.ekfac?.withDamping(damping) ?? null;
    c.fast = this.fast?.withDamping(damping) ?? null;
    c.seconds.factor = (performance.now() - t0) / 1000;
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
