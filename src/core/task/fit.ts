/**
 * How the given head sits against the objective that influence assumes,
 * J(θ) = (1/n) Σ_i L_i + (λ/2)‖θ‖²: its gradient there (stationarity) and the L2 that its gradient
 * implies (refit.ts refits it to J's exact optimum). Computed on the rows' effective head
 * (logits s·z: θ' = sθ, λ' = λ/s², see curvature/policy.ts) and reported on θ.
 */
import { addInto, dot } from '../linalg';
import { f64 } from '../ort/graph';
import { gradSumKernel, HeadFeed, overChunks } from '../ort/kernels';
import { headDims, rowInput, type HeadRows } from './head';
import { lossAndSignal, probabilities, taskFor } from './loss';

/** Above this relative gradient norm the head is reported as not at the optimum influence assumes. */
export const STATIONARITY_WARN = 0.05;

/** G = (1/n) Σ_i g_i ⊗ x̃_i, the gradient of the mean loss at the rows' head (C×D̃ row-major; one ORT pass). */
export async function meanLossGradient(rows: HeadRows, signal?: AbortSignal): Promise<Float64Array> {
  const { n, C } = rows;
  const { Dt } = headDims(rows);
  const G = new Float64Array(C * Dt);
  const head = new HeadFeed(rows, false);
  const kernel = await gradSumKernel(rows, head.type);
  try {
    await overChunks(
      n,
      kernel,
      (start, k) => ({ ...head.chunk(start, k), g: f64(rows.g.subarray(start * C, (start + k) * C), [k, C]) }),
      (_start, _k, out) => addInto(G, out.grad.data as Float64Array),
      signal,
    );
  } finally {
    await kernel.release();
  }
  for (let q = 0; q < G.length; q++) G[q] /= n;
  return G;
}

/**
 * The gradient of the mean loss at θ = 0 (every logit 0): the scale that relGradNorm is measured
 * against. There g_i = p₀ − t_i with the same p₀ for every row, so only the sum of x̃ and its sums
 * per label are needed.
 */
export function zeroHeadGradient(rows: HeadRows): Float64Array {
  const { n, C } = rows;
  const { Dt } = headDims(rows);
  const g0 = new Float64Array(C);
  lossAndSignal(taskFor(C), new Float64Array(C), Int32Array.of(0), 1, new Float64Array(1), g0);
  // g₀ = p₀ − t for label 0, so p₀ = g₀ + t.
  const p0 = probabilities(g0, Int32Array.of(0), 1, C);
  const x = new Float64Array(Dt);
  const sum = new Float64Array(Dt);
  const G = new Float64Array(C * Dt);
  for (let i = 0; i < n; i++) {
    rowInput(rows, i, x);
    for (let j = 0; j < Dt; j++) sum[j] += x[j];
    const y = rows.labels[i];
    // The target t: e_y (softmax) or [y] (one logit).
    const c = C === 1 ? 0 : y;
    const t = C === 1 ? y : 1;
    if (t !== 0) for (let j = 0; j < Dt; j++) G[c * Dt + j] -= t * x[j];
  }
  for (let c = 0; c < C; c++) for (let j = 0; j < Dt; j++) G[c * Dt + j] = (G[c * Dt + j] + p0[c] * sum[j]) / n;
  return G;
}

export interface Stationarity {
  /** ‖∇J(θ)‖ at the damping in use, on θ. */
  gradNorm: number;
  /** gradNorm / ‖∇ mean loss at θ = 0‖: 0 at the optimum, about 1 for an untrained head. */
  relGradNorm: number;
  /** relGradNorm > STATIONARITY_WARN: the estimates describe a refit head rather than this one. */
  warning: boolean;
}

/** ‖G + λ'θ'‖ on θ (the factor s), relative to ‖G₀‖. */
export function stationarity(
  G: Float64Array,
  G0: Float64Array,
  theta: Float64Array,
  effectiveDamping: number,
  scale: number,
): Stationarity {
  let sq = 0;
  for (let q = 0; q < G.length; q++) sq += (G[q] + effectiveDamping * theta[q]) ** 2;
  const norm = Math.sqrt(sq);
  const ref = Math.sqrt(dot(G0, G0));
  const relGradNorm = ref > 0 ? norm / ref : 0;
  return { gradNorm: Math.abs(scale) * norm, relGradNorm, warning: relGradNorm > STATIONARITY_WARN };
}

/**
 * The L2 that a head trained with an explicit L2 term reveals: at a stationary point G + λθ = 0,
 * so λ̂ = −⟨G, θ⟩/‖θ‖² (least squares), with the residual ‖G + λ̂θ‖/‖G‖ saying how well that fits
 * (0: exactly stationary for some λ). On the effective head; λ on θ is s²·λ̂.
 */
export function impliedL2(G: Float64Array, theta: Float64Array): { lambda: number; residual: number } {
  const tt = dot(theta, theta);
  const lambda = tt > 0 ? -dot(G, theta) / tt : NaN;
  let sq = 0;
  for (let q = 0; q < G.length; q++) sq += (G[q] + lambda * theta[q]) ** 2;
  const gg = dot(G, G);
  return { lambda, residual: gg > 0 ? Math.sqrt(sq / gg) : 0 };
}
