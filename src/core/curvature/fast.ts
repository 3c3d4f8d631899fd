/**
 * The fast path's curvature for large problems: EK-FAC factors from float64 ORT products, the
 * explicit H₀ (P ≤ FAST_DENSE_MAX_P) or matrix-free float32 Hessian-vector products, and block CG.
 * Everything is class-centred: with A_i 1 = 0, H(1 ⊗ v) = λ(1 ⊗ v), so the class-mean part of a
 * right-hand side is solved exactly and CG works in the subspace that H keeps invariant.
 */
import { InfluenceError, throwIfAborted, type Progress } from '../errors';
import { addInto, blockGram, combineInto, dot, solveSpd, symmetricEigen, symmetrize } from '../linalg';
import { f32, f64, i32, i64, type Feed, type Kernel } from '../ort/graph';
import {
  CHUNK,
  denseHvpKernel,
  gramKernel,
  HeadFeed,
  hvpKernel,
  lambdaKernel,
  preconditionKernel,
} from '../ort/kernels';
import { centerClasses, headDims, type HeadRows, type HeadShape } from '../task/head';
import { argmax, probabilities } from '../task/loss';
import { HessianSum, type HessianStats } from './hessian';
import { explicitHessian, type CurvatureOptions } from './policy';
/** Relative residual at which the fast path's CG stops (matrix-free products: each costs a pass over the rows). */
const FAST_CG_TOL = 3e-7;
/** With the explicit Hessian a product costs milliseconds: CG goes on to this residual. */
const DENSE_CG_TOL = 1e-10;
/** Cache name (and version) of the fast path's curvature. */
const CURVATURE_ENTRY = 'curvature1';

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
  private readonly feed: HeadFeed;
  private readonly pBuf: Float64Array;
  readonly shape: HeadShape;
  /** D̃ and P of the head. */
  readonly Dt: number;
  readonly P: number;
  UA: Float64Array = new Float64Array(0);
  US: Float64Array = new Float64Array(0);
  /** The eigenvector of Ā along 1 (Ā1 = 0), and how much of it lies off 1 (for the row pass's Neumann bound). */
  nullColumn = 0;
  nullLeak = 1;
  denom: Float64Array = new Float64Array(0);
  /** EK-FAC's eigenvalue sums (damping-free). */
  private lam: Float64Array = new Float64Array(0);

  private constructor(
    readonly rows: HeadRows,
    readonly damping: number,
  ) {
    const { C, D, bias } = rows;
    this.shape = { C, D, bias };
    ({ Dt: this.Dt, P: this.P } = headDims(rows));
    // The GEMMs here are float32: a float64 h is rounded once.
    this.feed = new HeadFeed(rows, true);
    this.pBuf = new Float64Array(CHUNK * C);
  }

  /** Rows grouped by their most probable class (stable), and chunks that stay within a group. */
  private groupRows(): NonNullable<FastCurvature['grouping']> {
    const { n, C } = this.rows;
    const ref = new Int32Array(n);
    const count = new Int32Array(C + 1);
    for (let start = 0; start < n; start += CHUNK) {
      const k = Math.min(CHUNK, n - start);
      const p = this.pChunk(start, k);
      for (let r = 0; r < k; r++) {
        const best = argmax(p.subarray(r * C, (r + 1) * C));
        ref[start + r] = best;
        count[best + 1]++;
      }
    }
    for (let c = 0; c < C; c++) count[c + 1] += count[c];
    const order = new BigInt64Array(n);
    const next = count.slice(0, C);
    for (let i = 0; i < n; i++) order[next[ref[i]]++] = BigInt(i);
    const groups: { start: number; k: number; ref: BigInt64Array }[] = [];
    for (let c = 0; c < C; c++)
      for (let start = count[c]; start < count[c + 1]; start += CHUNK)
        groups.push({ start, k: Math.min(CHUNK, count[c + 1] - start), ref: BigInt64Array.of(BigInt(c)) });
    return { order, groups };
  }

  static async create(
    rows: HeadRows,
    damping: number,
    opts: Pick<CurvatureOptions, 'hessian' | 'store' | 'explicitHessian' | 'signal' | 'onProgress'> = {},
  ): Promise<FastCurvature> {
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
      const stats =
        opts.explicitHessian?.n === rows.n ? opts.explicitHessian : await f.buildHessian(opts.signal, opts.onProgress);
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
  headFeed(start: number, k: number): Feed {
    return this.feed.chunk(start, k);
  }

  /** h in float32 (the feed rounded it). */
  private get h32(): Float32Array {
    return this.feed.h as Float32Array;
  }

  /** p = g + e_y in float64 for rows [start, start + k). */
  pChunk(start: number, k: number): Float64Array {
    const { C, g, labels } = this.rows;
    return probabilities(g.subarray(start * C), labels.subarray(start), k, C, this.pBuf);
  }

  /** EK-FAC's first pass: X̃ᵀX̃ and Σ A_i in float64 products. */
  private async gram(signal?: AbortSignal, onProgress?: Progress): Promise<{ S: Float64Array; Abar: Float64Array }> {
    const { n, C } = this.rows;
    const { Dt } = this;
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
    const { Dt } = this;
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

  /** The same curvature at another damping: the factors and H₀ are shared, the denominators recomputed. */
  withDamping(damping: number): FastCurvature {
    const f = new FastCurvature(this.rows, damping);
    f.H0 = this.H0;
    f.grouping = this.grouping;
    f.setBasis(this.UA, this.US);
    f.setLambda(this.lam);
    return f;
  }

  private setLambda(lam: Float64Array): void {
    const { n } = this.rows;
    this.lam = lam;
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
    const { Dt } = this;
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
      if (this.shape.bias) feed.ones = this.feed.onesFeed(k);
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
    const { Dt, P } = this;
    this.hvpK ??= await denseHvpKernel(P);
    const all = new Float64Array(V.length * P);
    V.forEach((v, r) => all.set(v, r * P));
    const out = (await this.hvpK.run({ v: f64(all, [V.length, P]), H: f64(this.H0!, [P, P]) })).out
      .data as Float64Array;
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
    const { Dt } = this;
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
  async solve(
    B: Float64Array[],
    opts: { tol?: number; maxIter?: number; signal?: AbortSignal; onProgress?: Progress } = {},
  ): Promise<{ X: Float64Array[]; iterations: number }> {
    const tol = opts.tol ?? (this.H0 ? DENSE_CG_TOL : FAST_CG_TOL);
    const maxIter = opts.maxIter ?? 1000;
    const { C } = this.rows;
    const { Dt, P } = this;
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
          throw new InfluenceError(
            'BAD_OPTION',
            `conjugate gradients did not converge in ${maxIter} iterations; increase --damping`,
          );
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
}
