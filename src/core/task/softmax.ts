/**
 * The loss on the head's logits: softmax cross-entropy, L = logsumexp(z) − z_y, with its signal
 * g = ∂L/∂z = softmax(z) − e_y and curvature A = ∂²L/∂z² = diag(p) − ppᵀ (p = softmax(z) = g + e_y).
 * Every formula of the task has its one home here; the curvature and score code only combine them.
 */

/** Index of the largest entry (the first of ties). */
export function argmax(z: ArrayLike<number>): number {
  let best = 0;
  for (let c = 1; c < z.length; c++) if (z[c] > z[best]) best = c;
  return best;
}

/** Index of the largest entry other than `except` (−1 excludes nothing). */
export function argmaxExcept(z: ArrayLike<number>, except: number): number {
  let best = -1;
  for (let c = 0; c < z.length; c++) if (c !== except && (best < 0 || z[c] > z[best])) best = c;
  return best;
}

/** The predicted class, the runner-up c* and the margin z_ŷ − z_c*. */
export function prediction(z: ArrayLike<number>): { predicted: number; runnerUp: number; margin: number } {
  const predicted = argmaxExcept(z, -1);
  const runnerUp = argmaxExcept(z, predicted);
  return { predicted, runnerUp, margin: z[predicted] - z[runnerUp] };
}

/** The margin of label y over the best other class, z_y − max_{c≠y} z_c, and the argmax. */
export function ownMargin(z: ArrayLike<number>, y: number): { margin: number; argmax: number } {
  let other = -Infinity;
  let best = y;
  for (let c = 0; c < z.length; c++) {
    if (c !== y && z[c] > other) other = z[c];
    if (z[c] > z[best]) best = c;
  }
  return { margin: z[y] - other, argmax: best };
}

/** softmax(z) as plain numbers (for the probabilities shown to the user). */
export function softmax(z: ArrayLike<number>): number[] {
  let m = -Infinity;
  for (let c = 0; c < z.length; c++) m = Math.max(m, z[c]);
  const e = Array.from(z, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/**
 * Cross-entropy of the logits z[zo .. zo+C) for label y, and (when g is given) g = softmax(z) − e_y
 * into g[go .. go+C). Stable: logsumexp with the max subtracted, and g_y = −Σ_{c≠y} p_c so that a
 * confident row keeps the digits of its small gradient.
 */
export function crossEntropy(z: ArrayLike<number>, y: number, g: Float64Array | null = null, go = 0, C = z.length, zo = 0): number {
  let m = z[zo];
  for (let c = 1; c < C; c++) if (z[zo + c] > m) m = z[zo + c];
  let s = 0;
  let others = 0;
  for (let c = 0; c < C; c++) {
    const e = Math.exp(z[zo + c] - m);
    s += e;
    if (c !== y) others += e;
    if (g) g[go + c] = e;
  }
  if (g) {
    for (let c = 0; c < C; c++) g[go + c] /= s;
    g[go + y] = -others / s;
  }
  // log Σ e^{z_c − m} − (z_y − m), with log1p for the confident case (p_y ≈ 1).
  const ey = Math.exp(z[zo + y] - m);
  return others < ey ? Math.log1p(others / ey) : Math.log(s) - (z[zo + y] - m);
}

/**
 * Loss and signal of k rows of logits (k×C): loss[r] and g[r·C ..] for labels[r]. A row without a
 * label (label < 0) is taken for class 0; its numbers are not used.
 */
export function lossAndSignal(z: ArrayLike<number>, labels: Int32Array, k: number, C: number, loss: Float64Array, g: Float64Array): void {
  for (let r = 0; r < k; r++) loss[r] = crossEntropy(z, Math.max(labels[r], 0), g, r * C, C, r * C);
}

/** p = g + e_y (float64) for the first k rows of g (row-major, C wide), in `out` (which may be longer). */
export function probabilities(g: Float64Array, labels: Int32Array, k: number, C: number, out: Float64Array = new Float64Array(k * C)): Float64Array {
  const p = out.subarray(0, k * C);
  p.set(g.subarray(0, k * C));
  for (let r = 0; r < k; r++) p[r * C + labels[r]] += 1;
  return p;
}

/** p_i = g_i + e_{y_i} into p (C) and the curvature A_i = diag(p) − ppᵀ into A (C×C). */
export function rowCurvature(g: Float64Array, labels: Int32Array, i: number, C: number, p: Float64Array, A: Float64Array): void {
  for (let c = 0; c < C; c++) p[c] = g[i * C + c];
  p[labels[i]] += 1;
  for (let c = 0; c < C; c++) {
    for (let d = 0; d < C; d++) A[c * C + d] = -p[c] * p[d];
    A[c * C + c] += p[c];
  }
}

/** trace(A_i) = Σ_c p_c(1 − p_c) for row i. */
export function curvatureTrace(g: Float64Array, labels: Int32Array, i: number, C: number): number {
  let t = 0;
  for (let c = 0; c < C; c++) {
    const pc = g[i * C + c] + (labels[i] === c ? 1 : 0);
    t += pc - pc * pc;
  }
  return t;
}

/**
 * CE(z + dz) − CE(z) for softmax probabilities p = softmax(z), evaluated without cancellation:
 * log Σ_c p_c e^{dz_c} − dz_y = log1p(Σ_c p_c expm1(dz_c)) − dz_y.
 */
export function lossShift(p: ArrayLike<number>, dz: ArrayLike<number>, y: number): number {
  let s = 0;
  for (let c = 0; c < p.length; c++) s += p[c] * Math.expm1(dz[c]);
  return Math.log1p(s) - dz[y];
}
