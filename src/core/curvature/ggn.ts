/**
 * Curvature over parameters beyond the head: the damped Gauss–Newton matrix
 * H = (1/n) Σ_i J_iᵀ A_i J_i + λI with J_i = ∂z_i/∂θ over the chosen layers and A_i = ∂²L/∂z² =
 * diag p − ppᵀ. For the head alone it is the exact Hessian; deeper it leaves out the second
 * derivatives of the network, as every influence method at this scale does.
 *
 * J_iᵀA_iJ_i = Σ_r (J_iᵀv_r)(J_iᵀv_r)ᵀ for the K columns v_r of a factor V with VVᵀ = A (here
 * v_r = √p_r (e_r − p)), so H comes from K backward passes per row (model/deep.ts batches them as
 * K× the rows) and float64 GEMMs. `DeepCurvature` is what the scores need of it: a scorer that
 * passes over the training rows and gives, per row, the test row's directions through H⁻¹ at one
 * or more dampings, and the quadratic form gᵀH⁻¹g.
 */
import * as ort from 'onnxruntime-node';
import { InfluenceError, throwIfAborted } from '../errors';
import type { DeepEngine, DeepKernel, RowFactors, TapForward } from '../model/deep';
import { F64, f64, type Kernel } from '../ort/graph';
import { gemm64Kernel } from '../ort/kernels';
import type { Task } from '../task/loss';
import { SpdInverter } from './inverse';

/** The largest parameter count for which `--curvature exact` forms and inverts the explicit P×P matrix. */
export const EXACT_GGN_MAX_P = 5000;

export type DeepCurvatureMethod = 'exact' | 'ekfac';

/** The test row as the curvature sees it: its Jacobian over the chosen parameters and its layer factors, each with the K logits' unit directions. */
export interface DeepTestRow {
  /** K×P: row a = J_tᵀe_a. */
  J: Float64Array;
  /** Per chosen layer: x (T×D̃) and s (K×T×out). */
  factors: RowFactors[];
}

/** Per training row: Y_j[i, a] = (J_tᵀe_a)ᵀ H_j⁻¹ ∇L_i at each damping λ_j, and with `self` ∇L_iᵀH⁻¹∇L_i at the curvature's own damping. */
export interface RowScores {
  /** One count×K array per damping. */
  y: Float64Array[];
  self: Float64Array | null;
}

export interface RowScorer {
  /** The rows of a forward batch, with their g (count×K). */
  run(fw: TapForward, g: Float64Array): Promise<RowScores>;
}

/** Per training row at the curvature's damping: uᵀH⁻¹∇L_i for a fixed u (null without one) and ∇L_iᵀH⁻¹∇L_i. */
export interface AuditRowScores {
  toward: Float64Array | null;
  self: Float64Array;
}

export interface AuditScorer {
  /** The rows of a forward batch, with their g (count×K). */
  run(fw: TapForward, g: Float64Array): Promise<AuditRowScores>;
}

/** What the scores need of the curvature over the chosen parameters. */
export interface DeepCurvature {
  readonly method: DeepCurvatureMethod;
  readonly damping: number;
  readonly P: number;
  /** A scorer of the training rows against `test` at the dampings given (no pass over the rows to make it). */
  scorer(
    deep: DeepEngine,
    test: DeepTestRow,
    dampings: number[],
    self: boolean,
    signal?: AbortSignal,
  ): Promise<RowScorer>;
  /** A scorer of the training rows for audit: against u over the chosen parameters (a held-out set's gradient sum), and their self-influence. */
  auditScorer(deep: DeepEngine, u: Float64Array | null, signal?: AbortSignal): Promise<AuditScorer>;
  /** H⁻¹u at the curvature's damping, u over the chosen parameters (P). */
  solve(u: Float64Array): Promise<Float64Array>;
  release(): Promise<void>;
}

/** Splits a J×k×K kernel output into J arrays of k×K, written at row `start` of `out` (count×K each). */
function scatterY(y: Float64Array, J: number, k: number, K: number, out: Float64Array[], start: number): void {
  for (let j = 0; j < J; j++) out[j].set(y.subarray(j * k * K, (j + 1) * k * K), start * K);
}

/** Runs `kernel` over a forward batch's rows, `step` rows per run, handing each run's outputs, first row and size to `take`. */
async function inSteps(
  kernel: DeepKernel,
  fw: TapForward,
  g: Float64Array,
  K: number,
  step: number,
  extra: Record<string, ort.Tensor>,
  take: (out: Record<string, Float64Array>, start: number, m: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  for (let s = 0; s < fw.count; s += step) {
    throwIfAborted(signal);
    const m = Math.min(step, fw.count - s);
    take(await kernel.run(fw, s, m, g.subarray(s * K, (s + m) * K), 1, extra), s, m);
  }
}

/** A RowScorer over a kernel with outputs y (J×m×K) and, with `self`, q (m). */
export function kernelRowScorer(
  kernel: DeepKernel,
  a: { step: number; J: number; K: number; self: boolean; extra: Record<string, ort.Tensor> },
  signal?: AbortSignal,
): RowScorer {
  const { J, K } = a;
  return {
    run: async (fw, g) => {
      const y = Array.from({ length: J }, () => new Float64Array(fw.count * K));
      const q = a.self ? new Float64Array(fw.count) : null;
      await inSteps(
        kernel,
        fw,
        g,
        K,
        a.step,
        a.extra,
        (out, s, m) => {
          scatterY(out.y, J, m, K, y, s);
          q?.set(out.q, s);
        },
        signal,
      );
      return { y, self: q };
    },
  };
}

/** An AuditScorer over a kernel with outputs q (m) and, with `toward`, y (m). */
export function kernelAuditScorer(
  kernel: DeepKernel,
  a: { step: number; K: number; toward: boolean; extra: Record<string, ort.Tensor> },
  signal?: AbortSignal,
): AuditScorer {
  return {
    run: async (fw, g) => {
      const self = new Float64Array(fw.count);
      const toward = a.toward ? new Float64Array(fw.count) : null;
      await inSteps(
        kernel,
        fw,
        g,
        a.K,
        a.step,
        a.extra,
        (out, s) => {
          self.set(out.q, s);
          toward?.set(out.y, s);
        },
        signal,
      );
      return { toward, self };
    },
  };
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

  /** (H₀ + λI)⁻¹. */
  private static async inverse(
    H0: Float64Array,
    P: number,
    damping: number,
    signal?: AbortSignal,
  ): Promise<Float64Array> {
    if (!(damping > 0) || !Number.isFinite(damping))
      throw new InfluenceError('BAD_OPTION', `damping must be a positive number; got ${damping}`);
    const H = Float64Array.from(H0);
    for (let q = 0; q < P; q++) H[q * P + q] += damping;
    const inv = await SpdInverter.create();
    try {
      throwIfAborted(signal);
      return await inv.invert(H, P, signal);
    } finally {
      await inv.release();
    }
  }

  static async create(H0: Float64Array, P: number, damping: number, signal?: AbortSignal): Promise<ExactGgn> {
    const Hinv = await ExactGgn.inverse(H0, P, damping, signal);
    return new ExactGgn(H0, P, damping, Hinv, await gemm64Kernel(0, 0));
  }

  /** H⁻¹bᵀ for the m rows b of B (m×P): m×P. */
  async solveRows(B: Float64Array, m: number, Hinv = this.Hinv): Promise<Float64Array> {
    // (H⁻¹bᵀ)ᵀ = b H⁻¹ (H⁻¹ is symmetric).
    return (await this.gemm.run({ a: f64(B, [m, this.P]), b: f64(Hinv, [this.P, this.P]) })).c.data as Float64Array;
  }

  /** From each row's whole gradient G (its P values): Y = G Vᵀ with V = J_t H_j⁻¹ for every damping, and Σ (G H⁻¹) ∘ G. */
  async scorer(
    deep: DeepEngine,
    test: DeepTestRow,
    dampings: number[],
    self: boolean,
    signal?: AbortSignal,
  ): Promise<RowScorer> {
    const { P } = this;
    const K = deep.K;
    const J = dampings.length;
    const V = new Float64Array(J * K * P);
    for (let j = 0; j < J; j++) {
      const Hinv = dampings[j] === this.damping ? this.Hinv : await ExactGgn.inverse(this.H0, P, dampings[j], signal);
      V.set(await this.solveRows(test.J, K, Hinv), j * K * P);
    }
    const kernel = await deep.kernel((g, b) => {
      const G = g.reshape(b.flat, [-1, P]);
      const y = g.reshape(g.gemm(G, g.input('v', F64, [J * K, P]), 0, 1), [-1, J, K]);
      g.output(g.op('Transpose', [y], { perm: [1, 0, 2] }), 'y', F64, [J, 'k', K]);
      if (self) {
        const GH = g.matmul(G, g.input('hinv', F64, [P, P]));
        g.output(g.reduceSum(g.mul(GH, G), [1], 0), 'q', F64, ['k']);
      }
    }, `exact:${J}:${self}`);
    const extra: Record<string, ort.Tensor> = { v: new ort.Tensor('float64', V, [J * K, P]) };
    if (self) extra.hinv = new ort.Tensor('float64', this.Hinv, [P, P]);
    // The kernel forms each row's whole gradient and its product with H⁻¹ (P values each).
    const step = deep.rowsPerRun(2, P);
    return kernelRowScorer(kernel, { step, J, K, self, extra }, signal);
  }

  async solve(u: Float64Array): Promise<Float64Array> {
    return this.solveRows(u, 1);
  }

  /** From each row's whole gradient G: G·(H⁻¹u) and Σ (G H⁻¹) ∘ G. */
  async auditScorer(deep: DeepEngine, u: Float64Array | null, signal?: AbortSignal): Promise<AuditScorer> {
    const { P } = this;
    const K = deep.K;
    throwIfAborted(signal);
    const extra: Record<string, ort.Tensor> = { hinv: new ort.Tensor('float64', this.Hinv, [P, P]) };
    if (u) extra.v = new ort.Tensor('float64', await this.solveRows(u, 1), [1, P]);
    const kernel = await deep.kernel(
      (g, b) => {
        const G = g.reshape(b.flat, [-1, P]);
        const GH = g.matmul(G, g.input('hinv', F64, [P, P]));
        g.output(g.reduceSum(g.mul(GH, G), [1], 0), 'q', F64, ['k']);
        if (u) g.output(g.reshape(g.gemm(G, g.input('v', F64, [1, P]), 0, 1), [-1]), 'y', F64, ['k']);
      },
      `exact-audit:${u !== null}`,
    );
    const step = deep.rowsPerRun(2, P);
    return kernelAuditScorer(kernel, { step, K, toward: u !== null, extra }, signal);
  }

  async release(): Promise<void> {
    await this.gemm.release();
  }
}
