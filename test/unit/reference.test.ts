/**
 * The engine against independent float64 numbers computed by numpy in
 * scripts/fixtures/make_fixtures.py (explicit Hessian, exact solves, and actual
 * leave-one-out refits of the head to its exact optimum).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { explain } from '../../src/core/explain';
import type { ExplainResult } from '../../src/core/explainShapes';
import { Engine } from '../../src/core/model/engine';
import { pearson, relErr, slope } from '../helpers/stats';

const root = resolve(__dirname, '../..');
const at = (p: string) => resolve(root, p);

interface RefTest {
  row: number;
  label: number;
  predicted: number;
  probabilities: number[];
  loss: number;
  margin: number;
  runnerUp: number;
  influence: number[];
  lossChangeIfRemoved: number[];
  lossChangeIfRemovedNewton: number[];
  classificationInfluence: number[];
  flip: { rows: number[]; newClass: number } | null;
  actualLossChange: number[];
}
interface Ref {
  l2: number;
  n: number;
  P: number;
  selfInfluence: number[];
  trainLoss: number[];
  trainPredicted: number[];
  tests: RefTest[];
}
const ref: Ref = JSON.parse(readFileSync(at('test/fixtures/digits/reference.json'), 'utf8'));
const train = at('samples/digits/train.csv');
const test = at('samples/digits/test.csv');

const TOL = 1e-5;

function checkAgainstReference(r: ExplainResult, t: RefTest): void {
  const s = r.scores;
  const what = `test row ${t.row}`;
  assert.equal(r.damping, ref.l2);
  assert.equal(r.test.label, t.label, what);
  assert.equal(r.test.predicted, t.predicted, what);
  assert.equal(s.runnerUp, t.runnerUp, what);
  assert.ok(relErr(r.test.probabilities, t.probabilities) < TOL, what);
  assert.ok(
    Math.abs(r.test.loss - t.loss) <= TOL * Math.max(t.loss, 1e-3),
    `${what}: loss ${r.test.loss} vs ${t.loss}`,
  );
  assert.ok(Math.abs(s.margin - t.margin) <= TOL * Math.max(Math.abs(t.margin), 1), `${what}: margin`);
  const checks: [string, ArrayLike<number>, ArrayLike<number>][] = [
    ['influence', s.influence, t.influence],
    ['lossChangeIfRemoved', s.lossChangeIfRemoved, t.lossChangeIfRemoved],
    ['lossChangeIfRemovedNewton', s.lossChangeIfRemovedNewton, t.lossChangeIfRemovedNewton],
    ['classificationInfluence', s.classificationInfluence, t.classificationInfluence],
    ['selfInfluence', s.selfInfluence, ref.selfInfluence],
    ['relativeInfluence', s.relativeInfluence, t.influence.map((v, i) => v / Math.sqrt(ref.selfInfluence[i]))],
    ['train loss', r.rows.loss, ref.trainLoss],
  ];
  for (const [name, got, want] of checks) {
    const e = relErr(got, want);
    assert.ok(e < TOL, `${what}: ${name} relative error ${e.toExponential(2)}`);
  }
  assert.deepEqual(Array.from(r.rows.predicted), ref.trainPredicted);
  assert.deepEqual(s.flip, t.flip, `${what}: flip set`);
}

const variants = [
  { file: 'samples/digits/model.onnx', what: 'Sub/Div pre-processing, Gemm head, trailing Softmax' },
  { file: 'test/fixtures/digits/logits_matmul.onnx', what: 'MatMul + Add head emitting logits' },
  { file: 'test/fixtures/digits/cnn_logsoftmax.onnx', what: '[N,1,8,8] input, trailing LogSoftmax' },
];

for (const v of variants) {
  describe(`digits reference: ${v.what}`, () => {
    let engine: Engine;
    before(async () => {
      engine = await Engine.open(at(v.file));
    });
    after(() => engine.release());
    for (const t of ref.tests) {
      it(`matches numpy float64 for test row ${t.row}`, async () => {
        const r = await explain({ model: at(v.file), train, test, testRow: t.row }, engine);
        assert.equal(r.scores.solver, 'cholesky');
        assert.equal(r.scores.selfInfluenceMethod, 'exact');
        checkAgainstReference(r, t);
      });
    }
  });
}

describe('digits reference: other paths', () => {
  it('conjugate gradients with factored Hessian-vector products match too', async () => {
    for (const t of ref.tests.slice(0, 2)) {
      const r = await explain({ model: at('samples/digits/model.onnx'), train, test, testRow: t.row, solver: 'cg' });
      assert.equal(r.scores.solver, 'cg');
      assert.ok(r.scores.cgIterations! > 0);
      checkAgainstReference(r, t);
    }
  });

  it('EK-FAC self-influence tracks the exact values', async () => {
    const t = ref.tests[0];
    const r = await explain({
      model: at('samples/digits/model.onnx'),
      train,
      test,
      testRow: t.row,
      selfInfluence: 'ekfac',
    });
    assert.equal(r.scores.selfInfluenceMethod, 'ekfac');
    // An approximation: the ranking must agree well, the values need not be exact.
    const c = pearson(r.scores.selfInfluence, ref.selfInfluence);
    assert.ok(c > 0.9, `Pearson ${c}`);
    assert.ok(relErr(r.scores.influence, t.influence) < TOL, 'influence itself stays exact');
  });

  it('the JSON from the CLI carries the same numbers', () => {
    const t = ref.tests[0];
    const out = spawnSync(
      process.execPath,
      [
        at('dist/cli.js'),
        'explain',
        '--model',
        at('samples/digits/model.onnx'),
        '--train',
        train,
        '--test',
        test,
        '--test-row',
        String(t.row),
        '--json',
        '--no-cache',
      ],
      { encoding: 'utf8' },
    );
    assert.equal(out.status, 0, out.stderr);
    const j = JSON.parse(out.stdout);
    assert.ok(
      relErr(
        j.scores.map((s: { influence: number }) => s.influence),
        t.influence,
      ) < TOL,
    );
    assert.ok(
      relErr(
        j.scores.map((s: { lossChangeIfRemovedNewton: number }) => s.lossChangeIfRemovedNewton),
        t.lossChangeIfRemovedNewton,
      ) < TOL,
    );
    assert.equal(j.model.parameters, ref.P);
    assert.deepEqual(j.flip, t.flip);
  });

  it('auto damping without metadata recovers the L2 the head was fit with from its gradient; trace gives the trace rule', async () => {
    const model = at('test/fixtures/digits/logits_nometa.onnx');
    const r = await explain({ model, train, test, testRow: ref.tests[0].row, stability: false });
    assert.match(r.dampingRule, /implied by the head's gradient/);
    assert.ok(Math.abs(r.damping - ref.l2) < 1e-4 * ref.l2, `implied ${r.damping} vs the fit's ${ref.l2}`);
    assert.ok(r.impliedL2!.residual < 1e-4, `residual ${r.impliedL2!.residual}`);
    const tr = await explain({ model, train, test, testRow: ref.tests[0].row, damping: 'trace', stability: false });
    assert.match(tr.dampingRule, /trace/);
    assert.ok(tr.damping > 0 && tr.damping < ref.l2 / 10);
  });
});

describe('against actual leave-one-out refits', () => {
  const firstSlopes: number[] = [];
  const newtonSlopes: number[] = [];
  for (const t of ref.tests) {
    it(`test row ${t.row}: first-order and Newton estimates track true LOO changes`, async () => {
      const r = await explain({ model: at('samples/digits/model.onnx'), train, test, testRow: t.row });
      const first = r.scores.lossChangeIfRemoved;
      const newton = r.scores.lossChangeIfRemovedNewton;
      const actual = t.actualLossChange;
      const c1 = pearson(first, actual);
      const s1 = slope(first, actual);
      const c2 = pearson(newton, actual);
      const s2 = slope(newton, actual);
      assert.ok(c1 >= 0.98, `first-order Pearson ${c1}`);
      assert.ok(s1 >= 0.8 && s1 <= 2.5, `first-order slope ${s1}`);
      console.log(
        `row ${t.row}: first-order Pearson ${c1.toFixed(4)} slope ${s1.toFixed(3)}; Newton Pearson ${c2.toFixed(4)} slope ${s2.toFixed(3)}`,
      );
      assert.ok(c2 >= 0.98, `Newton Pearson ${c2}`);
      assert.ok(Math.abs(s2 - 1) < 0.1, `Newton slope ${s2}`);
      firstSlopes.push(s1);
      newtonSlopes.push(s2);
    });
  }
  it('the leverage correction brings the mean slope near 1', () => {
    const meanGap = (v: number[]) => v.reduce((a, b) => a + Math.abs(b - 1), 0) / v.length;
    assert.equal(newtonSlopes.length, ref.tests.length);
    console.log(
      `mean |slope − 1|: first-order ${meanGap(firstSlopes).toFixed(3)}, Newton ${meanGap(newtonSlopes).toFixed(3)}`,
    );
    assert.ok(meanGap(newtonSlopes) < meanGap(firstSlopes), 'the correction brings the slopes nearer 1 on average');
  });
});
