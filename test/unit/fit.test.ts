/** task/fit.ts: the mean-loss gradient, its value at θ = 0, and the L2 a stationary head implies. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { impliedL2, meanLossGradient, stationarity, zeroHeadGradient } from '../../src/core/task/fit';
import { headDims, rowInput, type HeadRows } from '../../src/core/task/head';
import { lossAndSignal, taskFor } from '../../src/core/task/loss';
import { rng } from '../helpers/models';
import { relErr } from '../helpers/stats';

function randomRows(n: number, C: number, D: number, seed: number): HeadRows {
  const u = rng(seed);
  const K = C === 2 ? 1 : C;
  const h = Float32Array.from({ length: n * D }, () => u() * 2);
  const labels = Int32Array.from({ length: n }, () => Math.floor(((u() + 1) / 2) * C) % C);
  const z = Float64Array.from({ length: n * K }, () => u() * 3);
  const g = new Float64Array(n * K);
  lossAndSignal(taskFor(K), z, labels, n, new Float64Array(n), g);
  return { n, C: K, D, bias: true, h, g, labels };
}

/** (1/n) Σ g_i ⊗ x̃_i written out. */
function bruteGradient(rows: HeadRows, g: Float64Array): Float64Array {
  const { Dt } = headDims(rows);
  const G = new Float64Array(rows.C * Dt);
  const x = new Float64Array(Dt);
  for (let i = 0; i < rows.n; i++) {
    rowInput(rows, i, x);
    for (let c = 0; c < rows.C; c++) for (let j = 0; j < Dt; j++) G[c * Dt + j] += (g[i * rows.C + c] * x[j]) / rows.n;
  }
  return G;
}

describe('head fit', () => {
  for (const classes of [5, 2]) {
    it(`${classes === 2 ? 'binary' : 'softmax'}: the gradient, and at θ = 0 from the label sums alone`, async () => {
      const rows = randomRows(60, classes, 4, 3 + classes);
      assert.ok(relErr(await meanLossGradient(rows), bruteGradient(rows, rows.g)) < 1e-14);
      const g0 = new Float64Array(rows.n * rows.C);
      lossAndSignal(
        taskFor(rows.C),
        new Float64Array(rows.n * rows.C),
        rows.labels,
        rows.n,
        new Float64Array(rows.n),
        g0,
      );
      assert.ok(relErr(zeroHeadGradient(rows), bruteGradient(rows, g0)) < 1e-14);
    });
  }

  it('a head at the optimum of (1/n)ΣL + (λ/2)‖θ‖² reveals λ, with zero residual; stationarity is relative to θ = 0', () => {
    const G = Float64Array.from([0.3, -0.2, 0.5, 0.1]);
    const lambda = 0.02;
    const theta = G.map((v) => -v / lambda);
    const fit = impliedL2(G, theta);
    assert.ok(Math.abs(fit.lambda - lambda) < 1e-15 && fit.residual < 1e-15);
    const off = impliedL2(G, Float64Array.from([1, 0, 0, 0]));
    assert.ok(off.residual > 0.5, 'a head that is not stationary for any λ');
    const s = stationarity(
      G,
      G.map((v) => 2 * v),
      theta,
      lambda,
      0.5,
    );
    assert.ok(s.gradNorm < 1e-15 && s.relGradNorm < 1e-15 && !s.warning);
    const far = stationarity(
      G,
      G.map((v) => 2 * v),
      new Float64Array(4),
      lambda,
      0.5,
    );
    assert.ok(Math.abs(far.relGradNorm - 0.5) < 1e-15 && far.warning);
    assert.ok(Math.abs(far.gradNorm - 0.5 * Math.hypot(...G)) < 1e-15, 'on θ: the logits’ factor s');
  });
});
