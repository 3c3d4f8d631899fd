/**
 * Curvature over parameters beyond the head: the damped Gauss–Newton matrix
 * H = (1/n) Σ_i J_iᵀ A_i J_i + λI with J_i = ∂z_i/∂θ over the chosen layers and A_i = ∂²L/∂z² =
 * diag p − ppᵀ. For the head alone it is the exact Hessian; deeper it leaves out the second
 * derivatives of the network, as every influence method at this scale does.
 *
 * J_iᵀA_iJ_i = Σ_r (J_iᵀv_r)(J_iᵀv_r)ᵀ for the K columns v_r of a factor V with VVᵀ = A (here
 * v_r = √p_r (e_r − p)), so H comes from K backward passes per row (model/deep.ts batches them as
 * K× the rows) and float64 GEMMs. `DeepCurvature` is what the scores need of it: H⁻¹ applied to
 * rows, and the quadratic forms gᵀH⁻¹g.
 */
import { InfluenceError, throwIfAborted } from '../errors';
import { f64, type Kernel } from '../ort/graph';
import { gemm64Kernel } from '../ort/kernels';
import type { Task } from '../task/loss';
import { SpdInverter } from './inverse';

/** The largest parameter count for which `--curvature exact` forms and inverts the explicit P×P matrix. */
export const EXACT_GGN_MAX_P = 5000;

export type DeepCurvatureMethod = 'exact' | 'ekfac';

/** What the scores need of the curvature over the chosen parameters. */
export interface DeepCurvature {
  readonly method: DeepCurvatureMethod;
  readonly damping: number;
  readonly P: number;
  /** H⁻¹b for the m rows b of B (m×P, row-major): m×P. */
  solveRows(B: Float64Array, m: number): Promise<Float64Array>;
  /** bᵀH⁻¹b for each of the m rows of B. */
  quad(B: Float64Array, m: number): Promise<Float64Array>;
  /** The same curvature at another damping (no pass over the rows). */
  withDamping(damping: number, signal?: AbortSignal): Promise<DeepCurvature>;
  release(): Promise<void>;
}

/**
 * Row r of the K×K block `out` (at offset o) = v_r, the r-th column of V = diag(√p) − p√pᵀ (VVᵀ = diag p − ppᵀ
 * because Σp = 1), for a softmax row with signal g = p − e_y; the single entry √(p(1 − p)) for a
 * binary one. 1 − p_y is taken as −g_y, so that a confident row keeps the digits of its small curvature.
 */
export function curvatureDirections(
  task: Task,
  g: Float64Array,
  go: number,
  y: number,
  out: Float64Array,
  o: number,
): void {
  const K = task.K;
  if (K === 1) {
    const p = g[go] + y;
    const q = y ? -g[go] : 1 - g[go];
    out[o] = Math.sqrt(Math.max(p * q, 0));
    return;
  }
  for (let r = 0; r < K; r++) {
    const pr = g[go + r] + (r === y ? 1 : 0);
    const sr = Math.sqrt(Math.max(pr, 0));
    for (let c = 0; c < K; c++) {
      const pc = g[go + c] + (c === y ? 1 : 0);
      // δ_rc − p_c, with 1 − p_y = −g_y.
      const v = c === r ? (c === y ? -g[go + c] : 1 - pc) : -pc;
      out[o + r * K + c] = sr * v;
    }
  }
}

/** Σ_q a[i,q]·b[i,q] for each of the m rows. */
function rowDots(a: Float64Array, b: Float64Array, m: number, P: number): Float64Array {
  const out = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    let s = 0;
    for (let q = i * P; q < (i + 1) * P; q++) s += a[q] * b[q];
    out[i] = s;
  }
  return out;
}

/** The exact damped GGN: the explicit inverse of H₀ + λI (H₀ = (1/n) Σ J_iᵀA_iJ_i, P×P, float64). */
export class ExactGgn implements DeepCurvature {
  readonly method = 'exact';

  private constructor(
    /** The undamped mean H₀, kept so that another damping costs one inversion. */
    readonly H0: Float64Array,
    readonly P: number,
    readonly damping: number,
    private readonly Hinv: Float64Array,
    private readonly gemm: Kernel,
  ) {}

  static check(P: number, what: string): void {
    if (P > EXACT_GGN_MAX_P) {
      throw new InfluenceError(
        'BAD_OPTION',
        `--curvature exact forms and inverts the explicit ${P}×${P} Gauss–Newton matrix of ${what}; it is limited to ${EXACT_GGN_MAX_P.toLocaleString('en-US')} parameters: choose fewer layers with --layers, or leave out --curvature exact for EK-FAC`,
      );
    }
  }

  static async create(H0: Float64Array, P: number, damping: number, signal?: AbortSignal): Promise<ExactGgn> {
    if (!(damping > 0) || !Number.isFinite(damping))
      throw new InfluenceError('BAD_OPTION', `damping must be a positive number; got ${damping}`);
    const H = Float64Array.from(H0);
    for (let q = 0; q < P; q++) H[q * P + q] += damping;
    const inv = await SpdInverter.create();
    let Hinv: Float64Array;
    try {
      throwIfAborted(signal);
      Hinv = await inv.invert(H, P, signal);
    } finally {
      await inv.release();
    }
    return new ExactGgn(H0, P, damping, Hinv, await gemm64Kernel(0, 0));
  }

  async solveRows(B: Float64Array, m: number): Promise<Float64Array> {
    // (H⁻¹bᵀ)ᵀ = b H⁻¹ (H⁻¹ is symmetric).
    return (await this.gemm.run({ a: f64(B, [m, this.P]), b: f64(this.Hinv, [this.P, this.P]) })).c
      .data as Float64Array;
  }

  async quad(B: Float64Array, m: number): Promise<Float64Array> {
    return rowDots(await this.solveRows(B, m), B, m, this.P);
  }

  async withDamping(damping: number, signal?: AbortSignal): Promise<ExactGgn> {
    return ExactGgn.create(this.H0, this.P, damping, signal);
  }

  async release(): Promise<void> {
    await this.gemm.release();
  }
}
