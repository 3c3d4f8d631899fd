/**
 * Models exported the ordinary way (fixed batch sizes, two outputs, float64, temperature, opset 9
 * and 10, single-logit binary heads) against the float64 numpy references that
 * scripts/fixtures/exports.py computed for each model's actual output.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';
import { audit, explain, type ExplainResult } from '../../src/core';
import { pearson, relErr } from '../helpers/stats';

const dir = resolve(__dirname, '../fixtures/exports');
const at = (p: string) => resolve(dir, p);

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
  actualLossChange?: number[];
}
interface Case {
  name: string;
  description: string;
  model: string;
  train: string;
  test: string;
  l2: number;
  l2From: 'metadata' | '--damping';
  task: 'softmax' | 'binary';
  output: string;
  scale: number;
  selfInfluence: number[];
  trainLoss: number[];
  trainPredicted: number[];
  tests: RefTest[];
  classNames?: string[];
}
interface WrongOrder {
  name: string;
  model: string;
  train: string;
  test: string;
  flags: string[];
  passedClasses: string[];
  bestClasses: string[];
  trainAccuracyPassed: number;
  trainAccuracyBest: number;
}
const manifest: { cases: Case[]; wrongClassOrder: WrongOrder[] } = JSON.parse(
  readFileSync(at('manifest.json'), 'utf8'),
);
const TOL = 1e-5;

/** Every score within TOL (norm-wise) of the reference, and the same discrete answers. */
export function checkCase(c: Case, t: RefTest, r: ExplainResult): void {
  const what = `${c.name}, test row ${t.row}`;
  const s = r.scores;
  assert.ok(Math.abs(r.damping - c.l2) <= 1e-12 * c.l2, `${what}: damping ${r.damping}`);
  assert.equal(r.test.label, t.label, what);
  assert.equal(r.test.predicted, t.predicted, what);
  assert.equal(s.runnerUp, t.runnerUp, what);
  assert.ok(relErr(r.test.probabilities, t.probabilities) < TOL, `${what}: probabilities`);
  assert.ok(
    Math.abs(r.test.loss - t.loss) <= TOL * Math.max(t.loss, 1e-3),
    `${what}: loss ${r.test.loss} vs ${t.loss}`,
  );
  assert.ok(
    Math.abs(s.margin - t.margin) <= TOL * Math.max(Math.abs(t.margin), 1),
    `${what}: margin ${s.margin} vs ${t.margin}`,
  );
  const checks: [string, ArrayLike<number>, ArrayLike<number>][] = [
    ['influence', s.influence, t.influence],
    ['lossChangeIfRemoved', s.lossChangeIfRemoved, t.lossChangeIfRemoved],
    ['lossChangeIfRemovedNewton', s.lossChangeIfRemovedNewton, t.lossChangeIfRemovedNewton],
    ['classificationInfluence', s.classificationInfluence, t.classificationInfluence],
    ['selfInfluence', s.selfInfluence, c.selfInfluence],
    ['train loss', r.rows.loss, c.trainLoss],
  ];
  for (const [name, got, want] of checks) {
    const e = relErr(got, want);
    assert.ok(e < TOL, `${what}: ${name} relative error ${e.toExponential(2)}`);
  }
  assert.deepEqual(Array.from(r.rows.predicted), c.trainPredicted, `${what}: training predictions`);
  assert.deepEqual(s.flip, t.flip, `${what}: flip set`);
}

const modelCases = manifest.cases.filter((c) => !c.name.startsWith('form_'));

describe('real exports match their float64 references', () => {
  for (const c of modelCases) {
    it(`${c.name}: ${c.description}`, async () => {
      for (const t of c.tests) {
        const r = await explain({
          model: at(c.model),
          train: at(c.train),
          test: at(c.test),
          testRow: t.row,
          damping: c.l2From === '--damping' ? c.l2 : 'auto',
        });
        assert.equal(r.model.outputName, c.output, `${c.name}: output chosen`);
        assert.equal(r.model.task, c.task, `${c.name}: task`);
        assert.ok(
          Math.abs(r.model.logitScale - c.scale) <= 1e-7 * c.scale,
          `${c.name}: logit scale ${r.model.logitScale}`,
        );
        checkCase(c, t, r);
      }
    });
  }

  it('binary head: the leave-one-out estimates follow actual refits (Pearson ≥ 0.98)', async () => {
    const c = modelCases.find((x) => x.name === 'binary_logit')!;
    for (const t of c.tests) {
      const r = await explain({ model: at(c.model), train: at(c.train), test: at(c.test), testRow: t.row });
      const p = pearson(r.scores.lossChangeIfRemoved, t.actualLossChange!);
      const pn = pearson(r.scores.lossChangeIfRemovedNewton, t.actualLossChange!);
      assert.ok(p >= 0.98 && pn >= 0.98, `row ${t.row}: Pearson ${p}, Newton ${pn}`);
    }
  });
});

describe('data files as pandas and sklearn write them: no flags needed', () => {
  const formCases = manifest.cases.filter((c) => c.name.startsWith('form_'));
  it('has every form', () => {
    assert.deepEqual(formCases.map((c) => c.name).sort(), [
      'form_id_column',
      'form_pandas_index',
      'form_string_labels',
      'form_target',
      'form_unnamed_index',
      'form_with_id',
    ]);
  });
  for (const c of formCases) {
    it(`${c.name}: ${c.description}`, async () => {
      for (const t of c.tests) {
        const r = await explain({ model: at(c.model), train: at(c.train), test: at(c.test), testRow: t.row });
        checkCase(c, t, r);
        if (c.classNames) assert.deepEqual(r.classes, c.classNames, `${c.name}: classes`);
        // Every decision is said: the model's notes plus one for the data rule that applied.
        assert.ok(
          r.notes.some((n) => n.startsWith(`${c.train}: `)),
          `${c.name}: a note on the training file: ${r.notes.join(' | ')}`,
        );
        assert.deepEqual(r.warnings, [], `${c.name}: no warnings`);
      }
    });
  }

  it('form_target: the guessed label column is reported, and the test file reads it too', async () => {
    const c = formCases.find((x) => x.name === 'form_target')!;
    const r = await explain({ model: at(c.model), train: at(c.train), test: at(c.test), testRow: c.tests[0].row });
    assert.equal(r.labelColumn, 'target');
    assert.equal(r.test.labelled, true);
    assert.equal(r.tables.test.labelColumn, 'target');
    assert.match(r.notes.join('\n'), /the label column is "target"/);
  });

  for (const w of manifest.wrongClassOrder) {
    it(`${w.name}: --classes in the wrong order is flagged, naming the order that fits`, async () => {
      assert.deepEqual(w.flags, ['--classes', w.passedClasses.join(',')]);
      const r = await explain({
        model: at(w.model),
        train: at(w.train),
        test: at(w.test),
        testRow: 0,
        table: { classes: w.passedClasses },
      });
      const order = r.warnings.find((x) => x.code === 'CLASS_ORDER');
      assert.ok(order && order.code === 'CLASS_ORDER', `warnings: ${JSON.stringify(r.warnings)}`);
      assert.deepEqual(order.bestClasses, w.bestClasses);
      assert.ok(Math.abs(order.accuracy - w.trainAccuracyPassed) < 1e-12, `accuracy ${order.accuracy}`);
      assert.ok(Math.abs(order.bestAccuracy - w.trainAccuracyBest) < 1e-12, `best accuracy ${order.bestAccuracy}`);
      assert.match(order.message, new RegExp(`--classes ${w.bestClasses.join(',')}`));
      const a = await audit({
        model: at(w.model),
        train: at(w.train),
        heldOut: null,
        table: { classes: w.passedClasses },
        damping: 'auto',
        tau: 0,
      });
      assert.deepEqual(
        a.warnings.map((x) => x.code),
        ['CLASS_ORDER'],
      );
      assert.deepEqual((a.warnings[0] as { bestClasses: string[] }).bestClasses, w.bestClasses);
    });
  }

  it('the order that fits gives no warning', async () => {
    const w = manifest.wrongClassOrder[0];
    const r = await explain({
      model: at(w.model),
      train: at(w.train),
      test: at(w.test),
      testRow: 0,
      table: { classes: w.bestClasses },
    });
    assert.deepEqual(r.warnings, []);
  });
});
