/**
 * Faithful on real models: Adam-trained MLP and CNN (test/fixtures/lds) against retraining. The
 * floors below would break if a regression made the default predict retraining worse: the LDS
 * truth and the Feldman–Zhang memorization come from scripts/fixtures/lds.py; the full table of
 * options is printed by scripts/lds-report.ts (README, "Faithful on real models").
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { explain } from '../../src/core';
import {
  gradientDotLossChanges,
  lds,
  LDS_DIR,
  LDS_MODELS,
  memorization,
  optionLossChanges,
  optionMemorized,
  randomLossChanges,
  setup,
  type Setup,
} from '../helpers/lds';

const root = resolve(__dirname, '../..');
/** The LDS of 40 test rows is a mean of noisy Spearman correlations: a default that ties with a fixed damping may sit this far below it. */
const TIE = 0.005;

for (const model of LDS_MODELS) {
  describe(`${model}: the default predicts retraining`, () => {
    let s: Setup;
    let byDefault: number;
    before(async () => {
      s = await setup(model);
      byDefault = lds(s.truth, (await optionLossChanges(s, { damping: 'auto', head: 'shipped' })).lossChange);
    });
    after(async () => s.engine.release());

    it('auto damping takes the L2 the head was trained with from its gradient, and its LDS is at least the fixed-damping head’s and well above the gradient dot product', async () => {
      const { damping } = await optionLossChanges(s, { damping: 'auto', head: 'shipped' });
      // The recipe's weight decay is 1e-3 (coupled L2: the stationary point reveals it).
      assert.ok(Math.abs(damping / s.truth.recipe.weightDecay - 1) < 0.05, `implied λ ${damping}`);
      const fixed = lds(s.truth, (await optionLossChanges(s, { damping: 1e-3, head: 'shipped' })).lossChange);
      const trace = lds(s.truth, (await optionLossChanges(s, { damping: 'trace', head: 'shipped' })).lossChange);
      const dot = lds(s.truth, gradientDotLossChanges(s));
      assert.ok(byDefault >= fixed - TIE, `default ${byDefault.toFixed(3)} vs λ = 1e-3 ${fixed.toFixed(3)}`);
      assert.ok(byDefault >= dot + 0.05, `default ${byDefault.toFixed(3)} vs gradient dot ${dot.toFixed(3)}`);
      assert.ok(
        byDefault > trace,
        `default ${byDefault.toFixed(3)} vs the old default (trace rule) ${trace.toFixed(3)}`,
      );
    });

    it('a random score sits near 0', () => {
      const r = lds(s.truth, randomLossChanges(s, 1));
      assert.ok(Math.abs(r) <= 0.05, `random LDS ${r}`);
    });

    it('the memorized flags at the default are precise against retraining (Feldman–Zhang mem > 0.25)', async () => {
      const m = memorization(s.truth, await optionMemorized(s, { damping: 'auto', head: 'shipped' }));
      assert.ok(m.flagged >= 3, `${m.flagged} rows flagged`);
      assert.ok(m.precision >= 0.8, `precision ${m.precision} (${m.flagged} flagged)`);
    });
  });
}

describe('honest about the head it is given', () => {
  const cli = (args: string[]) =>
    spawnSync(
      process.execPath,
      [join(root, 'dist/cli.js'), 'explain', '--json', '--no-cache', '--no-stability', ...args],
      { encoding: 'utf8' },
    );
  const lds = (f: string) => join(LDS_DIR, f);

  it('warns on a head trained for 2 epochs, with relGradNorm in the JSON; not on the converged one', () => {
    for (const model of LDS_MODELS) {
      const far = cli([
        '--model',
        lds(`${model}/model_2epochs.onnx`),
        '--train',
        lds('train.csv'),
        '--test',
        lds('test.csv'),
        '--test-row',
        '3',
      ]);
      assert.equal(far.status, 0, far.stderr);
      const j = JSON.parse(far.stdout);
      assert.ok(j.head.relGradNorm > 0.5, `${model}: relGradNorm ${j.head.relGradNorm}`);
      assert.equal(j.head.warning, true);
      assert.match(j.head.message, /not at the optimum that influence assumes/);
      const near = JSON.parse(
        cli([
          '--model',
          lds(`${model}/model.onnx`),
          '--train',
          lds('train.csv'),
          '--test',
          lds('test.csv'),
          '--test-row',
          '3',
        ]).stdout,
      );
      assert.ok(
        near.head.relGradNorm < 0.01 && near.head.warning === false,
        `${model}: converged relGradNorm ${near.head.relGradNorm}`,
      );
    }
  });

  it('--head refit scores the head at the optimum of the damped objective and says what changed', async () => {
    const r = await explain({
      model: lds('cnn/model_2epochs.onnx'),
      train: lds('train.csv'),
      test: lds('test.csv'),
      testRow: 3,
      head: 'refit',
      stability: false,
    });
    assert.equal(r.head.mode, 'refit');
    assert.ok(r.head.relGradNorm < 1e-6, `refit relGradNorm ${r.head.relGradNorm}`);
    assert.ok(r.head.refit!.gradNormBefore > 1e3 * r.head.gradNorm);
    assert.ok(r.head.refit!.trainPredictionsChanged > 0 && r.head.refit!.maxLogitChange > 0);
  });
});

describe('stability under damping', () => {
  it('is high where the top rows hold (the digits sample, a head at its optimum) and low where they do not (a 2-epoch CNN)', async () => {
    const sample = (f: string) => join(root, 'samples/digits', f);
    // Of the sample's first 40 test rows, row 14's top 10 hold best over the 100-fold range of damping.
    const high = await explain({
      model: sample('model.onnx'),
      train: sample('train.csv'),
      test: sample('test.csv'),
      testRow: 14,
    });
    assert.equal(high.stability!.stable, true);
    assert.ok(
      Object.values(high.stability!.overlaps)
        .flat()
        .every((j) => j >= 0.6),
      JSON.stringify(high.stability),
    );
    const low = await explain({
      model: join(LDS_DIR, 'cnn/model_2epochs.onnx'),
      train: join(LDS_DIR, 'train.csv'),
      test: join(LDS_DIR, 'test.csv'),
      testRow: 20,
    });
    assert.equal(low.stability!.stable, false);
    assert.ok(Math.min(...Object.values(low.stability!.overlaps).flat()) < 0.3, JSON.stringify(low.stability));
    assert.deepEqual(
      low.stability!.dampings.map((d) => d / low.damping),
      [0.1, 1, 10],
    );
  });
});
