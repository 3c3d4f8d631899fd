/**
 * The dense products of the large-problem ("fast") path as small onnxruntime graphs, where ORT's
 * MatMul/Gemm run at tens to hundreds of GFLOP/s against well under 1 GFLOP/s for plain JS loops.
 *
 * Every graph takes a chunk of training rows (a symbolic batch dimension `k`) so that no n-sized
 * intermediate is ever materialised; callers sum the per-chunk results in float64.
 */
import { throwIfAborted } from '../errors';
import { transpose } from '../linalg';
import type { HeadRows, HeadShape } from '../task/head';
import { F32, F64, I32, I64, f32, f64, GraphBuilder, type Feed, type Kernel } from './graph';

/** Rows per onnxruntime run over a head's rows. */
export const CHUNK = 4096;

type HType = typeof F32 | typeof F64;

/** x̃ = [h, 1] (or h) for a chunk: inputs `h` (k×D) and, with a bias, `ones` (k×1), both of type `t`. */
function headInput(g: GraphBuilder, s: HeadShape, t: HType = F32): string {
  const h = g.input('h', t, ['k', s.D]);
  if (!s.bias) return h;
  const ones = g.input('ones', t, ['k', 1]);
  return g.op('Concat', [h, ones], { axis: 1 });
}

/**
 * headInput's feeds for chunks of a head's rows. `float32` rounds a float64 h once (the float32
 * GEMM kernels); otherwise h is fed as it is, so a float64 kernel sees exactly the rows' values.
 */
export class HeadFeed {
  readonly h: Float32Array | Float64Array;
  readonly type: HType;
  private readonly ones: Float32Array | Float64Array;

  constructor(
    private readonly rows: Pick<HeadRows, 'h' | 'D' | 'bias'>,
    float32: boolean,
  ) {
    this.h = float32 && !(rows.h instanceof Float32Array) ? Float32Array.from(rows.h) : rows.h;
    this.type = this.h instanceof Float32Array ? F32 : F64;
    this.ones = (this.type === F32 ? new Float32Array(CHUNK) : new Float64Array(CHUNK)).fill(1);
  }

  /** h and ones of rows [start, start + k) (k ≤ CHUNK). */
  chunk(start: number, k: number): Feed {
    const { D } = this.rows;
    const feed: Feed = { h: this.tensor(this.h.subarray(start * D, (start + k) * D), [k, D]) };
    if (this.rows.bias) feed.ones = this.onesFeed(k);
    return feed;
  }

  /** The `ones` input of a chunk of k rows (k ≤ CHUNK). */
  onesFeed(k: number) {
    return this.tensor(this.ones.subarray(0, k), [k, 1]);
  }

  private tensor(a: Float32Array | Float64Array, dims: number[]) {
    return a instanceof Float32Array ? f32(a, dims) : f64(a, dims);
  }
}

/**
 * Runs `kernel` over rows [0, n) in chunks of CHUNK, fed `feed(start, k)`, and hands each chunk's
 * outputs to `each`, in order.
 */
export async function overChunks(
  n: number,
  kernel: Kernel,
  feed: (start: number, k: number) => Feed,
  each: (start: number, k: number, out: Awaited<ReturnType<Kernel['run']>>) => void,
  signal?: AbortSignal,
): Promise<void> {
  for (let start = 0; start < n; start += CHUNK) {
    throwIfAborted(signal);
    const k = Math.min(CHUNK, n - start);
    each(start, k, await kernel.run(feed(start, k)));
  }
}

/** Σ_i g_i ⊗ x̃_i over a chunk (output grad, C×D̃ float64). Inputs h, ones (of type `t`), g (k×C float64). */
export async function gradSumKernel(s: HeadShape, t: HType): Promise<Kernel> {
  const g = new GraphBuilder();
  const x = g.cast(headInput(g, s, t), F64);
  g.output(g.gemm(g.input('g', F64, ['k', s.C]), x, 1, 0), 'grad', F64, [s.C, s.D + (s.bias ? 1 : 0)]);
  return g.session();
}

/**
 * Σ_c g_c (U_m,c · x̃) per row for M solutions U_m (each C×D̃, stacked in u as M·C×D̃), in float64:
 * a row's first-order loss change at M curvatures. Inputs h, ones (of type `t`), g (k×C float64),
 * u; output out (k×M).
 */
export async function solutionDotKernel(s: HeadShape, M: number, t: HType): Promise<Kernel> {
  const g = new GraphBuilder();
  const { C } = s;
  const Dt = s.D + (s.bias ? 1 : 0);
  const x = g.cast(headInput(g, s, t), F64);
  const xu = g.reshape(g.gemm(x, g.input('u', F64, [M * C, Dt]), 0, 1), [0, M, C]);
  const gg = g.reshape(g.input('g', F64, ['k', C]), [0, 1, C]);
  g.output(g.reduceSum(g.mul(xu, gg), [2], 0), 'out', F64, ['k', M]);
  return g.session();
}

/**
 * First pass of EK-FAC in float64: X̃ᵀX̃ (D̃×D̃), PᵀP (C×C) and Σ p (1×C) over a chunk.
 * Inputs h, ones, p (k×C float64).
 */
export async function gramKernel(s: HeadShape): Promise<Kernel> {
  const g = new GraphBuilder();
  const Dt = s.D + (s.bias ? 1 : 0);
  const xt = g.cast(headInput(g, s), F64);
  const p = g.input('p', F64, ['k', s.C]);
  g.output(g.gemm(xt, xt, 1, 0), 'xtx', F64, [Dt, Dt]);
  g.output(g.gemm(p, p, 1, 0), 'ptp', F64, [s.C, s.C]);
  g.output(g.reduceSum(p, [0]), 'psum', F64, [1, s.C]);
  return g.session();
}

/** Feature columns per outer-product block of hessianKernel (measured: 8 beats 4, 16 and 43). */
export const HESSIAN_BLOCK = 8;

/**
 * The explicit Hessian of a chunk of a softmax head (the weights below assume Σ p = 1), one weighted Gram matrix per class pair c ≤ d:
 * Σ_i a_i[cd] x̃_i x̃_iᵀ with a_i[cd] = A_i[c,d] (A = diag p − ppᵀ), and an all-ones weight last
 * (giving X̃ᵀX̃ for EK-FAC). The weights are formed in float64, with A[c,c] = p_c·Σ_{d≠c} p_d so
 * that a confident row keeps its small curvature's digits, then cast to float32 for the GEMMs.
 * Only the upper triangle of x̃x̃ᵀ is formed, in row blocks of HESSIAN_BLOCK features: output `r{b}`
 * is (pairs + 1) × (rows of block b × D̃ − first feature of b). Output `asum` (1 × pairs + 1, float64)
 * is Σ_i a_i, whose class-pair part is EK-FAC's Σ_i A_i.
 * Inputs h, ones, p (k×C float64).
 */
export async function hessianKernel(s: HeadShape, threads?: number, precision: 'f32' | 'f64' = 'f32'): Promise<Kernel> {
  const g = new GraphBuilder();
  const wide = precision === 'f64';
  const Dt = s.D + (s.bias ? 1 : 0);
  const { C } = s;
  const x = headInput(g, s);
  const p = g.input('p', F64, ['k', C]);
  const eye = Array.from({ length: C * C }, (_, q) => (q % (C + 1) === 0 ? 1 : 0));
  const p3 = g.reshape(p, [0, C, 1]);
  // Σ_{d≠c} p_d as a sum of non-negative terms, not 1 − p_c.
  const rest = g.matmul(
    p,
    g.constant(
      F64,
      [C, C],
      eye.map((e) => 1 - e),
    ),
  );
  const diag = g.mul(p3, g.mul(g.reshape(rest, [0, 1, C]), g.constant(F64, [C, C], eye)));
  const off = g.mul(
    g.mul(p3, g.reshape(p, [0, 1, C])),
    g.constant(
      F64,
      [C, C],
      eye.map((e) => e - 1),
    ),
  );
  const upper: number[] = [];
  for (let c = 0; c < C; c++) for (let d = c; d < C; d++) upper.push(c * C + d);
  const pairs = g.op('Gather', [g.reshape(g.add(diag, off), [0, C * C]), g.constant(I64, [upper.length], upper)], {
    axis: 1,
  });
  // A k×1 column of exact ones (0·p + 1), without a tensor-valued attribute.
  const one = g.add(
    g.mul(g.op('Slice', [p, g.ints([0]), g.ints([1]), g.ints([1])]), g.constant(F64, [], [0])),
    g.constant(F64, [], [1]),
  );
  const a64 = g.op('Concat', [pairs, one], { axis: 1 });
  g.output(g.reduceSum(a64, [0]), 'asum', F64, [1, upper.length + 1]);
  // f32: the products in float32 (the fast path); f64: in float64 (the exact path).
  const a = wide ? a64 : g.cast(a64, F32);
  const xw = wide ? g.cast(x, F64) : x;
  for (let j0 = 0, b = 0; j0 < Dt; j0 += HESSIAN_BLOCK, b++) {
    const j1 = Math.min(Dt, j0 + HESSIAN_BLOCK);
    const xj = g.reshape(g.op('Slice', [xw, g.ints([j0]), g.ints([j1]), g.ints([1])]), [0, -1, 1]);
    const xk = g.reshape(g.op('Slice', [xw, g.ints([j0]), g.ints([Dt]), g.ints([1])]), [0, 1, -1]);
    g.output(g.gemm(a, g.reshape(g.mul(xj, xk), [0, -1]), 1, 0), `r${b}`, wide ? F64 : F32, [
      upper.length + 1,
      (j1 - j0) * (Dt - j0),
    ]);
  }
  return g.session(threads);
}

/**
 * Second pass of EK-FAC: Σ_i W[i,a] xs_ib² (C×D̃) in float64, with xs = U_Sᵀx̃ and
 * W[i,a] = u_aᵀA_iu_a = Σ_c p_c U_ca² − (Σ_c p_c U_ca)².
 */
export async function lambdaKernel(s: HeadShape, US: Float64Array, UA: Float64Array): Promise<Kernel> {
  const g = new GraphBuilder();
  const Dt = s.D + (s.bias ? 1 : 0);
  const { C } = s;
  const p = g.input('p', F64, ['k', C]);
  // xs = U_Sᵀx̃ as a float32 product: U_S is orthogonal, so each xs_b is off by about eps·‖x̃‖ (fastpath.test.ts measures the effect).
  const xs = g.cast(g.matmul(headInput(g, s), g.constant(F32, [Dt, Dt], US)), F64);
  const xs2 = g.mul(xs, xs);
  const pu = g.matmul(p, g.constant(F64, [C, C], UA));
  const w = g.sub(
    g.matmul(
      p,
      g.constant(
        F64,
        [C, C],
        UA.map((v) => v * v),
      ),
    ),
    g.mul(pu, pu),
  );
  g.output(g.gemm(w, xs2, 1, 0), 'lam', F64, [C, Dt]);
  return g.session();
}

/**
 * Hessian-vector products of H₀ = Σ_i A_i ⊗ x̃_ix̃_iᵀ over a chunk, for R directions at once, in
 * float32: U = X̃Vᵀ (k×R×C), W = p ⊙ (U − Σ_c p_c U_c), out = WᵀX̃ (R·C×D̃).
 * Every row of a chunk has the same most probable class r (the caller groups the rows), and V's
 * class-r row is first subtracted from every class row: A_i 1 = 0 makes the shift exact in real
 * arithmetic, and in float32 it keeps the error of a confident row proportional to its (small)
 * curvature instead of to |u|.
 * Inputs: hall (n×D float32), gall (n×C float64) and labels (n int32) of all rows, gathered by
 * idx (k int64); ones (k×1 float32, with a bias), r ([1] int64), v (R·C×D̃ float32).
 */
export async function hvpKernel(s: HeadShape): Promise<Kernel> {
  const g = new GraphBuilder();
  const Dt = s.D + (s.bias ? 1 : 0);
  const { C } = s;
  const hall = g.input('hall', F32, ['n', s.D]);
  const idx = g.input('idx', I64, ['k']);
  let xt = g.op('Gather', [hall, idx], { axis: 0 });
  if (s.bias) xt = g.op('Concat', [xt, g.input('ones', F32, ['k', 1])], { axis: 1 });
  // p = g + e_y in float64 from the rows' g and labels, then float32.
  const grows = g.op('Gather', [g.input('gall', F64, ['n', C]), idx], { axis: 0 });
  const yrows = g.reshape(g.op('Gather', [g.input('labels', I32, ['n']), idx], { axis: 0 }), [-1, 1]);
  const onehot = g.cast(
    g.op('Equal', [
      yrows,
      g.constant(
        I32,
        [1, C],
        Array.from({ length: C }, (_, c) => c),
      ),
    ]),
    F64,
  );
  const p = g.reshape(g.cast(g.add(grows, onehot), F32), [-1, 1, C]);
  const r = g.input('r', I64, [1]);
  const v3 = g.reshape(g.input('v', F32, ['RC', Dt]), [-1, C, Dt]);
  const vr = g.op('Gather', [v3, r], { axis: 1 });
  const vs = g.reshape(g.sub(v3, vr), [-1, Dt]);
  const u = g.reshape(g.gemm(xt, vs, 0, 1), [0, -1, C]);
  // s = Σ_c p_c u_c per row and direction, as k tiny matrix products (a little faster than Mul + ReduceSum).
  const sp = g.matmul(u, g.reshape(p, [0, C, 1]));
  const w = g.reshape(g.mul(p, g.sub(u, sp)), [0, -1]);
  g.output(g.gemm(w, xt, 1, 0), 'out', F32, ['RC', Dt]);
  return g.session();
}

/** V·H for R directions (rows of v) and an explicit symmetric P×P H, float64. */
export async function denseHvpKernel(P: number): Promise<Kernel> {
  const g = new GraphBuilder();
  g.output(g.matmul(g.input('v', F64, ['R', P]), g.input('H', F64, [P, P])), 'out', F64, ['R', P]);
  return g.session();
}

/**
 * The EK-FAC preconditioner for R directions at once, float64: U_A((U_AᵀVU_S) ⊘ denom)U_Sᵀ.
 * Input v (R×C×D̃).
 */
export async function preconditionKernel(
  s: HeadShape,
  US: Float64Array,
  UA: Float64Array,
  denom: Float64Array,
): Promise<Kernel> {
  const g = new GraphBuilder();
  const Dt = s.D + (s.bias ? 1 : 0);
  const { C } = s;
  const v = g.input('v', F64, ['R', C, Dt]);
  const us = g.constant(F64, [Dt, Dt], US);
  const ua = g.constant(F64, [C, C], UA);
  const uaT = g.constant(F64, [C, C], transpose(UA, C, C));
  const usT = g.constant(F64, [Dt, Dt], transpose(US, Dt, Dt));
  const inv = g.constant(
    F64,
    [C, Dt],
    denom.map((d) => 1 / d),
  );
  const t = g.mul(g.matmul(uaT, g.matmul(v, us)), inv);
  g.output(g.matmul(g.matmul(ua, t), usT), 'out', F64, ['R', C, Dt]);
  return g.session();
}

export interface RowKernelSpec extends HeadShape {
  n: number;
  US: Float64Array;
  UA: Float64Array;
  denom: Float64Array;
  /** Terms of the Neumann series for the leverage-corrected Newton step. */
  terms: number;
  /** Directions of the test side (explain): Y = T g and Z = T w with T = x̃ᵀS (k×M×C). */
  testDirections?: number;
  /** Audit: Q w (k×C), and with a held-out solution, −Σ_c g_c (U_c·x̃) (k×1). */
  audit?: { heldOut: boolean };
}

/**
 * Everything per row in one pass over a chunk (float64 except T and the product in xs):
 *   xs = U_Sᵀx̃, s_a = Σ_b xs_b²/denom[a,b] (so Q = U_A diag(s) U_Aᵀ), self = gᵀQg,
 *   y = Σ_{j<terms} (QA/n)^j Qg (Neumann series of (I − QA/n)⁻¹Qg), w = g + Ay/n;
 * explain: T = x̃ᵀS (float32, S as input `st`, D̃×M·C), [Y Z] = T[g w] (output yz, k×M×2);
 * audit: Qw and the held-out influence.
 * Inputs h, ones, g (k×C float64), p (k×C float64), [st (D̃×M·C float32)], [uho (C×D̃ float64)].
 */
export async function rowKernel(spec: RowKernelSpec): Promise<Kernel> {
  const g = new GraphBuilder();
  const { C } = spec;
  const Dt = spec.D + (spec.bias ? 1 : 0);
  const xt32 = headInput(g, spec);
  const gg = g.input('g', F64, ['k', C]);
  const p = g.input('p', F64, ['k', C]);
  const ua = g.constant(F64, [C, C], spec.UA);
  const uaT = g.constant(F64, [C, C], transpose(spec.UA, C, C));
  // xs and s in float32, as in lambdaKernel: s sums non-negative terms, adding no cancellation.
  const xs = g.matmul(xt32, g.constant(F32, [Dt, Dt], spec.US));
  const s = g.cast(
    g.matmul(
      g.mul(xs, xs),
      g.constant(
        F32,
        [Dt, C],
        transpose(
          spec.denom.map((d) => 1 / d),
          C,
          Dt,
        ),
      ),
    ),
    F64,
  );
  g.output(s, 's', F64, ['k', C]);
  const Q = (v: string) => g.matmul(g.mul(s, g.matmul(v, ua)), uaT);
  const A = (v: string) => {
    const pv = g.mul(p, v);
    return g.sub(pv, g.mul(p, g.reduceSum(pv, [1])));
  };
  const gh = g.matmul(gg, ua);
  g.output(g.reduceSum(g.mul(s, g.mul(gh, gh)), [1]), 'self', F64, ['k', 1]);
  const qg = g.matmul(g.mul(s, gh), uaT);
  const invN = g.constant(F64, [], [1 / spec.n]);
  let y = qg;
  for (let j = 1; j < spec.terms; j++) y = g.add(qg, g.mul(Q(A(y)), invN));
  const w = g.add(gg, g.mul(A(y), invN));
  g.output(w, 'w', F64, ['k', C]);
  if (spec.testDirections) {
    const M = spec.testDirections;
    const T = g.reshape(g.matmul(xt32, g.input('st', F32, [Dt, M * C])), [0, M, C]);
    // [Y Z] = T [g w] as k products of M×C by C×2 matrices.
    const gw = g.cast(g.op('Concat', [g.reshape(gg, [0, C, 1]), g.reshape(w, [0, C, 1])], { axis: 2 }), F32);
    g.output(g.matmul(T, gw), 'yz', F32, ['k', M, 2]);
  }
  if (spec.audit) {
    g.output(Q(w), 'qw', F64, ['k', C]);
    if (spec.audit.heldOut) {
      const xt = g.cast(xt32, F64);
      const uho = g.input('uho', F64, [C, Dt]);
      g.output(g.reduceSum(g.mul(g.gemm(xt, uho, 0, 1), gg), [1]), 'ho', F64, ['k', 1]);
    }
  }
  return g.session();
}

/** a·b, aᵀ·b or a·bᵀ for float64 matrices of any size (inputs a, b; output c). */
export async function gemm64Kernel(transA: 0 | 1, transB: 0 | 1): Promise<Kernel> {
  const g = new GraphBuilder();
  g.output(g.gemm(g.input('a', F64, ['p', 'q']), g.input('b', F64, ['r', 's']), transA, transB), 'c', F64, ['m', 'n']);
  return g.session();
}

/**
 * Q_i = (I⊗x̃_i)ᵀ H⁻¹ (I⊗x̃_i) (C×C) for a chunk of rows, float64: T = X̃·Hr with Hr[j, p·C + d] =
 * H⁻¹[p, d·D̃ + j], then Q[c,d] = Σ_j x̃_j T[c·D̃ + j, d]. Inputs x (k×D̃ float64), hr (D̃×P·C float64);
 * output q (k×C×C).
 */
export async function quadKernel(C: number, Dt: number): Promise<Kernel> {
  const g = new GraphBuilder();
  const x = g.input('x', F64, ['k', Dt]);
  const T = g.reshape(g.matmul(x, g.input('hr', F64, [Dt, C * Dt * C])), [0, C, Dt, C]);
  const q = g.reduceSum(g.mul(T, g.reshape(x, [0, 1, Dt, 1])), [2], 0);
  g.output(q, 'q', F64, ['k', C, C]);
  return g.session();
}

/**
 * The damped objective's data term over a chunk of rows of a softmax head, in float64: with
 * z = x̃θᵀ, g = softmax(z) − e_y and L = logsumexp(z) − z_y per row, weighted by w (1 to include a
 * row, 0 to leave it out): output grad = Σ w_i g_i ⊗ x̃_i (C×D̃) and loss = Σ w_i L_i (1×1).
 * Inputs h, ones, theta (C×D̃ float64), labels (k int32), w (k×1 float64).
 */
export async function objectiveKernel(s: HeadShape): Promise<Kernel> {
  const g = new GraphBuilder();
  const { C } = s;
  const Dt = s.D + (s.bias ? 1 : 0);
  const x = g.cast(headInput(g, s), F64);
  const z = g.gemm(x, g.input('theta', F64, [C, Dt]), 0, 1);
  const zc = g.sub(z, g.op('ReduceMax', [z], { axes: [1], keepdims: 1 }));
  const e = g.op('Exp', [zc]);
  const sum = g.reduceSum(e, [1]);
  const p = g.op('Div', [e, sum]);
  const y = g.reshape(g.input('labels', I32, ['k']), [-1, 1]);
  const onehot = g.cast(
    g.op('Equal', [
      y,
      g.constant(
        I32,
        [1, C],
        Array.from({ length: C }, (_, c) => c),
      ),
    ]),
    F64,
  );
  const w = g.input('w', F64, ['k', 1]);
  const gw = g.mul(g.sub(p, onehot), w);
  g.output(g.gemm(gw, x, 1, 0), 'grad', F64, [C, Dt]);
  // logsumexp − z_y = log Σ e^{z − max} − (z_y − max).
  const loss = g.sub(g.op('Log', [sum]), g.reduceSum(g.mul(zc, onehot), [1]));
  g.output(g.reduceSum(g.mul(loss, w), [0]), 'loss', F64, [1, 1]);
  return g.session();
}
