/** Small dense float64 linear algebra on row-major Float64Arrays. */
import { InfluenceError } from './errors';

/** In-place Cholesky of an m×m SPD matrix: the lower triangle becomes L (upper is zeroed). */
export function cholesky(A: Float64Array, m: number): void {
  for (let j = 0; j < m; j++) {
    const rj = j * m;
    let d = A[rj + j];
    for (let k = 0; k < j; k++) d -= A[rj + k] * A[rj + k];
    if (!(d > 0)) {
      throw new InfluenceError(
        'BAD_OPTION',
        `the damped Hessian is not positive definite (pivot ${j} = ${d}); increase --damping`,
      );
    }
    const ljj = Math.sqrt(d);
    A[rj + j] = ljj;
    for (let i = j + 1; i < m; i++) {
      const ri = i * m;
      let s = A[ri + j];
      for (let k = 0; k < j; k++) s -= A[ri + k] * A[rj + k];
      A[ri + j] = s / ljj;
    }
    for (let i = 0; i < j; i++) A[i * m + j] = 0;
  }
}

/** A⁻¹ from its Cholesky factor L (as left by `cholesky`), full symmetric m×m. */
export function inverseFromCholesky(L: Float64Array, m: number): Float64Array {
  // Linv (lower), then A⁻¹ = Linvᵀ Linv.
  const Li = new Float64Array(m * m);
  for (let j = 0; j < m; j++) {
    Li[j * m + j] = 1 / L[j * m + j];
    for (let i = j + 1; i < m; i++) {
      let s = 0;
      const ri = i * m;
      for (let k = j; k < i; k++) s -= L[ri + k] * Li[k * m + j];
      Li[ri + j] = s / L[ri + i];
    }
  }
  const inv = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = i; k < m; k++) s += Li[k * m + i] * Li[k * m + j];
      inv[i * m + j] = s;
      inv[j * m + i] = s;
    }
  }
  return inv;
}

/** Solves the small general system A x = b (m×m) by Gaussian elimination with partial pivoting. */
export function solveSmall(A: Float64Array, b: Float64Array, m: number): Float64Array {
  const M = Float64Array.from(A);
  const x = Float64Array.from(b);
  for (let k = 0; k < m; k++) {
    let piv = k;
    for (let i = k + 1; i < m; i++) if (Math.abs(M[i * m + k]) > Math.abs(M[piv * m + k])) piv = i;
    if (piv !== k) {
      for (let j = 0; j < m; j++) [M[k * m + j], M[piv * m + j]] = [M[piv * m + j], M[k * m + j]];
      [x[k], x[piv]] = [x[piv], x[k]];
    }
    const d = M[k * m + k];
    for (let i = k + 1; i < m; i++) {
      const f = M[i * m + k] / d;
      if (f === 0) continue;
      for (let j = k; j < m; j++) M[i * m + j] -= f * M[k * m + j];
      x[i] -= f * x[k];
    }
  }
  for (let k = m - 1; k >= 0; k--) {
    let s = x[k];
    for (let j = k + 1; j < m; j++) s -= M[k * m + j] * x[j];
    x[k] = s / M[k * m + k];
  }
  return x;
}

/**
 * Symmetric eigendecomposition by cyclic Jacobi rotations: A = V diag(w) Vᵀ.
 * Returns V row-major with eigenvectors as columns. Used for the Kronecker factors
 * (at most a few hundred wide), where its simplicity beats its O(m³) per sweep.
 */
export function symmetricEigen(A: Float64Array, m: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(A);
  const v = new Float64Array(m * m);
  for (let i = 0; i < m; i++) v[i * m + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    let diag = 0;
    for (let i = 0; i < m; i++) {
      diag += a[i * m + i] * a[i * m + i];
      for (let j = i + 1; j < m; j++) off += a[i * m + j] * a[i * m + j];
    }
    if (off <= 1e-30 * diag || off === 0) break;
    for (let p = 0; p < m; p++) {
      for (let q = p + 1; q < m; q++) {
        const apq = a[p * m + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (a[q * m + q] - a[p * m + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < m; k++) {
          const akp = a[k * m + p];
          const akq = a[k * m + q];
          a[k * m + p] = c * akp - s * akq;
          a[k * m + q] = s * akp + c * akq;
        }
        for (let k = 0; k < m; k++) {
          const apk = a[p * m + k];
          const aqk = a[q * m + k];
          a[p * m + k] = c * apk - s * aqk;
          a[q * m + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < m; k++) {
          const vkp = v[k * m + p];
          const vkq = v[k * m + q];
          v[k * m + p] = c * vkp - s * vkq;
          v[k * m + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const values = new Float64Array(m);
  for (let i = 0; i < m; i++) values[i] = a[i * m + i];
  return { values, vectors: v };
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>, n = a.length): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/** The k-th smallest (0-based) value of a (which is reordered), by quickselect. */
export function select(a: Float64Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  while (hi > lo) {
    const mid = (lo + hi) >>> 1;
    // Median of three as the pivot.
    const x = a[lo];
    const y = a[mid];
    const w = a[hi];
    const pivot = x < y ? (y < w ? y : x < w ? w : x) : x < w ? x : y < w ? w : y;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k];
  }
  return a[k];
}

/** acc += v, elementwise. */
export function addInto(acc: Float64Array, v: ArrayLike<number>): void {
  for (let q = 0; q < acc.length; q++) acc[q] += v[q];
}

/** Makes an m×m matrix exactly symmetric: both triangles become their mean. */
export function symmetrize(A: Float64Array, m: number): void {
  for (let i = 0; i < m; i++)
    for (let j = i + 1; j < m; j++) {
      const v = 0.5 * (A[i * m + j] + A[j * m + i]);
      A[i * m + j] = v;
      A[j * m + i] = v;
    }
}

/** M v for a symmetric (or any) m×m M. */
export function symMatVec(M: Float64Array, v: Float64Array, m: number): Float64Array {
  const out = new Float64Array(m);
  for (let i = 0; i < m; i++) out[i] = dot(M.subarray(i * m, (i + 1) * m), v, m);
  return out;
}

/** G[i,j] = A_i · B_j (s×s, symmetrised: every use is of a symmetric matrix up to rounding). */
export function blockGram(A: Float64Array[], B: Float64Array[]): Float64Array {
  const s = A.length;
  const G = new Float64Array(s * s);
  for (let i = 0; i < s; i++) for (let j = 0; j < s; j++) G[i * s + j] = dot(A[i], B[j]);
  symmetrize(G, s);
  return G;
}

/** G⁻¹F for a symmetric positive (semi)definite G (s×s), by eigendecomposition, ignoring null directions. */
export function solveSpd(G: Float64Array, F: Float64Array, s: number): Float64Array {
  const { values, vectors } = symmetricEigen(G, s);
  let vmax = 0;
  for (let a = 0; a < s; a++) vmax = Math.max(vmax, Math.abs(values[a]));
  const out = new Float64Array(s * s);
  const vf = new Float64Array(s);
  for (let a = 0; a < s; a++) {
    if (!(Math.abs(values[a]) > 1e-14 * vmax)) continue;
    for (let j = 0; j < s; j++) {
      let t = 0;
      for (let i = 0; i < s; i++) t += vectors[i * s + a] * F[i * s + j];
      vf[j] = t / values[a];
    }
    for (let i = 0; i < s; i++) {
      const v = vectors[i * s + a];
      for (let j = 0; j < s; j++) out[i * s + j] += v * vf[j];
    }
  }
  return out;
}

/** Y_j += sign · Σ_i X_i a[i,j] for blocks of P-vectors. */
export function combineInto(Y: Float64Array[], Xb: Float64Array[], a: Float64Array, sign: number, P: number): void {
  const s = Xb.length;
  for (let j = 0; j < Y.length; j++) {
    const y = Y[j];
    for (let i = 0; i < s; i++) {
      const f = sign * a[i * s + j];
      if (f === 0) continue;
      const x = Xb[i];
      for (let q = 0; q < P; q++) y[q] += f * x[q];
    }
  }
}

/** a (m×p) times b (p×q), row-major. */
export function matmul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, p: number, q: number): Float64Array {
  const out = new Float64Array(m * q);
  for (let i = 0; i < m; i++)
    for (let k = 0; k < p; k++) {
      const v = a[i * p + k];
      if (v === 0) continue;
      for (let j = 0; j < q; j++) out[i * q + j] += v * b[k * q + j];
    }
  return out;
}

/** A's transpose (rows×cols → cols×rows). */
export function transpose(A: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const T = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) T[j * rows + i] = A[i * cols + j];
  return T;
}

/**
 * The assignment of rows to columns of an m×m weight matrix W (row-major) with the largest total
 * weight: out[r] is row r's column, a permutation. The Hungarian algorithm with row and column
 * potentials (O(m³)): rows are added one at a time, each along a shortest augmenting path in the
 * reduced costs −W[r,c] − u[r] − v[c] ≥ 0. Exact for integer weights (sums stay exact in float64).
 */
export function maxAssignment(W: ArrayLike<number>, m: number): Int32Array {
  // 1-based internally: column 0 is the virtual start of each augmenting path.
  const u = new Float64Array(m + 1);
  const v = new Float64Array(m + 1);
  const rowOf = new Int32Array(m + 1); // rowOf[c]: the row assigned to column c (0: none)
  const prev = new Int32Array(m + 1); // the previous column on the shortest path
  const dist = new Float64Array(m + 1);
  const done = new Uint8Array(m + 1);
  for (let r = 1; r <= m; r++) {
    rowOf[0] = r;
    let c0 = 0;
    dist.fill(Infinity);
    done.fill(0);
    do {
      done[c0] = 1;
      const r0 = rowOf[c0];
      let delta = Infinity;
      let c1 = 0;
      for (let c = 1; c <= m; c++) {
        if (done[c]) continue;
        const reduced = -W[(r0 - 1) * m + (c - 1)] - u[r0] - v[c];
        if (reduced < dist[c]) {
          dist[c] = reduced;
          prev[c] = c0;
        }
        if (dist[c] < delta) {
          delta = dist[c];
          c1 = c;
        }
      }
      for (let c = 0; c <= m; c++) {
        if (done[c]) {
          u[rowOf[c]] += delta;
          v[c] -= delta;
        } else {
          dist[c] -= delta;
        }
      }
      c0 = c1;
    } while (rowOf[c0] !== 0);
    // Flip the path: each column on it takes the row of the column before it.
    do {
      const c1 = prev[c0];
      rowOf[c0] = rowOf[c1];
      c0 = c1;
    } while (c0 !== 0);
  }
  const out = new Int32Array(m);
  for (let c = 1; c <= m; c++) out[rowOf[c] - 1] = c - 1;
  return out;
}
