/**
 * The head as a parameter group: θ = [W | b], C×D̃ row-major (index c·D̃ + j), acting on
 * x̃ = [h; 1] (or h without a bias), so that the logits are z = θ x̃. Its per-row view of the
 * training data is h (the head's inputs) and g = ∂L/∂z (the backprop signal at its output),
 * which make the per-example gradient ∇L_i = g_i ⊗ x̃_i.
 */
import { InfluenceError } from '../errors';

/** Sizes of the head. C is the number of its outputs (rows of θ). */
export interface HeadShape {
  C: number;
  D: number;
  bias: boolean;
}

/** The head's view of the training rows: its inputs h and backprop signals g. */
export interface HeadRows extends HeadShape {
  n: number;
  /** n×D, the head inputs (float32 as ORT computes them; float64 for checks). */
  h: Float32Array | Float64Array;
  /** n×C, g = ∂L/∂z from the logits, float64. */
  g: Float64Array;
  labels: Int32Array;
}

/** D̃ = D + 1 with a bias, and P = C·D̃ parameters. */
export function headDims(s: HeadShape): { Dt: number; P: number } {
  const Dt = s.D + (s.bias ? 1 : 0);
  return { Dt, P: s.C * Dt };
}

/** Writes x̃_i into out (length D̃). */
export function rowInput(rows: Pick<HeadRows, 'D' | 'bias' | 'h'>, i: number, out: Float64Array): void {
  const { D, h } = rows;
  const o = i * D;
  for (let j = 0; j < D; j++) out[j] = h[o + j];
  if (rows.bias) out[D] = 1;
}

/** x̃ for a single h (test rows). */
export function inputOf(h: ArrayLike<number>, bias: boolean): Float64Array {
  const x = new Float64Array(h.length + (bias ? 1 : 0));
  x.set(h);
  if (bias) x[h.length] = 1;
  return x;
}

/** z = θ x̃_i for row i of h (n×D), into out (length C). */
export function logits(
  s: HeadShape,
  theta: Float64Array,
  h: Float32Array | Float64Array,
  i: number,
  out: Float64Array,
): void {
  const { C, D, bias } = s;
  const Dt = D + (bias ? 1 : 0);
  const o = i * D;
  for (let c = 0; c < C; c++) {
    const tc = c * Dt;
    let v = bias ? theta[tc + D] : 0;
    for (let j = 0; j < D; j++) v += theta[tc + j] * h[o + j];
    out[c] = v;
  }
}

/** Packs a head's W (C×D row-major) and b (length C, or null) into θ (C×D̃ row-major), times `scale` (the effective head of logits scale·z). */
export function headTheta(W: Float64Array, b: Float64Array | null, C: number, D: number, scale = 1): Float64Array {
  if (W.length !== C * D)
    throw new InfluenceError('BAD_OPTION', `head weight has ${W.length} entries; expected ${C}×${D}`);
  if (b && b.length !== C) throw new InfluenceError('BAD_OPTION', `head bias has ${b.length} entries; expected ${C}`);
  const Dt = D + (b ? 1 : 0);
  const theta = new Float64Array(C * Dt);
  for (let c = 0; c < C; c++) {
    for (let j = 0; j < D; j++) theta[c * Dt + j] = scale * W[c * D + j];
    if (b) theta[c * Dt + D] = scale * b[c];
  }
  return theta;
}

/** Subtracts the class mean from a C×D̃ matrix (its component along 1 ⊗ v). */
export function centerClasses(v: Float64Array, C: number, Dt: number): void {
  for (let j = 0; j < Dt; j++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += v[c * Dt + j];
    s /= C;
    for (let c = 0; c < C; c++) v[c * Dt + j] -= s;
  }
}
