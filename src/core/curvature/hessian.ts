/**
 * The fast path's explicit head Hessian H₀ = Σ_i A_i ⊗ x̃_ix̃_iᵀ (with X̃ᵀX̃ and Σ A_i for EK-FAC),
 * summed chunk by chunk with kernels.hessianKernel: float32 products of float64 weights, summed
 * per chunk in float64. HessianSum does it in the calling thread; feeder.ts does it in a worker
 * thread during the forward pass.
 */
import { addInto } from '../linalg';
import { f32, f64, type Kernel } from '../ort/graph';
import { HESSIAN_BLOCK, hessianKernel } from '../ort/kernels';
import type { HeadShape } from '../task/head';
import type { HessianPartial } from './hessianProtocol';

export interface HessianStats {
  /** Σ_i A_i ⊗ x̃_ix̃_iᵀ, P×P (not divided by n). */
  H0: Float64Array;
  /** X̃ᵀX̃, D̃×D̃. */
  S: Float64Array;
  /** Σ_i A_i, C×C. */
  Abar: Float64Array;
  /** Rows summed. */
  n: number;
}

export class HessianSum {
  private readonly Dt: number;
  private readonly blocks: { j0: number; j1: number; acc: Float64Array }[] = [];
  private readonly asum: Float64Array;
  private ones = new Float32Array(0);
  private n = 0;

  private constructor(
    private readonly shape: HeadShape,
    private kernel: Kernel | null,
  ) {
    const { C, D, bias } = shape;
    this.Dt = D + (bias ? 1 : 0);
    const W = (C * (C + 1)) / 2 + 1;
    for (let j0 = 0; j0 < this.Dt; j0 += HESSIAN_BLOCK) {
      const j1 = Math.min(this.Dt, j0 + HESSIAN_BLOCK);
      this.blocks.push({ j0, j1, acc: new Float64Array(W * (j1 - j0) * (this.Dt - j0)) });
    }
    this.asum = new Float64Array(W);
  }

  /** `threads`: onnxruntime intra-op threads (default: every core); `precision`: of the products (float32 on the fast path). */
  static async create(shape: HeadShape, threads?: number, precision: 'f32' | 'f64' = 'f32'): Promise<HessianSum> {
    return new HessianSum(shape, await hessianKernel(shape, threads, precision));
  }

  /** A sum with no kernel, for merging partial sums into. */
  static empty(shape: HeadShape): HessianSum {
    return new HessianSum(shape, null);
  }

  get rows(): number {
    return this.n;
  }

  /** The raw sums (before assembly), to be merged into another HessianSum of the same shape. */
  partial(): HessianPartial {
    return { blocks: this.blocks.map((b) => b.acc), asum: this.asum, n: this.n };
  }

  merge(p: HessianPartial): void {
    this.blocks.forEach((b, i) => addInto(b.acc, p.blocks[i]));
    addInto(this.asum, p.asum);
    this.n += p.n;
  }

  /** Adds k rows: h (k×D float32) and p (k×C float64). */
  async add(h: Float32Array, p: Float64Array, k: number): Promise<void> {
    if (!this.kernel) throw new Error('HessianSum is finished');
    const { C, D, bias } = this.shape;
    if (this.ones.length < k) this.ones = new Float32Array(k).fill(1);
    const out = await this.kernel.run({
      h: f32(h.subarray(0, k * D), [k, D]),
      ...(bias ? { ones: f32(this.ones.subarray(0, k), [k, 1]) } : {}),
      p: f64(p.subarray(0, k * C), [k, C]),
    });
    this.blocks.forEach((b, i) => addInto(b.acc, out[`r${i}`].data as Float32Array | Float64Array));
    addInto(this.asum, out.asum.data as Float64Array);
    this.n += k;
  }

  /** The sums, assembled (and the kernel released). */
  async finish(): Promise<HessianStats> {
    await this.release();
    const { C } = this.shape;
    const Dt = this.Dt;
    const P = C * Dt;
    const H0 = new Float64Array(P * P);
    const S = new Float64Array(Dt * Dt);
    const Abar = new Float64Array(C * C);
    for (const { j0, j1, acc } of this.blocks) {
      const m = (j1 - j0) * (Dt - j0);
      let q = 0;
      for (let c = 0; c < C; c++) {
        for (let d = c; d < C; d++, q++) {
          for (let j = j0; j < j1; j++) {
            // Block (c,d) is symmetric in the features: entry (j,k) also fills (k,j), and both of (d,c)'s.
            for (let k = j; k < Dt; k++) {
              const v = acc[q * m + (j - j0) * (Dt - j0) + (k - j0)];
              H0[(c * Dt + j) * P + d * Dt + k] = v;
              H0[(c * Dt + k) * P + d * Dt + j] = v;
              H0[(d * Dt + k) * P + c * Dt + j] = v;
              H0[(d * Dt + j) * P + c * Dt + k] = v;
            }
          }
        }
      }
      for (let j = j0; j < j1; j++) {
        for (let k = j; k < Dt; k++) S[j * Dt + k] = S[k * Dt + j] = acc[q * m + (j - j0) * (Dt - j0) + (k - j0)];
      }
    }
    let q = 0;
    for (let c = 0; c < C; c++) for (let d = c; d < C; d++, q++) Abar[c * C + d] = Abar[d * C + c] = this.asum[q];
    return { H0, S, Abar, n: this.n };
  }

  async release(): Promise<void> {
    const k = this.kernel;
    this.kernel = null;
    await k?.release();
  }
}
