/**
 * The exact path's curvature, float64 JS throughout: the explicit damped Hessian (for Cholesky and
 * exact self-influence), Hessian-vector products in factored form, and EK-FAC-preconditioned CG.
 */
import { throwIfAborted, InfluenceError, type Progress } from '../errors';
import { dot } from '../linalg';
import { headDims, rowInput, type HeadRows } from '../task/head';
import { probabilities, rowCurvature } from '../task/loss';
import type { Ekfac } from './ekfac';

/** Explicit damped Hessian, P×P. Cost n·C²·D̃²/4 multiply-adds. */
export function denseHessian(
  rows: HeadRows,
  damping: number,
  signal?: AbortSignal,
  onProgress?: Progress,
): Float64Array {
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
    rowCurvature(rows.g, rows.labels, i, C, p, A);
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
export function hessianVectorProducts(
  rows: HeadRows,
  damping: number,
  V: Float64Array[],
  signal?: AbortSignal,
): Float64Array[] {
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
    probabilities(rows.g.subarray(i * C), rows.labels.subarray(i), 1, C, p);
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
      throw new InfluenceError(
        'BAD_OPTION',
        `conjugate gradients did not converge in ${maxIter} iterations; increase --damping`,
      );
    }
    it++;
    opts.onProgress?.('solve', it, maxIter);
    const ks = [...active];
    const HP = hessianVectorProducts(
      rows,
      damping,
      ks.map((k) => Pd[k]),
      opts.signal,
    );
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
