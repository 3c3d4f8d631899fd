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
 * a second pass over the rows (the training pass's forward batches, when they were kept). The
 * statistics (the factors' sums and Λ) are float32 GEMMs summed in float64, as Kronfluence's
 * defaults: they are twice as fast as float64 and are averages whose 1e-7 rounding no score can
 * see beside the Kronecker approximation itself; the eigenbases and the scores are float64. The
 * scores run in each layer's rotated basis (G' = U_Sᵀ G U_A). A dense layer on rows (T = 1) has a rank-1 gradient per
 * direction, G = s x̃ᵀ, so G' = s'x'ᵀ is never formed: Σ_r G'_r² = (Σ_r s'_r²) ⊗ x'², the self-influence
 * is s'²ᵀ inv x'², and the test's directions, also rank-1, meet a row through
 * Σ_b s'_t[b] s'[b] Σ_c inv[b,c] x'_t[c] x'[c]: O(out·D̃) per row instead of O(K·out·D̃).
 */
import * as ort from 'onnxruntime-node';
import { throwIfAborted } from '../errors';
import { signals } from '../deepRows';
import { matmul, symmetricEigen, transpose } from '../linalg';
import type { DeepEngine, DeepKernel, PassRows, TapForward } from '../model/deep';
import { F32, F64, type GraphBuilder } from '../ort/graph';
import { taskFor } from '../task/loss';
import {
  curvatureDirections,
  kernelAuditScorer,
  kernelRowScorer,
  type AuditScorer,
  type DeepCurvature,
  type DeepTestRow,
  type RowScorer,
} from './ggn';

/** One chosen layer's EK-FAC. */
export interface EkfacBlock {
  out: number;
  Dt: number;
  /** Positions per row (1 for a dense layer on rows). */
  T: number;
  offset: number;
  P: number;
  /** Eigenvectors as columns: U_S (out×out), U_A (D̃×D̃). */
  US: Float64Array;
  UA: Float64Array;
  /** Σ_i Σ_r (U_Sᵀ G_ir U_A)², out×D̃ (damping-free). */
  lam: Float64Array;
}

const t64 = (data: Float64Array, dims: number[]) => new ort.Tensor('float64', data, dims);

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

  private constructor(
    readonly blocks: EkfacBlock[],
    readonly P: number,
    readonly n: number,
    readonly damping: number,
  ) {}

  /** Per block, 1/(Λ/n + λ) (out×D̃). */
  inverse(damping: number): Float64Array[] {
    return this.blocks.map((blk) => blk.lam.map((l) => 1 / (Math.max(l / this.n, 0) + damping)));
  }

  /** The curvature of n rows' blocks at a damping. */
  static create(blocks: EkfacBlock[], P: number, n: number, damping: number): LayerEkfac {
    return new LayerEkfac(blocks, P, n, damping);
  }

  /**
   * The factors' sums, fed by the training pass (`onBatch`), and `finish`, which computes the
   * eigenbases and runs the second pass (`pass`) for the corrected eigenvalues: the damping-free
   * blocks (what a cache keeps) that `create` turns into the curvature at a damping.
   */
  static collector(deep: DeepEngine): {
    onBatch: (fw: TapForward, g: Float64Array, labels: Int32Array) => Promise<void>;
    finish: (
      pass: (fn: (batch: PassRows, fw: TapForward) => Promise<void>) => Promise<unknown>,
      signal?: AbortSignal,
    ) => Promise<EkfacBlock[]>;
  } {
    const K = deep.K;
    const dims = deep.shapes;
    const A = dims.map((d) => new Float64Array(d.Dt * d.Dt));
    const S = dims.map((d) => new Float64Array(d.out * d.out));
    let factorK: DeepKernel | null = null;
    const step = deep.rowsPerRun(K);
    const onBatch = async (fw: TapForward, g: Float64Array, labels: Int32Array) => {
      factorK ??= await deep.kernel((gb, b) => {
        b.factors.forEach((f, q) => {
          const x = gb.cast(gb.reshape(f.x, [-1, f.Dt]), F32);
          const s = gb.cast(gb.reshape(f.s, [-1, f.layer.out]), F32);
          gb.output(gb.cast(gb.gemm(x, x, 1, 0), F64), `a${q}`, F64, [f.Dt, f.Dt]);
          gb.output(gb.cast(gb.gemm(s, s, 1, 0), F64), `s${q}`, F64, [f.layer.out, f.layer.out]);
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
      pass: (fn: (batch: PassRows, fw: TapForward) => Promise<void>) => Promise<unknown>,
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
          const { US, UA, out, Dt, T } = blocks[q];
          const sp = gb.matmul(gb.cast(f.s, F32), gb.constant(F32, [out, out], Float32Array.from(US)));
          const xp = gb.matmul(gb.cast(f.x, F32), gb.constant(F32, [Dt, Dt], Float32Array.from(UA)));
          let l: string;
          if (T === 1) {
            // Σ_i Σ_r s'_ir² ⊗ x'_i²: one GEMM of the rows' squares.
            const s2 = gb.reduceSum(gb.mul(sp, sp), [1, 2], 0);
            const x2 = gb.reshape(gb.mul(xp, xp), [-1, Dt]);
            l = gb.gemm(s2, x2, 1, 0);
          } else {
            const G = gb.matmul(gb.op('Transpose', [sp], { perm: [0, 1, 3, 2] }), xp);
            l = gb.reduceSum(gb.mul(G, G), [0, 1], 0);
          }
          gb.output(gb.cast(l, F64), `l${q}`, F64, [out, Dt]);
        });
      });
      // Conv layers form G' per row and direction.
      const lstep = deep.rowsPerRun(K, Math.max(0, ...blocks.filter((b) => b.T > 1).map((b) => b.P)));
      await pass(async (batch, fw) => {
        const { g } = signals(deep, fw.z, batch.labels, batch.count);
        for (let s = 0; s < fw.count; s += lstep) {
          throwIfAborted(signal);
          const m = Math.min(lstep, fw.count - s);
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
   * Rows in each layer's rotated basis. Dense layers (T = 1) with inputs ua, us (the bases), b
   * (J·out×D̃: inv_j[b,c]·x'_t[c]), st (out×K: the test's s'_t per logit) and inv (at λ); Conv
   * layers with v (J·K × out·D̃: inv_j ∘ G'_t per logit) and inv.
   */
  async scorer(
    deep: DeepEngine,
    test: DeepTestRow,
    dampings: number[],
    self: boolean,
    signal?: AbortSignal,
  ): Promise<RowScorer> {
    const K = deep.K;
    const J = dampings.length;
    const invs = dampings.map((d) => this.inverse(d));
    const extra = this.bases(self ? this.inverse(this.damping) : null);
    this.blocks.forEach((blk, q) => {
      const { out, Dt, T, US, UA } = blk;
      const { x, s } = test.factors[q];
      const xp = matmul(x, UA, T, Dt, Dt); // T×D̃
      const sp = matmul(s, US, K * T, out, out); // K×T×out
      if (T === 1) {
        const B = new Float64Array(J * out * Dt);
        for (let j = 0; j < J; j++)
          for (let b = 0; b < out; b++)
            for (let c = 0; c < Dt; c++) B[(j * out + b) * Dt + c] = invs[j][q][b * Dt + c] * xp[c];
        const st = new Float64Array(out * K);
        for (let a = 0; a < K; a++) for (let b = 0; b < out; b++) st[b * K + a] = sp[a * out + b];
        extra[`b${q}`] = t64(B, [J * out, Dt]);
        extra[`st${q}`] = t64(st, [out, K]);
      } else {
        // G'_ta = Σ_t s'_tat x'_ttᵀ, then inv_j ∘ G'_ta.
        const V = new Float64Array(J * K * out * Dt);
        for (let a = 0; a < K; a++) {
          const G = matmul(transpose(sp.subarray(a * T * out, (a + 1) * T * out), T, out), xp, out, T, Dt);
          for (let j = 0; j < J; j++) {
            const o = (j * K + a) * out * Dt;
            for (let e = 0; e < out * Dt; e++) V[o + e] = invs[j][q][e] * G[e];
          }
        }
        extra[`v${q}`] = t64(V, [J * K, out * Dt]);
      }
    });
    const kernel = await deep.kernel((g, b) => {
      let y: string | null = null;
      let q: string | null = null;
      b.factors.forEach((f, l) => {
        const { out, Dt, T } = this.blocks[l];
        const { xp, sp } = this.rotatedRows(g, f, l);
        let yl: string;
        let ql: string | null = null;
        if (T === 1) {
          const x1 = g.reshape(xp, [-1, Dt]);
          const s1 = g.reshape(sp, [-1, 1, out]);
          // W[i, j, b] = Σ_c inv_j[b,c] x'_t[c] x'_i[c]; Y[j, i, a] = Σ_b s'_t[a,b] s'_i[b] W[i, j, b].
          const W = g.reshape(g.gemm(x1, g.input(`b${l}`, F64, [J * out, Dt]), 0, 1), [-1, J, out]);
          const sw = g.op('Transpose', [g.mul(W, s1)], { perm: [1, 0, 2] });
          yl = g.matmul(sw, g.input(`st${l}`, F64, [out, K]));
          if (self) {
            const w2 = g.gemm(g.mul(x1, x1), g.input(`inv${l}`, F64, [out, Dt]), 0, 1);
            const s2 = g.reshape(g.mul(s1, s1), [-1, out]);
            ql = g.reduceSum(g.mul(w2, s2), [1], 0);
          }
        } else {
          const G = g.reshape(g.matmul(g.op('Transpose', [sp], { perm: [0, 1, 3, 2] }), xp), [-1, out * Dt]);
          const yy = g.reshape(g.gemm(G, g.input(`v${l}`, F64, [J * K, out * Dt]), 0, 1), [-1, J, K]);
          yl = g.op('Transpose', [yy], { perm: [1, 0, 2] });
          if (self) ql = g.reduceSum(g.mul(g.mul(G, G), g.input(`inv${l}`, F64, [out * Dt])), [1], 0);
        }
        y = y ? g.add(y, yl) : yl;
        if (ql) q = q ? g.add(q, ql) : ql;
      });
      g.output(y!, 'y', F64, [J, 'k', K]);
      if (q) g.output(q, 'q', F64, ['k']);
    }, `ekfac:${this.shapes()}:${J}:${self}`);
    return kernelRowScorer(kernel, { step: this.rowStep(deep), J, K, self, extra }, signal);
  }

  /** Per layer block U (out×D̃ of u): U_S (inv ∘ (U_Sᵀ U U_A)) U_Aᵀ. */
  async solve(u: Float64Array): Promise<Float64Array> {
    const out = new Float64Array(u.length);
    const inv = this.inverse(this.damping);
    this.blocks.forEach((b, q) => {
      const r = this.rotated(b, u.subarray(b.offset, b.offset + b.P));
      for (let e = 0; e < r.length; e++) r[e] *= inv[q][e];
      out.set(matmul(matmul(b.US, r, b.out, b.out, b.Dt), transpose(b.UA, b.Dt, b.Dt), b.out, b.Dt, b.Dt), b.offset);
    });
    return out;
  }

  /** U_Sᵀ U U_A for a block's values U (out×D̃). */
  private rotated(b: EkfacBlock, U: Float64Array): Float64Array {
    return matmul(matmul(transpose(b.US, b.out, b.out), U, b.out, b.out, b.Dt), b.UA, b.out, b.Dt, b.Dt);
  }

  /** The scorers' inputs ua, us (every block's eigenbases) and, given `inv`, inv (1/(Λ/n + λ) per block). */
  private bases(inv: Float64Array[] | null): Record<string, ort.Tensor> {
    const extra: Record<string, ort.Tensor> = {};
    this.blocks.forEach(({ out, Dt, T, US, UA }, q) => {
      extra[`ua${q}`] = t64(UA, [Dt, Dt]);
      extra[`us${q}`] = t64(US, [out, out]);
      if (inv) extra[`inv${q}`] = t64(inv[q], T === 1 ? [out, Dt] : [out * Dt]);
    });
    return extra;
  }

  /** In a scorer's graph, layer l's row factors in its eigenbases: x' = x U_A, s' = s U_S. */
  private rotatedRows(g: GraphBuilder, f: { x: string; s: string }, l: number): { xp: string; sp: string } {
    const { out, Dt } = this.blocks[l];
    return {
      xp: g.matmul(f.x, g.input(`ua${l}`, F64, [Dt, Dt])),
      sp: g.matmul(f.s, g.input(`us${l}`, F64, [out, out])),
    };
  }

  /** The blocks' kinds, in a shared kernel's key (dense on rows, or with positions). */
  private shapes(): string {
    return this.blocks.map((b) => `${b.T === 1 ? 1 : 'T'}`).join('');
  }

  /** Rows per scorer run: Conv layers form G' per row (out·D̃ values). */
  private rowStep(deep: DeepEngine): number {
    return deep.rowsPerRun(1, Math.max(0, ...this.blocks.filter((b) => b.T > 1).map((b) => b.P)));
  }

  /**
   * audit's rows in each layer's rotated basis, with inputs ua, us (the bases), inv (at λ) and, with
   * u, v = inv ∘ (U_Sᵀ U U_A) for u's block U (out×D̃): uᵀH⁻¹∇L_i = Σ_layers ⟨G'_i, v⟩, which for a
   * dense layer on rows (G'_i = s'x'ᵀ) is s'ᵀ v x'.
   */
  async auditScorer(deep: DeepEngine, u: Float64Array | null, signal?: AbortSignal): Promise<AuditScorer> {
    const K = deep.K;
    const inv = this.inverse(this.damping);
    const extra = this.bases(inv);
    this.blocks.forEach((blk, q) => {
      const { out, Dt, T, offset, P } = blk;
      if (u) {
        const V = this.rotated(blk, u.subarray(offset, offset + P));
        for (let e = 0; e < V.length; e++) V[e] *= inv[q][e];
        extra[`v${q}`] = t64(V, T === 1 ? [out, Dt] : [1, out * Dt]);
      }
    });
    const kernel = await deep.kernel(
      (g, b) => {
        let y: string | null = null;
        let q: string | null = null;
        b.factors.forEach((f, l) => {
          const { out, Dt, T } = this.blocks[l];
          const { xp, sp } = this.rotatedRows(g, f, l);
          let yl: string | null = null;
          let ql: string;
          if (T === 1) {
            const x1 = g.reshape(xp, [-1, Dt]);
            const s1 = g.reshape(sp, [-1, out]);
            const w2 = g.gemm(g.mul(x1, x1), g.input(`inv${l}`, F64, [out, Dt]), 0, 1);
            ql = g.reduceSum(g.mul(w2, g.mul(s1, s1)), [1], 0);
            if (u) yl = g.reduceSum(g.mul(g.gemm(x1, g.input(`v${l}`, F64, [out, Dt]), 0, 1), s1), [1], 0);
          } else {
            const G = g.reshape(g.matmul(g.op('Transpose', [sp], { perm: [0, 1, 3, 2] }), xp), [-1, out * Dt]);
            ql = g.reduceSum(g.mul(g.mul(G, G), g.input(`inv${l}`, F64, [out * Dt])), [1], 0);
            if (u) yl = g.reshape(g.gemm(G, g.input(`v${l}`, F64, [1, out * Dt]), 0, 1), [-1]);
          }
          q = q ? g.add(q, ql) : ql;
          if (yl) y = y ? g.add(y, yl) : yl;
        });
        g.output(q!, 'q', F64, ['k']);
        if (y) g.output(y, 'y', F64, ['k']);
      },
      `ekfac-audit:${this.shapes()}:${u !== null}`,
    );
    return kernelAuditScorer(kernel, { step: this.rowStep(deep), K, toward: u !== null, extra }, signal);
  }

  async release(): Promise<void> {}
}
