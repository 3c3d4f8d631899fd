/**
 * The fast path's pass over the training rows: one onnxruntime run per chunk gives every per-row
 * quantity of explain and audit (kernels.rowKernel): self-influence with EK-FAC's Q, the
 * leverage-corrected Newton weights w by a Neumann series, and the products with the test-side or
 * held-out solutions. A row whose series may not have converged is recomputed in float64 JS.
 */
import { throwIfAborted, type Progress } from '../errors';
import { dot } from '../linalg';
import { f32, f64, type Feed } from '../ort/graph';
import { CHUNK, rowKernel } from '../ort/kernels';
import { rowInput } from '../task/head';
import { probabilities, rowCurvature } from '../task/loss';
import type { FastCurvature } from '../curvature/fast';
import { newtonWeights } from './removal';

/** Bounds on the terms of the Neumann series for the Newton weights (chosen per problem from a sample of rows). */
const NEUMANN_MIN_TERMS = 4;
const NEUMANN_MAX_TERMS = 40;
/** Relative truncation error allowed in the Newton weights' correction. */
const NEUMANN_TOL = 1e-12;

/** What the fast row pass gives for one row. */
export interface RowQuantities {
  self: number;
  /** Newton weights w (C). */
  w: Float64Array;
  /** Explain: Y = T g and Z = T w over the test directions. */
  y: Float64Array;
  z: Float64Array;
  /** Audit: Q w (C) and Σ_c g_c (U_c·x̃) for the held-out solution U. */
  qw: Float64Array;
  heldOut: number;
}

/**
 * One pass over the rows in chunks, calling `each(i, row)` for every row in order.
 * testS (explain): the class-centred test-side solutions S_m (each C×D̃), giving y and z.
 * heldOut (audit): the held-out solution U (C×D̃), giving heldOut; audit also gives qw.
 * Rows where the Neumann series of the Newton weights may not have converged (to NEUMANN_TOL)
 * are recomputed exactly in float64 JS (C×C Gaussian elimination, as the exact path does).
 */
export async function fastRowPass(
  fast: FastCurvature,
  opts: {
    testS?: Float64Array[];
    audit?: { heldOut: Float64Array | null };
    signal?: AbortSignal;
    onProgress?: Progress;
    stage: string;
  },
  each: (i: number, row: RowQuantities) => void,
): Promise<void> {
  const { n, C } = fast.rows;
  const { Dt } = fast;
  const M = opts.testS?.length ?? 0;
  // The solver's sessions are done with: free their memory before this pass allocates its own.
  await fast.release();
  const terms = neumannTerms(fast);
  const kernel = await rowKernel({
    ...fast.shape,
    n,
    US: fast.US,
    UA: fast.UA,
    denom: fast.denom,
    terms,
    testDirections: M || undefined,
    audit: opts.audit ? { heldOut: opts.audit.heldOut !== null } : undefined,
  });
  try {
    const extra: Feed = {};
    if (M > 0) {
      const st = new Float32Array(Dt * M * C);
      opts.testS!.forEach((s, m) => {
        for (let c = 0; c < C; c++) for (let j = 0; j < Dt; j++) st[j * M * C + m * C + c] = s[c * Dt + j];
      });
      extra.st = f32(st, [Dt, M * C]);
    }
    if (opts.audit?.heldOut) extra.uho = f64(opts.audit.heldOut, [C, Dt]);
    const row: RowQuantities = {
      self: 0,
      w: new Float64Array(C),
      y: new Float64Array(M),
      z: new Float64Array(M),
      qw: new Float64Array(C),
      heldOut: 0,
    };
    const fallback = new FallbackRow(fast, opts.testS ?? null);
    for (let start = 0; start < n; start += CHUNK) {
      throwIfAborted(opts.signal);
      opts.onProgress?.(opts.stage, start, n);
      const k = Math.min(CHUNK, n - start);
      const p = fast.pChunk(start, k);
      const out = await kernel.run({
        ...fast.headFeed(start, k),
        g: f64(fast.rows.g.subarray(start * C, (start + k) * C), [k, C]),
        p: f64(p, [k, C]),
        ...extra,
      });
      const s = out.s.data as Float64Array;
      const self = out.self.data as Float64Array;
      const w = out.w.data as Float64Array;
      const yz = M > 0 ? (out.yz.data as Float32Array) : null;
      const qw = opts.audit ? (out.qw.data as Float64Array) : null;
      const ho = opts.audit?.heldOut ? (out.ho.data as Float64Array) : null;
      const ry = row.y;
      const rz = row.z;
      for (let r = 0; r < k; r++) {
        const i = start + r;
        const ratio = neumannRatio(fast, s, p, r * C);
        row.self = self[r];
        row.heldOut = ho ? ho[r] : 0;
        if (yz) for (let m = 0; m < M; m++) ry[m] = yz[(r * M + m) * 2];
        if (ratio < 0.5 && ratio ** terms / (1 - ratio) <= NEUMANN_TOL) {
          for (let c = 0; c < C; c++) row.w[c] = w[r * C + c];
          if (yz) for (let m = 0; m < M; m++) rz[m] = yz[(r * M + m) * 2 + 1];
          if (qw) for (let c = 0; c < C; c++) row.qw[c] = qw[r * C + c];
        } else {
          fallback.load(i, s.subarray(r * C, (r + 1) * C), row);
        }
        each(i, row);
      }
    }
  } finally {
    await kernel.release();
  }
}

/**
 * Terms of the Neumann series for the row pass: enough for the largest ratio found in a sample
 * of rows, with a margin. Rows that need more are caught one by one and solved exactly.
 */
function neumannTerms(fast: FastCurvature): number {
  const { n, C } = fast.rows;
  const { Dt } = fast;
  const x = new Float64Array(Dt);
  const xs = new Float64Array(Dt);
  const s = new Float64Array(C);
  const p = new Float64Array(C);
  const step = Math.max(1, Math.floor(n / 1024));
  let worst = 0;
  for (let i = 0; i < n; i += step) {
    rowInput(fast.rows, i, x);
    probabilities(fast.rows.g.subarray(i * C), fast.rows.labels.subarray(i), 1, C, p);
    xs.fill(0);
    for (let j = 0; j < Dt; j++) {
      const xj = x[j];
      const o = j * Dt;
      for (let b = 0; b < Dt; b++) xs[b] += fast.US[o + b] * xj;
    }
    for (let b = 0; b < Dt; b++) xs[b] *= xs[b];
    for (let a = 0; a < C; a++) {
      let t = 0;
      for (let b = 0; b < Dt; b++) t += xs[b] / fast.denom[a * Dt + b];
      s[a] = t;
    }
    worst = Math.max(worst, neumannRatio(fast, s, p, 0));
  }
  const r = Math.min(2 * worst, 0.5);
  let terms = NEUMANN_MIN_TERMS;
  while (terms < NEUMANN_MAX_TERMS && r ** terms / (1 - r) > NEUMANN_TOL) terms++;
  return terms;
}

/**
 * A bound on ρ(K), K = A^{1/2}QA^{1/2}/n, the ratio of the Neumann series of the Newton weights:
 * the truncation error after j terms is at most ρʲ/(1 − ρ) times the size of the correction.
 * ‖A‖ ≤ min(max_c p_c, max_c 2p_c(1 − p_c)) (A ⪯ diag p; Gershgorin), and since A1 = 0 only
 * ΠQΠ matters (Π removes the class mean): ‖ΠQΠ‖ ≤ max over the other eigenvectors of s_a plus
 * s_a₀‖Πu_a₀‖² for the eigenvector u_a₀ of Ā along 1.
 */
function neumannRatio(fast: FastCurvature, s: Float64Array, p: Float64Array, o: number): number {
  const { C, n } = fast.rows;
  let smax = 0;
  let pmax = 0;
  let gmax = 0;
  for (let a = 0; a < C; a++) {
    if (a !== fast.nullColumn) smax = Math.max(smax, s[o + a]);
    const pa = p[o + a];
    pmax = Math.max(pmax, pa);
    gmax = Math.max(gmax, 2 * pa * (1 - pa));
  }
  smax += s[o + fast.nullColumn] * fast.nullLeak;
  return (smax * Math.min(pmax, gmax)) / n;
}

/** The fast row pass's float64 JS fallback for one row, with Q = U_A diag(s) U_Aᵀ. */
class FallbackRow {
  private readonly x: Float64Array;
  private readonly p: Float64Array;
  private readonly g: Float64Array;
  private readonly A: Float64Array;
  private readonly Q: Float64Array;
  private readonly Qg: Float64Array;
  private readonly M: Float64Array;

  constructor(
    private readonly fast: FastCurvature,
    private readonly testS: Float64Array[] | null,
  ) {
    const { C } = fast.rows;
    this.x = new Float64Array(fast.Dt);
    this.p = new Float64Array(C);
    this.g = new Float64Array(C);
    this.A = new Float64Array(C * C);
    this.Q = new Float64Array(C * C);
    this.Qg = new Float64Array(C);
    this.M = new Float64Array(C * C);
  }

  load(i: number, s: Float64Array, row: RowQuantities): void {
    const rows = this.fast.rows;
    const { n, C } = rows;
    const { Dt } = this.fast;
    const { x, g, A, Q, Qg, M } = this;
    const UA = this.fast.UA;
    rowInput(rows, i, x);
    rowCurvature(rows.g, rows.labels, i, C, this.p, A);
    for (let c = 0; c < C; c++) g[c] = rows.g[i * C + c];
    for (let c = 0; c < C; c++)
      for (let d = c; d < C; d++) {
        let t = 0;
        for (let a = 0; a < C; a++) t += UA[c * C + a] * UA[d * C + a] * s[a];
        Q[c * C + d] = t;
        Q[d * C + c] = t;
      }
    for (let c = 0; c < C; c++) Qg[c] = dot(Q.subarray(c * C, (c + 1) * C), g, C);
    newtonWeights(Q, A, g, Qg, n, C, M, row.w);
    for (let c = 0; c < C; c++) row.qw[c] = dot(Q.subarray(c * C, (c + 1) * C), row.w, C);
    if (this.testS) {
      this.testS.forEach((S, m) => {
        let t = 0;
        for (let c = 0; c < C; c++) t += row.w[c] * dot(x, S.subarray(c * Dt, (c + 1) * Dt), Dt);
        row.z[m] = t;
      });
    }
  }
}
