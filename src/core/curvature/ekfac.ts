/**
 * Eigenvalue-corrected Kronecker factorisation (George et al. 2018) of the head's Hessian in
 * float64 JS (the exact path; fast.ts computes the same factors with ORT products).
 */
import { throwIfAborted } from '../errors';
import { symmetricEigen } from '../linalg';
import { headDims, rowInput, type HeadRows } from '../task/head';
import { rowCurvature } from '../task/loss';

/**
 * Eigenvalue-corrected Kronecker factorisation (George et al. 2018) of the head's Hessian:
 * eigenbases of E[A] and E[x̃x̃ᵀ], with the exact diagonal of H₀ in that basis.
 * Used to approximate self-influence when the exact cost is too high, and as the CG preconditioner.
 */
export class Ekfac {
  readonly UA: Float64Array; // C×C, eigenvectors as columns
  readonly US: Float64Array; // D̃×D̃
  /** Λ[a·D̃ + b] + λ. */
  readonly denom: Float64Array;
  /** Λ·n, the corrected eigenvalue sums (damping-free). */
  private readonly lam: Float64Array;

  constructor(
    private readonly rows: HeadRows,
    damping: number,
    signal?: AbortSignal,
    from?: Ekfac,
  ) {
    if (from) {
      ({ UA: this.UA, US: this.US, lam: this.lam } = from);
      this.denom = Ekfac.denominators(this.lam, rows.n, damping);
      return;
    }
    const { n, C } = rows;
    const { Dt } = headDims(rows);
    const Abar = new Float64Array(C * C);
    const S = new Float64Array(Dt * Dt);
    const x = new Float64Array(Dt);
    const p = new Float64Array(C);
    const A = new Float64Array(C * C);
    for (let i = 0; i < n; i++) {
      if ((i & 4095) === 0) throwIfAborted(signal);
      rowInput(rows, i, x);
      rowCurvature(rows.g, rows.labels, i, C, p, A);
      for (let q = 0; q < C * C; q++) Abar[q] += A[q];
      for (let j = 0; j < Dt; j++) for (let k = j; k < Dt; k++) S[j * Dt + k] += x[j] * x[k];
    }
    for (let j = 0; j < Dt; j++) for (let k = j; k < Dt; k++) S[k * Dt + j] = S[j * Dt + k];
    this.UA = symmetricEigen(Abar, C).vectors;
    this.US = symmetricEigen(S, Dt).vectors;
    const lam = new Float64Array(C * Dt);
    const xs = new Float64Array(Dt);
    const w = new Float64Array(C);
    for (let i = 0; i < n; i++) {
      if ((i & 4095) === 0) throwIfAborted(signal);
      rowInput(rows, i, x);
      rowCurvature(rows.g, rows.labels, i, C, p, A);
      this.project(x, xs);
      for (let a = 0; a < C; a++) {
        // w_a = u_aᵀ A_i u_a = Σ p_c u_ca² − (Σ p_c u_ca)².
        let s1 = 0;
        let s2 = 0;
        for (let c = 0; c < C; c++) {
          const u = this.UA[c * C + a];
          s1 += p[c] * u * u;
          s2 += p[c] * u;
        }
        w[a] = s1 - s2 * s2;
      }
      for (let a = 0; a < C; a++) for (let b = 0; b < Dt; b++) lam[a * Dt + b] += w[a] * xs[b] * xs[b];
    }
    this.lam = lam;
    this.denom = Ekfac.denominators(lam, n, damping);
  }

  private static denominators(lam: Float64Array, n: number, damping: number): Float64Array {
    return lam.map((l) => Math.max(l / n, 0) + damping);
  }

  /** The same factors at another damping. */
  withDamping(damping: number): Ekfac {
    return new Ekfac(this.rows, damping, undefined, this);
  }

  /** xs = U_Sᵀ x. */
  project(x: Float64Array, xs: Float64Array): void {
    const Dt = xs.length;
    for (let b = 0; b < Dt; b++) {
      let s = 0;
      for (let j = 0; j < Dt; j++) s += this.US[j * Dt + b] * x[j];
      xs[b] = s;
    }
  }

  /** Approximate H⁻¹ v for v as a C×D̃ matrix: U (Uᵀ v / denom). */
  apply(v: Float64Array): Float64Array {
    const { C } = this.rows;
    const Dt = this.denom.length / C;
    const t = new Float64Array(C * Dt);
    // t = U_Aᵀ V U_S
    const m = new Float64Array(C * Dt);
    for (let c = 0; c < C; c++)
      for (let b = 0; b < Dt; b++) {
        let s = 0;
        for (let j = 0; j < Dt; j++) s += v[c * Dt + j] * this.US[j * Dt + b];
        m[c * Dt + b] = s;
      }
    for (let a = 0; a < C; a++)
      for (let b = 0; b < Dt; b++) {
        let s = 0;
        for (let c = 0; c < C; c++) s += this.UA[c * C + a] * m[c * Dt + b];
        t[a * Dt + b] = s / this.denom[a * Dt + b];
      }
    // back: U_A t U_Sᵀ
    for (let c = 0; c < C; c++)
      for (let b = 0; b < Dt; b++) {
        let s = 0;
        for (let a = 0; a < C; a++) s += this.UA[c * C + a] * t[a * Dt + b];
        m[c * Dt + b] = s;
      }
    const out = new Float64Array(C * Dt);
    for (let c = 0; c < C; c++)
      for (let j = 0; j < Dt; j++) {
        let s = 0;
        for (let b = 0; b < Dt; b++) s += m[c * Dt + b] * this.US[j * Dt + b];
        out[c * Dt + j] = s;
      }
    return out;
  }

  /** Approximate Q_i = (I⊗x̃)ᵀ H⁻¹ (I⊗x̃) into Q (C×C), given xs = U_Sᵀ x̃. */
  quad(xs: Float64Array, Q: Float64Array, scratch: Float64Array): void {
    const { C } = this.rows;
    const Dt = xs.length;
    for (let a = 0; a < C; a++) {
      let s = 0;
      for (let b = 0; b < Dt; b++) s += (xs[b] * xs[b]) / this.denom[a * Dt + b];
      scratch[a] = s;
    }
    for (let c = 0; c < C; c++)
      for (let d = c; d < C; d++) {
        let s = 0;
        for (let a = 0; a < C; a++) s += this.UA[c * C + a] * this.UA[d * C + a] * scratch[a];
        Q[c * C + d] = s;
        Q[d * C + c] = s;
      }
  }
}
