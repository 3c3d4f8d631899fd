/**
 * The exact refit of the head (src/core/refit.ts) against the numpy float64 reference:
 * the Newton optimum, actual leave-one-out refits, the Newton-CG path, and the loss/accuracy
 * evaluation. The reference was computed from float64 features of the float32-stored body, so
 * besides the ORT (float32) features we also rebuild those float64 features here, with a tiny
 * interpreter for the body's ops; with them the refits reproduce numpy to ~1e-9.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CancelledError, InfluenceError } from '../../src/core/errors';
import { Engine, type ForwardRows } from '../../src/core/model/engine';
import { loadModel } from '../../src/core/model/info';
import { tensorValues } from '../../src/core/model/onnx';
import { Curvature } from '../../src/core/curvature/curvature';
import {
  evaluate,
  refitHead,
  refitWithCurvature,
  refitWithout,
  type RefitResult,
  type RefitRows,
} from '../../src/core/refit';
import { headTheta, logits } from '../../src/core/task/head';
import { taskFor } from '../../src/core/task/loss';
import { relErr } from '../helpers/stats';

const root = resolve(__dirname, '../..');
const at = (p: string) => resolve(root, p);
const modelPath = at('samples/digits/model.onnx');
const trainPath = at('samples/digits/train.csv');
const testPath = at('samples/digits/test.csv');

interface Ref {
  l2: number;
  n: number;
  C: number;
  D: number;
  P: number;
  trainLoss: number[];
  trainPredicted: number[];
  tests: { row: number; label: number; actualLossChange: number[] }[];
}
const ref: Ref = JSON.parse(readFileSync(at('test/fixtures/digits/reference.json'), 'utf8'));

/** Reads the integer-valued digits CSV as float64 rows (the last column is the label). */
function readCsv(path: string): Float64Array[] {
  const lines = readFileSync(path, 'utf8').trim().split('\n').slice(1);
  return lines.map((l) => Float64Array.from(l.split(',').slice(0, -1), Number));
}

/**
 * Float64 head inputs h for the given feature rows: evaluates the model's body (Sub, Div,
 * Gemm with transB, Relu — the ops of samples/digits/model.onnx) on its float32-stored
 * initializers in float64, as the numpy reference did.
 */
async function float64Features(path: string, X: Float64Array[], hName: string): Promise<Float64Array> {
  const { proto } = await loadModel(path);
  const graph = proto.graph!;
  const init = new Map(graph.initializer.map((t) => [t.name, { dims: t.dims.map(Number), v: tensorValues(t) }]));
  const m = X.length;
  const env = new Map<string, { cols: number; v: Float64Array }>();
  const x0 = new Float64Array(m * X[0].length);
  X.forEach((r, i) => x0.set(r, i * r.length));
  env.set(graph.input[0].name, { cols: X[0].length, v: x0 });
  for (const node of graph.node) {
    const a = env.get(node.input[0])!;
    const out = new Float64Array(node.opType === 'Gemm' ? m * init.get(node.input[1])!.dims[0] : a.v.length);
    let cols = a.cols;
    if (node.opType === 'Sub' || node.opType === 'Div') {
      const b = init.get(node.input[1])!.v;
      for (let q = 0; q < a.v.length; q++) out[q] = node.opType === 'Sub' ? a.v[q] - b[q % cols] : a.v[q] / b[q % cols];
    } else if (node.opType === 'Relu') {
      for (let q = 0; q < a.v.length; q++) out[q] = Math.max(a.v[q], 0);
    } else if (node.opType === 'Gemm') {
      for (const at of node.attribute) {
        if (at.name === 'transB') assert.equal(Number(at.i), 1);
        else if (at.name === 'alpha' || at.name === 'beta') assert.equal(at.f, 1);
        else assert.fail(`Gemm attribute ${at.name}`);
      }
      const W = init.get(node.input[1])!;
      const b = init.get(node.input[2])!.v;
      const [rowsOut, k] = W.dims;
      for (let i = 0; i < m; i++)
        for (let o = 0; o < rowsOut; o++) {
          let s = 0;
          for (let j = 0; j < k; j++) s += a.v[i * cols + j] * W.v[o * k + j];
          out[i * rowsOut + o] = s + b[o];
        }
      cols = rowsOut;
    } else assert.fail(`op ${node.opType} is not in the test interpreter`);
    env.set(node.output[0], { cols, v: out });
    if (node.output[0] === hName) return out;
  }
  throw new Error(`${hName} not produced`);
}

/** L_t(θ') − L_t(θ) for one test input, without cancellation (lossShift from softmax at θ). */
function lossChange(
  rows: Pick<RefitRows, 'C' | 'D' | 'bias'>,
  theta: Float64Array,
  thetaNew: Float64Array,
  x: Float32Array | Float64Array,
  y: number,
): number {
  const { C } = rows;
  const z = new Float64Array(C);
  const z2 = new Float64Array(C);
  logits(rows, theta, x, 0, z);
  logits(rows, thetaNew, x, 0, z2);
  const m = Math.max(...z);
  const p = z.map((v) => Math.exp(v - m));
  const s = p.reduce((a, b) => a + b, 0);
  for (let c = 0; c < C; c++) p[c] /= s;
  return taskFor(z.length).lossShift(
    p,
    z2.map((v, c) => v - z[c]),
    y,
  );
}

/** The rows whose actual LOO change for a reference test row is largest, plus fixed pseudo-random ones. */
function looRows(actual: number[], top: number, random: number): number[] {
  const order = [...actual.keys()].sort((a, b) => Math.abs(actual[b]) - Math.abs(actual[a]) || a - b);
  const picked = order.slice(0, top);
  let s = 12345;
  while (picked.length < top + random) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const i = s % actual.length;
    if (!picked.includes(i)) picked.push(i);
  }
  return picked;
}

describe('exact refit of the head (digits)', () => {
  let engine: Engine;
  let rows: ForwardRows;
  let rows64: RefitRows;
  let lam: number;
  let shipped: Float64Array;
  let full: RefitResult;
  let full64: RefitResult;
  const t = ref.tests[0];

  before(async () => {
    engine = await Engine.open(modelPath);
    rows = await engine.forward(trainPath, {});
    const { W, b, C, D, hName } = engine.info.head;
    assert.equal(engine.info.l2, ref.l2);
    assert.deepEqual([rows.n, C, D], [ref.n, ref.C, ref.D]);
    lam = engine.info.l2!;
    shipped = headTheta(W, b, C, D);
    assert.equal(shipped.length, ref.P);
    rows64 = { ...rows, h: await float64Features(modelPath, readCsv(trainPath), hName) };
    // The float64 features agree with ORT's to float32 precision.
    assert.ok(relErr(rows.h, rows64.h) < 1e-6);
    full = refitHead(rows, lam, shipped);
    full64 = refitHead(rows64, lam, shipped);
  });
  after(() => engine.release());

  it('headTheta packs W and b row by row', () => {
    const th = headTheta(Float64Array.of(1, 2, 3, 4, 5, 6), Float64Array.of(7, 8), 2, 3);
    assert.deepEqual(Array.from(th), [1, 2, 3, 7, 4, 5, 6, 8]);
    assert.deepEqual(Array.from(headTheta(Float64Array.of(1, 2, 3, 4), null, 2, 2)), [1, 2, 3, 4]);
  });

  it('refit from the shipped head reaches the float64 optimum it was rounded from', () => {
    for (const [what, r] of [
      ['ORT features', full],
      ['float64 features', full64],
    ] as const) {
      assert.ok(r.gradNorm <= 1e-10, `${what}: ‖∇J‖ = ${r.gradNorm}`);
      assert.ok(r.iterations <= 3, `${what}: ${r.iterations} iterations from a warm start`);
      const e = relErr(r.theta, shipped);
      console.log(
        `${what}: ${r.iterations} Newton steps, ‖∇J‖ ${r.gradNorm.toExponential(2)}, ‖θ̂ − θ_shipped‖/‖θ_shipped‖ ${e.toExponential(2)}`,
      );
      assert.ok(e < 1e-6, `${what}: relative distance to the shipped head ${e}`);
    }
    // With the reference's own (float64) features, the optimum rounds to the stored float32 head.
    let mismatched = 0;
    for (let q = 0; q < shipped.length; q++) if (Math.fround(full64.theta[q]) !== shipped[q]) mismatched++;
    console.log(
      `float64 features: ${mismatched}/${shipped.length} entries of θ̂ do not round to the stored float32 value`,
    );
    assert.ok(mismatched <= 3, `${mismatched} entries differ after rounding to float32`);
    assert.ok(full.objective > 0 && Number.isFinite(full.objective));
  });

  it('refit from θ = 0 reaches the same optimum', () => {
    const r = refitHead(rows, lam, new Float64Array(shipped.length));
    assert.ok(r.gradNorm <= 1e-10);
    assert.ok(r.iterations > full.iterations);
    const e = relErr(r.theta, full.theta);
    console.log(
      `from θ = 0: ${r.iterations} Newton steps, relative distance to the warm-started optimum ${e.toExponential(2)}`,
    );
    assert.ok(e < 1e-8, `relative ${e}`);
  });

  it('Newton-CG reaches the same optimum as dense Newton', () => {
    const r = refitHead(rows, lam, new Float64Array(shipped.length), { method: 'newton-cg' });
    assert.equal(r.method, 'newton-cg');
    assert.equal(full.method, 'newton');
    assert.ok(r.cgIterations > 0);
    assert.ok(r.gradNorm <= 1e-10, `‖∇J‖ = ${r.gradNorm}`);
    const e = relErr(r.theta, full.theta);
    console.log(
      `Newton-CG from θ = 0: ${r.iterations} Newton steps, ${r.cgIterations} CG iterations, relative distance to dense ${e.toExponential(2)}`,
    );
    assert.ok(e < 1e-8, `relative ${e}`);
  });

  it('leave-one-out refits reproduce numpy’s actual loss changes', async () => {
    const picked = looRows(t.actualLossChange, 4, 4);
    const xt = (await engine.forwardRow(testPath, t.row, {})).h;
    const xt64 = await float64Features(modelPath, [readCsv(testPath)[t.row]], engine.info.head.hName);
    let worst64 = 0;
    let worst32 = 0;
    for (const [n, i] of picked.entries()) {
      const want = t.actualLossChange[i];
      // float64 features, as in the reference: exact to the tolerance asked of an exact refit.
      const r64 = refitWithout(rows64, lam, full64.theta, [i]);
      assert.ok(r64.gradNorm <= 1e-10);
      const got64 = lossChange(rows64, full64.theta, r64.theta, xt64, t.label);
      const err64 = Math.abs(got64 - want);
      assert.ok(err64 <= 1e-6 * Math.abs(want) || err64 <= 1e-12, `row ${i} (float64 features): ${got64} vs ${want}`);
      worst64 = Math.max(worst64, err64 / Math.abs(want));
      let note = '';
      if (n % 4 < 2) {
        // ORT's float32 features (2 top and 2 random rows, to keep the test short): the same up to
        // the float32 rounding of h (~1e-7 relative), which the LOO change amplifies to a few 1e-6.
        const r32 = refitWithout(rows, lam, full.theta, [i]);
        assert.ok(r32.gradNorm <= 1e-10);
        const got32 = lossChange(rows, full.theta, r32.theta, xt, t.label);
        const err32 = Math.abs(got32 - want);
        assert.ok(err32 <= 2e-5 * Math.abs(want) + 1e-10, `row ${i} (ORT features): ${got32} vs ${want}`);
        worst32 = Math.max(worst32, err32 / Math.abs(want));
        note = `; ORT features ${r32.iterations} steps, rel err ${(err32 / Math.abs(want)).toExponential(2)}`;
      }
      console.log(
        `LOO row ${i}: actual ${want.toExponential(4)}; float64 features ${r64.iterations} steps, rel err ${(err64 / Math.abs(want)).toExponential(2)}${note}`,
      );
    }
    console.log(
      `LOO worst relative error: float64 features ${worst64.toExponential(2)}, ORT features ${worst32.toExponential(2)}`,
    );
  });

  it('the fast path’s refit (curvature-directed steps, ORT gradients) reaches the same optimum and leave-one-out refits', async () => {
    // Forced onto the fast path, as a large problem would be.
    const curv = await Curvature.create(rows, lam, { path: 'fast' });
    try {
      assert.ok(curv.fast);
      const f = await refitWithCurvature(rows, lam, shipped, curv);
      assert.ok(f.gradNorm <= 1e-10, `‖∇J‖ = ${f.gradNorm}`);
      assert.ok(relErr(f.theta, full.theta) < 1e-8, `full: relative ${relErr(f.theta, full.theta)}`);
      for (const i of looRows(t.actualLossChange, 2, 2)) {
        const fast = await refitWithCurvature(rows, lam, f.theta, curv, { remove: [i] });
        const js = refitWithout(rows, lam, full.theta, [i]);
        assert.ok(
          fast.gradNorm <= 1e-10 && fast.iterations <= 15,
          `row ${i}: ‖∇J‖ ${fast.gradNorm} after ${fast.iterations} steps`,
        );
        const moved = relErr(js.theta, full.theta);
        assert.ok(
          relErr(fast.theta, js.theta) < 1e-6 * moved + 1e-12,
          `row ${i}: ${relErr(fast.theta, js.theta)} of a move of ${moved}`,
        );
      }
    } finally {
      await curv.release();
    }
  });

  it('evaluate() gives the reference train loss and accuracy at the shipped head', () => {
    const ev = evaluate(rows, shipped);
    const meanRef = ref.trainLoss.reduce((a, b) => a + b, 0) / ref.n;
    assert.ok(Math.abs(ev.meanLoss - meanRef) <= 1e-6 * meanRef, `mean loss ${ev.meanLoss} vs ${meanRef}`);
    assert.ok(relErr(ev.loss, ref.trainLoss) < 1e-5);
    assert.deepEqual(Array.from(ev.predicted), ref.trainPredicted);
    let correct = 0;
    for (let i = 0; i < ref.n; i++) if (ref.trainPredicted[i] === rows.labels[i]) correct++;
    assert.equal(ev.accuracy, correct / ref.n);
    // The loss forward.ts computes from ORT's float32 logits agrees to float32 precision.
    assert.ok(relErr(ev.loss, rows.loss) < 1e-5);
  });

  it('excluded rows leave the objective: same optimum as physically removing them', () => {
    const k = looRows(t.actualLossChange, 0, 1)[0];
    const include = new Uint8Array(rows.n).fill(1);
    include[k] = 0;
    const masked = refitHead(rows, lam, full.theta, { include });
    const without = refitWithout(rows, lam, full.theta, [k]);
    assert.ok(relErr(masked.theta, without.theta) < 1e-14);
    const moved = relErr(without.theta, full.theta);
    assert.ok(moved > 1e-5, `removing row ${k} moves θ by ${moved}`);
    // Physically drop row k: (1/n) Σ_{i≠k} + λ/2‖θ‖² has the optimum of (1/(n−1)) Σ_{i≠k} + (λ n/(n−1))/2 ‖θ‖².
    const { n, D } = rows;
    const h = new Float32Array((n - 1) * D);
    h.set(rows.h.subarray(0, k * D));
    h.set(rows.h.subarray((k + 1) * D), k * D);
    const labels = Int32Array.from([...rows.labels.subarray(0, k), ...rows.labels.subarray(k + 1)]);
    const dropped = refitHead({ n: n - 1, C: rows.C, D, bias: rows.bias, h, labels }, (lam * n) / (n - 1), full.theta);
    const e = relErr(dropped.theta, without.theta);
    assert.ok(e < 1e-9, `relative ${e}`);
  });

  it('cancellation and non-convergence are reported', () => {
    const ac = new AbortController();
    ac.abort();
    assert.throws(() => refitHead(rows, lam, shipped, { signal: ac.signal }), CancelledError);
    assert.throws(
      () => refitWithout(rows, lam, full.theta, [0], { signal: ac.signal, method: 'newton-cg' }),
      CancelledError,
    );
    assert.throws(
      () => refitHead(rows, lam, new Float64Array(shipped.length), { maxIter: 2 }),
      (e: unknown) =>
        e instanceof InfluenceError &&
        e.code === 'BAD_OPTION' &&
        /did not converge/.test(e.message) &&
        /--damping/.test(e.message),
    );
    assert.throws(
      () => refitHead(rows, 0, shipped),
      (e: unknown) => e instanceof InfluenceError && e.code === 'BAD_OPTION',
    );
    assert.throws(
      () => refitWithout(rows, lam, shipped, [rows.n]),
      (e: unknown) => e instanceof InfluenceError && e.code === 'ROW_OUT_OF_RANGE',
    );
  });
});

describe('exact refit on synthetic rows', () => {
  /** Deterministic uniform(−1, 1) numbers. */
  function lcg(seed: number): () => number {
    let s = seed;
    return () => {
      s = (s * 1103515245 + 12345) % 2147483648;
      return (s / 2147483648) * 2 - 1;
    };
  }

  /** J from evaluate()'s per-row losses, independently of the refit's own gradient code. */
  function objective(rows: RefitRows, lam: number, theta: Float64Array, include: Uint8Array): number {
    const { loss } = evaluate(rows, theta);
    let s = 0;
    for (let i = 0; i < rows.n; i++) if (include[i]) s += loss[i];
    return s / rows.n + (lam / 2) * theta.reduce((a, v) => a + v * v, 0);
  }

  for (const bias of [false, true]) {
    it(`the optimum is stationary for J itself (finite differences), ${bias ? 'with' : 'without'} a bias`, () => {
      const r = lcg(bias ? 7 : 3);
      const n = 80;
      const C = 3;
      const D = 4;
      const h = Float32Array.from({ length: n * D }, () => 3 * r());
      const labels = Int32Array.from({ length: n }, () => Math.floor(((r() + 1) / 2) * C) % C);
      const rows: RefitRows = { n, C, D, bias, h, labels };
      const P = C * (D + (bias ? 1 : 0));
      const lam = 1e-3;
      const include = new Uint8Array(n).fill(1);
      for (const i of [3, 17, 40]) include[i] = 0;
      const start = Float64Array.from({ length: P }, () => r());
      const dense = refitHead(rows, lam, start, { include });
      const cg = refitHead(rows, lam, start, { include, method: 'newton-cg' });
      assert.equal(dense.method, 'newton');
      assert.ok(dense.gradNorm <= 1e-10 && cg.gradNorm <= 1e-10);
      assert.ok(relErr(cg.theta, dense.theta) < 1e-8);
      assert.ok(Math.abs(dense.objective - objective(rows, lam, dense.theta, include)) <= 1e-13 * dense.objective);
      const eps = 1e-5;
      const slope = (theta: Float64Array, v: Float64Array) => {
        const plus = theta.map((x, q) => x + eps * v[q]);
        const minus = theta.map((x, q) => x - eps * v[q]);
        return (objective(rows, lam, plus, include) - objective(rows, lam, minus, include)) / (2 * eps);
      };
      for (let k = 0; k < 5; k++) {
        const v = Float64Array.from({ length: P }, () => r());
        assert.ok(
          Math.abs(slope(dense.theta, v)) < 1e-8,
          `directional derivative ${slope(dense.theta, v)} at the optimum`,
        );
        assert.ok(Math.abs(slope(start, v)) > 1e-4, 'the start is not stationary');
      }
      // Including the excluded rows changes the optimum.
      const all = refitHead(rows, lam, dense.theta);
      assert.ok(relErr(all.theta, dense.theta) > 1e-4);
    });
  }
});
