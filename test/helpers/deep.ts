/** Reading the deep-influence references (test/fixtures/deep, built by scripts/fixtures/deep.py). */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TensorProto_DataType } from 'onnx-buf';
import type { DeepCurvature } from '../../src/core/curvature/ggn';
import { rowPass, type DeepRows } from '../../src/core/deepRows';
import type { DeepEngine } from '../../src/core/model/deep';
import { deepLossChanges, deepTestPoint, type DeepTestPoint } from '../../src/core/scores/deep';
import { floatTensor, mkNode, serialize, valueInfo } from './models';

export const DEEP_DIR = resolve(__dirname, '../fixtures/deep');

/** A stored array: JSON numbers (nested lists) or {dtype: 'float64', shape, base64}. */
export function decode(v: unknown): Float64Array {
  if (v && typeof v === 'object' && 'base64' in (v as Record<string, unknown>)) {
    const buf = Buffer.from((v as { base64: string }).base64, 'base64');
    // Copy into an aligned buffer first.
    const bytes = new Uint8Array(buf.length);
    bytes.set(buf);
    return new Float64Array(bytes.buffer);
  }
  return Float64Array.from((v as unknown[]).flat(Infinity) as number[]);
}

/** An array as the fixtures store it: read it with decode(). */
type Stored = unknown;
/** By λ as the fixtures write it (String(lambda)). */
type ByLambda<T> = Record<string, T>;

/** One op-coverage model of manifest.json (only the fields the tests read). */
export interface OpModel {
  name: string;
  file: string;
  layers: { node: string; params: number }[];
  depths: {
    k: number;
    params: number;
    layerOffsets: number[];
    perExampleGradient: Stored;
    testGradient: Stored;
    lambda: number;
    selfInfluence: Stored;
    lossChangeIfRemoved: Stored;
  }[];
  rows: { train: string; test: string; n: number; T: number };
}

/** An LDS model's deep reference, lds_<model>_<scope>.json (only the fields the tests read). */
export interface LdsReference {
  model: string;
  train: string;
  test: string;
  testRows: number[];
  n: number;
  C: number;
  params: number;
  layerOffsets: number[];
  lambdas: number[];
  gradientRows: number[];
  testGradientRows: number[];
  perExampleGradient: Stored;
  testGradient: Stored;
  lossChangeIfRemoved: ByLambda<Stored>;
  selfInfluence: ByLambda<Stored>;
  kinks: { onnxruntimeMasks: { lds: ByLambda<number> } };
  kinkFree: {
    lambda: number;
    excludedTrainRows: number[];
    n: number;
    testRowIndices: number[];
    lossChangeIfRemoved: Stored;
  };
  lds: { lambdas: ByLambda<number> };
}

export function manifest(): { ops: { models: OpModel[] } } {
  return JSON.parse(readFileSync(join(DEEP_DIR, 'manifest.json'), 'utf8'));
}

export function ldsReference(model: 'mlp' | 'cnn', scope: 'last2' | 'all'): LdsReference {
  return JSON.parse(readFileSync(join(DEEP_DIR, `lds_${model}_${scope}.json`), 'utf8'));
}

/** max over rows of ‖a_i − b_i‖/‖b_i‖ for n rows of width P. */
export function maxRowRelError(a: ArrayLike<number>, b: ArrayLike<number>, n: number, P: number): number {
  let worst = 0;
  for (let i = 0; i < n; i++) {
    let d = 0;
    let r = 0;
    for (let q = 0; q < P; q++) {
      d += (a[i * P + q] - b[i * P + q]) ** 2;
      r += b[i * P + q] ** 2;
    }
    worst = Math.max(worst, r > 0 ? Math.sqrt(d / r) : Math.sqrt(d));
  }
  return worst;
}

/** ‖a − b‖/‖b‖ over whole arrays. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  let r = 0;
  for (let q = 0; q < b.length; q++) {
    d += (a[q] - b[q]) ** 2;
    r += b[q] ** 2;
  }
  return r > 0 ? Math.sqrt(d / r) : Math.sqrt(d);
}

/**
 * input [N,4] → Gemm(3) → Softplus (not supported by the backward pass) → Gemm(3) → Relu → Gemm head(2): logits;
 * with `nearHead`, Relu and Softplus swap places (then even the last 2 layers meet Softplus).
 */
export function softplusModelBytes(nearHead = false): Uint8Array {
  const W = (o: number, i: number, s: number) => Array.from({ length: o * i }, (_, q) => Math.sin(q * s + 0.1));
  const [first, second] = nearHead ? ['Relu', 'Softplus'] : ['Softplus', 'Relu'];
  return serialize(
    [
      mkNode('Gemm', ['input', 'W1', 'b1'], ['a1'], { transB: 1 }),
      mkNode(first, ['a1'], ['s1']),
      mkNode('Gemm', ['s1', 'W2', 'b2'], ['a2'], { transB: 1 }),
      mkNode(second, ['a2'], ['h']),
      mkNode('Gemm', ['h', 'W', 'b'], ['z'], { transB: 1 }),
    ],
    [
      floatTensor('W1', [3, 4], W(3, 4, 0.7)),
      floatTensor('b1', [3], [0.1, 0.2, 0.3]),
      floatTensor('W2', [3, 3], W(3, 3, 1.3)),
      floatTensor('b2', [3], [0.3, 0.1, 0.2]),
      floatTensor('W', [2, 3], W(2, 3, 2.1)),
      floatTensor('b', [2], [0, 0.5]),
    ],
    [valueInfo('input', TensorProto_DataType.FLOAT, ['batch', 4])],
    [valueInfo('z', TensorProto_DataType.FLOAT, ['batch', 2])],
  );
}

/** The test points (Jacobian, factors, g, z, label) of rows `wanted` of a file, as explain builds them. */
export async function testPoints(deep: DeepEngine, file: string, wanted: number[]): Promise<DeepTestPoint[]> {
  const out: DeepTestPoint[] = [];
  await deep.pass(file, {}, {}, async (b, fw) => {
    for (let r = 0; r < b.count; r++) {
      const t = wanted.indexOf(b.start + r);
      if (t >= 0) out[t] = await deepTestPoint(deep, fw, r, b.labels[r]);
    }
  });
  return out;
}

/** lossChangeIfRemoved of every training row for each test point at each damping: out[damping][test]. */
export async function lossChangesAt(
  deep: DeepEngine,
  rows: DeepRows,
  train: string,
  points: DeepTestPoint[],
  curv: DeepCurvature,
  dampings: number[],
): Promise<Float64Array[][]> {
  const out: Float64Array[][] = dampings.map(() => []);
  for (const p of points) {
    const lc = await deepLossChanges(deep, rows.n, p, curv, rowPass(deep, rows, train, {}, {}), dampings);
    lc.forEach((v, j) => out[j].push(v));
  }
  return out;
}
