/**
 * Each training row's loss-gradient factors over the chosen layers, in float32: per layer x̃
 * (n×T×D̃: the layer's input, or a Conv's patches, with the bias's 1) and s (n×T×out: the backward
 * signal of ∇L_i), so that layer l's part of ∇L_i is Σ_t s_it x̃_itᵀ. With them, every row's
 * lossChangeIfRemoved for a test row is one solve (u = H⁻¹∇L_t) and one GEMM over the rows,
 * (1/n) Σ_l Σ_t s_itᵀ U_l x̃_it, with no pass over the data: the head-vs-last-2 agreement reads them
 * from the cache. Float32, since they only rank rows against the head's; kept up to FACTOR_BYTES.
 */
import { throwIfAborted } from '../errors';
import type { RowPass } from '../deepRows';
import type { DeepEngine } from '../model/deep';
import { F32, F64, GraphBuilder } from '../ort/graph';
import * as ort from 'onnxruntime-node';

/** Per chosen layer, x̃ and s of every row; each array holds an even count (a float32 pad at the end) so that it is a whole float64 array too. */
export interface RowFactorArrays {
  x: Float32Array[];
  s: Float32Array[];
}

/** 200k rows of the bench MLP's last 2 layers (427 MB); larger sets are scored by a pass over their rows. */
export const FACTOR_BYTES = 512 * 1024 * 1024;

const even = (k: number) => k + (k % 2);

/** The bytes of n rows' factors. */
export function factorBytes(deep: DeepEngine, n: number): number {
  return 4 * n * deep.shapes.reduce((a, f) => a + f.T * (f.Dt + f.out), 0);
}

/** The factors of n rows, from one pass over them (the backward graph with each row's own loss signal). */
export async function collectRowFactors(
  deep: DeepEngine,
  n: number,
  pass: RowPass,
  signal?: AbortSignal,
): Promise<RowFactorArrays> {
  const K = deep.K;
  const x = deep.shapes.map((f) => new Float32Array(even(n * f.T * f.Dt)));
  const s = deep.shapes.map((f) => new Float32Array(even(n * f.T * f.out)));
  const step = deep.rowsPerRun(1);
  await pass(async (start, fw, g) => {
    for (let o = 0; o < fw.count; o += step) {
      throwIfAborted(signal);
      const m = Math.min(step, fw.count - o);
      const f = await deep.factors(fw, o, m, g.subarray(o * K, (o + m) * K), 1);
      deep.shapes.forEach(({ T, Dt, out }, q) => {
        x[q].set(f[q].x, (start + o) * T * Dt);
        s[q].set(f[q].s, (start + o) * T * out);
      });
    }
  });
  return { x, s };
}

/** As a cache entry's float64 arrays (the same bytes), and back (null if they do not fit n rows of these layers). */
export function packRowFactors(f: RowFactorArrays): Float64Array[] {
  return [...f.x, ...f.s].map((a) => new Float64Array(a.buffer, a.byteOffset, a.length / 2));
}

export function unpackRowFactors(deep: DeepEngine, n: number, arrays: Float64Array[]): RowFactorArrays | null {
  const L = deep.shapes.length;
  const want = [...deep.shapes.map((f) => even(n * f.T * f.Dt)), ...deep.shapes.map((f) => even(n * f.T * f.out))];
  if (arrays.length !== 2 * L || arrays.some((a, k) => 2 * a.length !== want[k])) return null;
  const f32 = arrays.map((a) => new Float32Array(a.buffer, a.byteOffset, 2 * a.length));
  return { x: f32.slice(0, L), s: f32.slice(L) };
}

/** Every row's lossChangeIfRemoved = ∇L_iᵀu/n for u = H⁻¹∇L_t over the chosen parameters (P). */
export async function factorLossChanges(
  deep: DeepEngine,
  f: RowFactorArrays,
  u: Float64Array,
  n: number,
  signal?: AbortSignal,
): Promise<Float64Array> {
  const g = new GraphBuilder();
  let y: string | null = null;
  deep.shapes.forEach(({ T, Dt, out }, q) => {
    // Σ_t s_tᵀ U x̃_t per row: (x̃ Uᵀ) ∘ s summed over the row's T positions and out signals.
    const xu = g.gemm(g.input(`x${q}`, F32, ['kt', Dt]), g.input(`u${q}`, F32, [out, Dt]), 0, 1);
    const r = g.reduceSum(g.reshape(g.mul(xu, g.input(`s${q}`, F32, ['kt', out])), [-1, T * out]), [1], 0);
    y = y ? g.add(y, r) : r;
  });
  g.output(g.cast(y!, F64), 'y', F64, ['k']);
  const kernel = await g.session();
  try {
    const feeds: Record<string, ort.Tensor> = {};
    deep.shapes.forEach(({ Dt, out }, q) => {
      const off = deep.offsets[q];
      feeds[`u${q}`] = new ort.Tensor('float32', Float32Array.from(u.subarray(off, off + out * Dt)), [out, Dt]);
    });
    const result = new Float64Array(n);
    const step = Math.max(1, Math.floor((1 << 22) / Math.max(...deep.shapes.map((s) => s.T * Math.max(s.Dt, s.out)))));
    for (let r0 = 0; r0 < n; r0 += step) {
      throwIfAborted(signal);
      const m = Math.min(step, n - r0);
      deep.shapes.forEach(({ T, Dt, out }, q) => {
        feeds[`x${q}`] = new ort.Tensor('float32', f.x[q].subarray(r0 * T * Dt, (r0 + m) * T * Dt), [m * T, Dt]);
        feeds[`s${q}`] = new ort.Tensor('float32', f.s[q].subarray(r0 * T * out, (r0 + m) * T * out), [m * T, out]);
      });
      const v = (await kernel.run(feeds)).y.data as Float64Array;
      for (let k = 0; k < m; k++) result[r0 + k] = v[k] / n;
    }
    return result;
  } finally {
    await kernel.release();
  }
}
