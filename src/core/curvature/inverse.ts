/**
 * The inverse of a symmetric positive definite matrix by recursive block (Schur complement)
 * inversion, whose products are float64 GEMMs in onnxruntime (tens of GFLOP/s here, against about
 * one for plain JS loops): about 2P³ flops, a second or two at P = 2,570. Small blocks are
 * factored by Cholesky in JS.
 */
import { throwIfAborted } from '../errors';
import { cholesky, inverseFromCholesky, symmetrize } from '../linalg';
import { f64, type Kernel } from '../ort/graph';
import { gemm64Kernel } from '../ort/kernels';

/** Below this size a block is inverted in JS (its O(m³) is then cheaper than the GEMM calls). */
const LEAF = 320;

/** The sub-block rows [r0, r1) × cols [c0, c1) of an m-wide row-major matrix, copied. */
function block(M: Float64Array, m: number, r0: number, r1: number, c0: number, c1: number): Float64Array {
  const out = new Float64Array((r1 - r0) * (c1 - c0));
  for (let i = r0; i < r1; i++) out.set(M.subarray(i * m + c0, i * m + c1), (i - r0) * (c1 - c0));
  return out;
}

export class SpdInverter {
  private constructor(private readonly k: { nn: Kernel; tn: Kernel; nt: Kernel }) {}

  static async create(): Promise<SpdInverter> {
    const [nn, tn, nt] = await Promise.all([gemm64Kernel(0, 0), gemm64Kernel(1, 0), gemm64Kernel(0, 1)]);
    return new SpdInverter({ nn, tn, nt });
  }

  async release(): Promise<void> {
    await Promise.all([this.k.nn.release(), this.k.tn.release(), this.k.nt.release()]);
  }

  private async mul(
    kind: 'nn' | 'tn' | 'nt',
    a: Float64Array,
    ad: [number, number],
    b: Float64Array,
    bd: [number, number],
  ): Promise<Float64Array> {
    return (await this.k[kind].run({ a: f64(a, ad), b: f64(b, bd) })).c.data as Float64Array;
  }

  /**
   * M⁻¹ for an SPD m×m M (not modified). With M = [[A, B], [Bᵀ, D]]: W = A⁻¹B, S = D − BᵀW (SPD),
   * V = W S⁻¹, and M⁻¹ = [[A⁻¹ + V Wᵀ, −V], [−Vᵀ, S⁻¹]]. Throws BAD_OPTION when M is not positive
   * definite to working precision.
   */
  async invert(M: Float64Array, m: number, signal?: AbortSignal): Promise<Float64Array> {
    throwIfAborted(signal);
    if (m <= LEAF) {
      const L = Float64Array.from(M);
      cholesky(L, m);
      return inverseFromCholesky(L, m);
    }
    const h = m >> 1;
    const r = m - h;
    const Ai = await this.invert(block(M, m, 0, h, 0, h), h, signal);
    const B = block(M, m, 0, h, h, m);
    const W = await this.mul('nn', Ai, [h, h], B, [h, r]);
    const BtW = await this.mul('tn', B, [h, r], W, [h, r]);
    const S = block(M, m, h, m, h, m);
    for (let q = 0; q < S.length; q++) S[q] -= BtW[q];
    symmetrize(S, r);
    const Si = await this.invert(S, r, signal);
    const V = await this.mul('nn', W, [h, r], Si, [r, r]);
    const VWt = await this.mul('nt', V, [h, r], W, [h, r]);
    const out = new Float64Array(m * m);
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < h; j++) out[i * m + j] = Ai[i * h + j] + VWt[i * h + j];
      for (let j = 0; j < r; j++) {
        out[i * m + h + j] = -V[i * r + j];
        out[(h + j) * m + i] = -V[i * r + j];
      }
    }
    for (let i = 0; i < r; i++) out.set(Si.subarray(i * r, (i + 1) * r), (h + i) * m + h);
    symmetrize(out, m);
    return out;
  }
}
