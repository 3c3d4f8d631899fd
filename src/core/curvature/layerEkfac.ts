/**
 * EK-FAC over layers beyond the head (George et al. 2018; Grosse et al. 2023): block-diagonal
 * across the chosen layers, and within layer l, H_l ≈ (U_S ⊗ U_A) diag(Λ_l) (U_S ⊗ U_A)ᵀ + λI,
 * where U_A and U_S are the eigenbases of the Kronecker factors E[Σ_t x̃_t x̃_tᵀ] (the layer's input,
 * or a Conv's patches, with the bias's 1) and E[Σ_r Σ_t s_rt s_rtᵀ] (the backward signals of the K
 * directions v_r with Σ_r v_r v_rᵀ = A, the GGN's own factors: for the head this is E[A] as in
 * ekfac.ts), and Λ_l is the exact diagonal of the layer's GGN block in that basis,
 * Λ_l[a,b] = (1/n) Σ_i Σ_r (U_Sᵀ G_ir U_A)[a,b]² with G_ir = Σ_t s_rt x̃_tᵀ.
 *
 * Two passes: the factors during the training pass (deepRows.ts, onBatch), then the eigenvalues in
 * a second pass over the file. Every product runs in our float64 ORT graphs.
 */
import * as ort from 'onnxruntime-node';
import { throwIfAborted } from '../errors';
import type { Batch } from '../data/table';
import { signals, runRows } from '../deepRows';
import { symmetricEigen, transpose } from '../linalg';
import type { DeepEngine, DeepForward, DeepKernel } from '../model/deep';
import { F64, GraphBuilder, type Kernel } from '../ort/graph';
import { taskFor } from '../task/loss';
import { curvatureDirections, type DeepCurvature } from './ggn';

/** One layer's damping-free statistics: what a cache keeps and `withDamping` reuses. */
export interface EkfacBlock {
  out: number;
  Dt: number;
  offset: number;
  P: number;
  /** Eigenvectors as columns: U_S (out×out), U_A (D̃×D̃). */
  US: Float64Array;
  UA: Float64Array;
  /** Σ_i Σ_r (U_Sᵀ G_ir U_A)², out×D̃ (damping-free). */
  lam: Float64Array;
}

/** The K curvature directions of k rows (k×K×K) from their g and labels. */
function directions(deep: DeepEngine, g: Float64Array, labels: Int32Array, start: number, k: number): Float64Array {
  const K = deep.K;
  const task = taskFor(K);
  const sig = new Float64Array(k * K * K);
  for (let r = 0; r < k; r++) curvatureDirections(task, g, (start + r) * K, labels[start + r], sig, r * K * K);
  return sig;
}

export class LayerEkfac implements DeepCurvature {
  readonly method = 'ekfac';

  /** Per block, 1/(Λ/n + λ). */
  private readonly inv: Float64Array[];

  private constructor(
    private readonly blocks: EkfacBlock[],
    readonly P: number,
    readonly n: number,
    readonly damping: number,
    private readonly kernel: Kernel,
  ) {
    this.inv = blocks.map((blk) => blk.lam.map((l) => 1 / (Math.max(l / n, 0) + damping)));
  }

  /**
   * The factors' sums, fed by the training pass (`onBatch`), and `finish`, which computes the
   * eigenbases and runs the second pass (`pass`) for the corrected eigenvalues: the damping-free
   * blocks that `create` turns into the curvature at a damping.
   */
  static collector(deep: DeepEngine): {
    onBatch: (fw: DeepForward, g: Float64Array, labels: Int32Array) => Promise<void>;
    finish: (
      pass: (fn: (batch: Batch, fw: DeepForward) => Promise<void>) => Promise<unknown>,
      signal?: AbortSignal,
    ) => Promise<EkfacBlock[]>;
  } {
    const K = deep.K;
    const dims = deep.chosen.map((l) => ({ out: l.out, Dt: l.fanIn + (l.bias ? 1 : 0) }));
    const A = dims.map((d) => new Float64Array(d.Dt * d.Dt));
    const S = dims.map((d) => new Float64Array(d.out * d.out));
    let factorK: DeepKernel | null = null;
    const step = runRows(deep, K);
    const onBatch = async (fw: DeepForward, g: Float64Array, labels: Int32Array) => {
      factorK ??= await deep.kernel((gb, b) => {
        b.factors.forEach((f, q) => {
          const x = gb.reshape(f.x, [-1, f.Dt]);
          const s = gb.reshape(f.s, [-1, f.layer.out]);
          gb.output(gb.gemm(x, x, 1, 0), `a${q}`, F64, [f.Dt, f.Dt]);
          gb.output(gb.gemm(s, s, 1, 0), `s${q}`, F64, [f.layer.out, f.layer.out]);
        });
      });
      for (let s = 0; s < fw.count; s += step) {
        const m = Math.min(step, fw.count - s);
        const out = await factorK.run(fw, s, m, directions(deep, g, labels, s, m), K);
        dims.forEach((_, q) => {
          const a = out[`a${q}`];
          const t = out[`s${q}`];
          for (let e = 0; e < a.length; e++) A[q][e] += a[e];
          for (let e = 0; e < t.length; e++) S[q][e] += t[e];
        });
      }
    };
    const finish = async (
      pass: (fn: (batch: Batch, fw: DeepForward) => Promise<void>) => Promise<unknown>,
      signal?: AbortSignal,
    ): Promise<EkfacBlock[]> => {
      throwIfAborted(signal);
      const blocks: EkfacBlock[] = dims.map((d, q) => ({
        ...d,
        offset: deep.offsets[q],
        P: deep.chosen[q].parameters,
        UA: symmetricEigen(A[q], d.Dt).vectors,
        US: symmetricEigen(S[q], d.out).vectors,
        lam: new Float64Array(d.out * d.Dt),
      }));
      const lamK = await deep.kernel((gb, b) => {
        b.factors.forEach((f, q) => {
          const { US, UA } = blocks[q];
          const sp = gb.matmul(f.s, gb.constant(F64, [f.layer.out, f.layer.out], US));
          const xp = gb.matmul(f.x, gb.constant(F64, [f.Dt, f.Dt], UA));
          const G = gb.matmul(gb.op('Transpose', [sp], { perm: [0, 1, 3, 2] }), xp);
          gb.output(gb.reduceSum(gb.mul(G, G), [0, 1], 0), `l${q}`, F64, [f.layer.out, f.Dt]);
        });
      });
      await pass(async (batch, fw) => {
        const { g } = signals(deep, fw.z, batch.labels, batch.count);
        for (let s = 0; s < fw.count; s += step) {
          throwIfAborted(signal);
          const m = Math.min(step, fw.count - s);
          const out = await lamK.run(fw, s, m, directions(deep, g, batch.labels, s, m), K);
          blocks.forEach((blk, q) => {
            const l = out[`l${q}`];
            for (let e = 0; e < l.length; e++) blk.lam[e] += l[e];
          });
        }
      });
      return blocks;
    };
    return { onBatch, finish };
  }

  /**
   * The curvature of n rows' blocks at a damping. The apply kernel: input b (m×P) and per block
   * inv{q} (out×D̃, 1/denominators); outputs x = H⁻¹b (m×P) and q = bᵀH⁻¹b (m).
   */
  static async create(blocks: EkfacBlock[], P: number, n: number, damping: number): Promise<LayerEkfac> {
    const g = new GraphBuilder();
    const B = g.input('b', F64, ['m', P]);
    const parts: string[] = [];
    let quad: string | null = null;
    blocks.forEach((blk, q) => {
      const { out, Dt } = blk;
      const V = g.reshape(g.op('Slice', [B, g.ints([blk.offset]), g.ints([blk.offset + blk.P]), g.ints([1])]), [
        -1,
        out,
        Dt,
      ]);
      const t = g.matmul(
        g.matmul(g.constant(F64, [out, out], transpose(blk.US, out, out)), V),
        g.constant(F64, [Dt, Dt], blk.UA),
      );
      const u = g.mul(t, g.input(`inv${q}`, F64, [out, Dt]));
      const qq = g.reduceSum(g.mul(t, u), [1, 2], 0);
      quad = quad ? g.add(quad, qq) : qq;
      parts.push(
        g.reshape(
          g.matmul(
            g.matmul(g.constant(F64, [out, out], blk.US), u),
            g.constant(F64, [Dt, Dt], transpose(blk.UA, Dt, Dt)),
          ),
          [-1, blk.P],
        ),
      );
    });
    g.output(parts.length === 1 ? parts[0] : g.op('Concat', parts, { axis: 1 }), 'x', F64, ['m', P]);
    g.output(quad!, 'q', F64, ['m']);
    return new LayerEkfac(blocks, P, n, damping, await g.session());
  }

  private feeds(B: Float64Array, m: number): Record<string, ort.Tensor> {
    const feeds: Record<string, ort.Tensor> = { b: new ort.Tensor('float64', B, [m, this.P]) };
    this.blocks.forEach((blk, q) => {
      feeds[`inv${q}`] = new ort.Tensor('float64', this.inv[q], [blk.out, blk.Dt]);
    });
    return feeds;
  }

  async solveRows(B: Float64Array, m: number): Promise<Float64Array> {
    return (await this.kernel.run(this.feeds(B, m))).x.data as Float64Array;
  }

  async quad(B: Float64Array, m: number): Promise<Float64Array> {
    return (await this.kernel.run(this.feeds(B, m))).q.data as Float64Array;
  }

  async withDamping(damping: number): Promise<LayerEkfac> {
    return LayerEkfac.create(this.blocks, this.P, this.n, damping);
  }

  async release(): Promise<void> {
    await this.kernel.release();
  }
}
