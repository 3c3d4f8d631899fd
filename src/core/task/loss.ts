/**
 * The loss on the head's logits, with one home for each of its formulas. Two tasks:
 * - softmax cross-entropy over K = C ≥ 2 logits: L = logsumexp(z) − z_y;
 * - binary logistic regression on K = 1 logit: L = log(1 + e^z) − y·z, labels y ∈ {0, 1}.
 * Both write the signal g = ∂L/∂z = p − t, with p = softmax(z) or σ(z) and the target t = e_y or
 * [y], and both have the curvature A = ∂²L/∂z² = diag(p) − ppᵀ (which for K = 1 is p(1 − p)). So
 * p = g + t, and the curvature code needs only `addTarget`; the rest is the task's.
 */

export type TaskKind = 'softmax' | 'binary';

export interface Task {
  readonly kind: TaskKind;
  /** Logits of the head (rows of θ): C for softmax, 1 for binary. */
  readonly K: number;
  /** Classes a prediction chooses among: C, or 2. */
  readonly classes: number;
  /** Whether A1 = 0, so that H(1 ⊗ v) = λ(1 ⊗ v): the fast path solves that part exactly. */
  readonly meanFree: boolean;
  /** L for label y at logits z[zo ..], and (when g is given) g = ∂L/∂z into g[go ..]. */
  lossAndSignal(z: ArrayLike<number>, zo: number, y: number, g: Float64Array | null, go: number): number;
  /** The predicted class, the runner-up and the margin between them (≥ 0). */
  prediction(z: ArrayLike<number>): { predicted: number; runnerUp: number; margin: number };
  /** The margin of label y over the best other class, and the predicted class. */
  ownMargin(z: ArrayLike<number>, y: number): { margin: number; predicted: number };
  /** Probabilities of the classes (length `classes`). */
  probabilities(z: ArrayLike<number>): number[];
  /** The probability of class c, given p = g + t. */
  classProbability(p: ArrayLike<number>, c: number): number;
  /** L(z + dz) − L(z) for label y, given p at z, without cancellation. */
  lossShift(p: ArrayLike<number>, dz: ArrayLike<number>, y: number): number;
  /**
   * For each class c other than the predicted one: its margin z_ŷ − z_c (as a class margin) and the
   * vector m (length K) with ∂margin/∂z = m, so that removing a row changes the margin by m·Δz.
   */
  competitors(z: ArrayLike<number>, predicted: number): { cls: number; margin: number; m: Float64Array }[];
}

/** Index of the largest entry (the first of ties). */
export function argmax(z: ArrayLike<number>, from = 0, K = z.length - from): number {
  let best = 0;
  for (let c = 1; c < K; c++) if (z[from + c] > z[from + best]) best = c;
  return best;
}

/** Index of the largest entry other than `except` (−1 excludes nothing). */
function argmaxExcept(z: ArrayLike<number>, except: number): number {
  let best = -1;
  for (let c = 0; c < z.length; c++) if (c !== except && (best < 0 || z[c] > z[best])) best = c;
  return best;
}

/** softmax(z) as plain numbers. */
function softmax(z: ArrayLike<number>): number[] {
  let m = -Infinity;
  for (let c = 0; c < z.length; c++) m = Math.max(m, z[c]);
  const e = Array.from(z, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** σ(z) = 1/(1 + e^−z), without overflow. */
export function sigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

const softmaxTask = (C: number): Task => ({
  kind: 'softmax',
  K: C,
  classes: C,
  meanFree: true,
  // Stable: logsumexp with the max subtracted, and g_y = −Σ_{c≠y} p_c so that a confident row
  // keeps the digits of its small gradient.
  lossAndSignal(z, zo, y, g, go) {
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
  },
  prediction(z) {
    const predicted = argmaxExcept(z, -1);
    const runnerUp = argmaxExcept(z, predicted);
    return { predicted, runnerUp, margin: z[predicted] - z[runnerUp] };
  },
  ownMargin(z, y) {
    let other = -Infinity;
    let best = y;
    for (let c = 0; c < C; c++) {
      if (c !== y && z[c] > other) other = z[c];
      if (z[c] > z[best]) best = c;
    }
    return { margin: z[y] - other, predicted: best };
  },
  probabilities: softmax,
  classProbability: (p, c) => p[c],
  // log Σ_c p_c e^{dz_c} − dz_y = log1p(Σ_c p_c expm1(dz_c)) − dz_y; when a term overflows (dz_c > 709),
  // m + log Σ_c p_c e^{dz_c − m} with m the largest dz_c of a class with p_c > 0.
  lossShift(p, dz, y) {
    let s = 0;
    let m = -Infinity;
    for (let c = 0; c < C; c++) {
      s += p[c] * Math.expm1(dz[c]);
      if (p[c] > 0 && dz[c] > m) m = dz[c];
    }
    if (Number.isFinite(s)) return Math.log1p(s) - dz[y];
    let t = 0;
    for (let c = 0; c < C; c++) if (p[c] > 0) t += p[c] * Math.exp(dz[c] - m);
    return m + Math.log(t) - dz[y];
  },
  competitors(z, predicted) {
    const out: { cls: number; margin: number; m: Float64Array }[] = [];
    for (let c = 0; c < C; c++) {
      if (c === predicted) continue;
      const m = new Float64Array(C);
      m[predicted] = 1;
      m[c] = -1;
      out.push({ cls: c, margin: z[predicted] - z[c], m });
    }
    return out;
  },
});

const binaryTask: Task = {
  kind: 'binary',
  K: 1,
  classes: 2,
  meanFree: false,
  // log(1 + e^z) − y z, in the form that neither overflows nor cancels: softplus(z) = max(z, 0) + log1p(e^−|z|).
  lossAndSignal(z, zo, y, g, go) {
    const v = z[zo];
    if (g) g[go] = y ? -sigmoid(-v) : sigmoid(v);
    return Math.max(v, 0) + Math.log1p(Math.exp(-Math.abs(v))) - y * v;
  },
  prediction(z) {
    const predicted = z[0] > 0 ? 1 : 0;
    return { predicted, runnerUp: 1 - predicted, margin: Math.abs(z[0]) };
  },
  ownMargin(z, y) {
    return { margin: y ? z[0] : -z[0], predicted: z[0] > 0 ? 1 : 0 };
  },
  probabilities(z) {
    return [sigmoid(-z[0]), sigmoid(z[0])];
  },
  // p[0] = σ(z) would lose the digits of 1 − σ(z) for a confident class 0, but only by rounding.
  classProbability: (p, c) => (c === 1 ? p[0] : 1 - p[0]),
  // softplus(z + dz) − softplus(z) − y dz = log1p(p expm1(dz)) − y dz; when e^dz overflows,
  // log(1 − p + p e^dz) = dz + log(p + (1 − p) e^−dz).
  lossShift(p, dz, y) {
    const d = dz[0];
    const s = p[0] === 0 ? 0 : Math.log1p(p[0] * Math.expm1(d));
    return (Number.isFinite(s) ? s : d + Math.log(p[0] + (1 - p[0]) * Math.exp(-d))) - y * d;
  },
  competitors(z, predicted) {
    const sign = predicted === 1 ? 1 : -1;
    return [{ cls: 1 - predicted, margin: sign * z[0], m: Float64Array.of(sign) }];
  },
};

/** The task of a head with K logits: binary logistic for one, softmax cross-entropy for more. */
export function taskFor(K: number): Task {
  return K === 1 ? binaryTask : softmaxTask(K);
}

/** t = e_y (K ≥ 2) or [y] (K = 1), added to p[o ..]: p = g + t. */
function addTarget(p: Float64Array, o: number, K: number, y: number): void {
  if (K === 1) p[o] += y;
  else p[o + y] += 1;
}

/**
 * Loss and signal of k rows of logits (k×K): loss[r] and g[r·K ..] for labels[r]. A row without a
 * label (label < 0) is taken for class 0; its numbers are not used.
 */
export function lossAndSignal(
  task: Task,
  z: ArrayLike<number>,
  labels: Int32Array,
  k: number,
  loss: Float64Array,
  g: Float64Array,
): void {
  const { K } = task;
  for (let r = 0; r < k; r++) loss[r] = task.lossAndSignal(z, r * K, Math.max(labels[r], 0), g, r * K);
}

/** p = g + t (float64) for the first k rows of g (row-major, K wide), in `out` (which may be longer). */
export function probabilities(
  g: Float64Array,
  labels: Int32Array,
  k: number,
  K: number,
  out: Float64Array = new Float64Array(k * K),
): Float64Array {
  const p = out.subarray(0, k * K);
  p.set(g.subarray(0, k * K));
  for (let r = 0; r < k; r++) addTarget(p, r * K, K, labels[r]);
  return p;
}

/** p_i = g_i + t_i into p (K) and the curvature A_i = diag(p) − ppᵀ into A (K×K). */
export function rowCurvature(
  g: Float64Array,
  labels: Int32Array,
  i: number,
  K: number,
  p: Float64Array,
  A: Float64Array,
): void {
  for (let c = 0; c < K; c++) p[c] = g[i * K + c];
  addTarget(p, 0, K, labels[i]);
  for (let c = 0; c < K; c++) {
    for (let d = 0; d < K; d++) A[c * K + d] = -p[c] * p[d];
    A[c * K + c] += p[c];
  }
}

/** trace(A_i) = Σ_c p_c(1 − p_c) for row i. */
export function curvatureTrace(g: Float64Array, labels: Int32Array, i: number, K: number): number {
  const p = probabilities(g.subarray(i * K), labels.subarray(i), 1, K);
  let t = 0;
  for (let c = 0; c < K; c++) t += p[c] - p[c] * p[c];
  return t;
}
