/**
 * Influence over the last 2 layers of the LDS MLP and CNN (test/fixtures/lds) against the float64
 * autograd references of test/fixtures/deep: the exact damped GGN's lossChangeIfRemoved and
 * self-influence at λ = 1e-3 and 1e-2 (the MLP's rows sit on no Relu kink that onnxruntime takes
 * otherwise; the CNN's row 536 does, so its full reference is matched in LDS and its kink-free
 * reference to 1e-5), and EK-FAC per layer (equal to the head's own EK-FAC on the head).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Ekfac } from '../../src/core/curvature/ekfac';
import { denseHessian } from '../../src/core/curvature/exact';
import { buildModel, rng } from '../helpers/models';
import { ExactGgn, type DeepCurvature } from '../../src/core/curvature/ggn';
import { LayerEkfac } from '../../src/core/curvature/layerEkfac';
import { readDeepRows, rowGradients, signals, type DeepRows } from '../../src/core/deepRows';
import { dot } from '../../src/core/linalg';
import { DeepEngine } from '../../src/core/model/deep';
import { Engine } from '../../src/core/model/engine';
import type { LayerSpec } from '../../src/core/model/layers';
import { deepExplainScores, deepLossChanges, type DeepTestPoint } from '../../src/core/scores/deep';
import { taskFor } from '../../src/core/task/loss';
import { DEEP_DIR, decode, ldsReference, manifest, relError } from '../helpers/deep';
import { lds, loadTruth } from '../helpers/lds';
import { pearson } from '../helpers/stats';

const TOL = 1e-5;
const dir = mkdtempSync(join(tmpdir(), 'il-deep-ggn-'));
const open: { eng: Engine; deep: DeepEngine }[] = [];
after(async () => {
  for (const o of open) {
    await o.deep.release();
    await o.eng.release();
  }
});

async function deepEngine(model: string, spec: LayerSpec): Promise<DeepEngine> {
  const eng = await Engine.open(model);
  const deep = await DeepEngine.open(eng, spec);
  open.push({ eng, deep });
  return deep;
}

/** The test points (Jacobian, g, z, label) of rows of a file. */
async function testPoints(deep: DeepEngine, file: string, wanted: number[]): Promise<DeepTestPoint[]> {
  const K = deep.K;
  const eye = new Float64Array(K * K);
  for (let c = 0; c < K; c++) eye[c * K + c] = 1;
  const out: DeepTestPoint[] = [];
  await deep.pass(file, {}, {}, async (b, fw) => {
    const { g } = signals(deep, fw.z, b.labels, b.count);
    for (let r = 0; r < b.count; r++) {
      const t = wanted.indexOf(b.start + r);
      if (t >= 0)
        out[t] = {
          J: await deep.gradients(fw, r, 1, eye, K),
          g: g.slice(r * K, (r + 1) * K),
          z: fw.z.slice(r * K, (r + 1) * K),
          label: b.labels[r],
        };
    }
  });
  return out;
}

/** lossChangeIfRemoved of every training row for each test point, T×n. */
async function lossChanges(
  deep: DeepEngine,
  rows: DeepRows,
  train: string,
  points: DeepTestPoint[],
  curv: DeepCurvature,
): Promise<Float64Array[]> {
  const out: Float64Array[] = [];
  for (const p of points)
    out.push(await deepLossChanges(rows.n, deep.K, p, curv, (f) => rowGradients(deep, rows, train, {}, {}, f)));
  return out;
}

function worstRowError(got: Float64Array[], ref: Float64Array, n: number): number {
  return Math.max(...got.map((lc, t) => relError(lc, ref.subarray(t * n, (t + 1) * n))));
}

/** train.csv without some rows, as a file. */
function without(train: string, rows: number[], name: string): string {
  const lines = readFileSync(train, 'utf8').split('\n');
  const drop = new Set(rows);
  const p = join(dir, name);
  writeFileSync(p, [lines[0], ...lines.slice(1).filter((l, i) => l !== '' && !drop.has(i))].join('\n') + '\n');
  return p;
}

describe('exact GGN influence over the last 2 layers', () => {
  it('LDS MLP: lossChangeIfRemoved (40 test rows) and self-influence at λ = 1e-3 and 1e-2 within 1e-5', async () => {
    const ref = ldsReference('mlp', 'last2');
    const deep = await deepEngine(ref.model, 2);
    const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: true });
    const points = await testPoints(deep, ref.test, ref.testRows);
    for (const lambda of ref.lambdas) {
      const curv = await ExactGgn.create(rows.H0!, deep.P, lambda);
      try {
        const got = await lossChanges(deep, rows, ref.train, points, curv);
        const e = worstRowError(got, decode(ref.lossChangeIfRemoved[String(lambda)]), rows.n);
        assert.ok(e <= TOL, `λ ${lambda}: lossChangeIfRemoved ${e.toExponential(2)}`);
        const s = await deepExplainScores(rows.n, taskFor(deep.K), points[0], curv, (f) =>
          rowGradients(deep, rows, ref.train, {}, {}, f),
        );
        const es = relError(s.selfInfluence, decode(ref.selfInfluence[String(lambda)]));
        assert.ok(es <= TOL, `λ ${lambda}: selfInfluence ${es.toExponential(2)}`);
        assert.ok(relError(s.lossChangeIfRemoved, got[0]) <= 1e-12);
        for (let i = 0; i < rows.n; i++) assert.ok(Number.isNaN(s.lossChangeIfRemovedNewton[i]));
        assert.ok(Math.abs(lds(loadTruth('mlp'), got) - ref.lds.lambdas[String(lambda)]) <= 1e-3);
      } finally {
        await curv.release();
      }
    }
  });

  it('LDS CNN: the full reference at λ = 1e-3 and 1e-2, matched in LDS (onnxruntime takes another Relu mask at row 536)', async () => {
    const ref = ldsReference('cnn', 'last2');
    const deep = await deepEngine(ref.model, 2);
    const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: true });
    const points = await testPoints(deep, ref.test, ref.testRows);
    for (const lambda of ref.lambdas) {
      const curv = await ExactGgn.create(rows.H0!, deep.P, lambda);
      try {
        const got = await lossChanges(deep, rows, ref.train, points, curv);
        // One flipped mask changes H and so every score a little (test/fixtures/deep/README.md: Kinks).
        const e = worstRowError(got, decode(ref.lossChangeIfRemoved[String(lambda)]), rows.n);
        assert.ok(e <= 0.15, `λ ${lambda}: ${e.toExponential(2)}`);
        const L = lds(loadTruth('cnn'), got);
        assert.ok(
          Math.abs(L - ref.kinks.onnxruntimeMasks.lds[String(lambda)]) <= 1e-3,
          `λ ${lambda}: LDS ${L} vs ${ref.kinks.onnxruntimeMasks.lds[String(lambda)]}`,
        );
      } finally {
        await curv.release();
      }
    }
  });

  for (const model of ['mlp', 'cnn'] as const) {
    it(`LDS ${model}, kink-free rows: lossChangeIfRemoved at λ = 1e-3 within 1e-5`, async () => {
      const ref = ldsReference(model, 'last2');
      const kf = ref.kinkFree;
      const train = without(ref.train, kf.excludedTrainRows, `${model}-kinkfree.csv`);
      const deep = await deepEngine(ref.model, 2);
      const rows = await readDeepRows(deep, train, {}, {}, { ggn: true });
      assert.equal(rows.n, kf.n);
      const points = await testPoints(
        deep,
        ref.test,
        kf.testRowIndices.map((j: number) => ref.testRows[j]),
      );
      const curv = await ExactGgn.create(rows.H0!, deep.P, kf.lambda);
      try {
        const e = worstRowError(
          await lossChanges(deep, rows, train, points, curv),
          decode(kf.lossChangeIfRemoved),
          rows.n,
        );
        assert.ok(e <= TOL, `${e.toExponential(2)}`);
      } finally {
        await curv.release();
      }
    });
  }
});

describe('exact GGN scores on the op-coverage models (test/fixtures/deep/manifest.json, λ = 0.01)', () => {
  for (const mod of manifest().ops.models) {
    it(`${mod.name}, every depth: lossChangeIfRemoved and selfInfluence within 1e-5`, async () => {
      for (const depth of mod.depths) {
        const deep = await deepEngine(join(DEEP_DIR, mod.file), depth.k);
        const train = join(DEEP_DIR, 'rows.csv');
        const rows = await readDeepRows(deep, train, {}, {}, { ggn: true });
        const points = await testPoints(
          deep,
          join(DEEP_DIR, 'rows_test.csv'),
          Array.from({ length: mod.rows.T }, (_, t) => t),
        );
        const curv = await ExactGgn.create(rows.H0!, deep.P, depth.lambda);
        try {
          const e = worstRowError(
            await lossChanges(deep, rows, train, points, curv),
            decode(depth.lossChangeIfRemoved),
            rows.n,
          );
          assert.ok(e <= TOL, `depth ${depth.k}: lossChangeIfRemoved ${e.toExponential(2)}`);
          const es = relError(await curv.quad(rows.grads!, rows.n), decode(depth.selfInfluence));
          assert.ok(es <= TOL, `depth ${depth.k}: selfInfluence ${es.toExponential(2)}`);
        } finally {
          await curv.release();
        }
      }
    });
  }
});

describe("the GGN on the head alone is the head's Hessian", () => {
  it('softmax (LDS MLP) and binary heads', async () => {
    const ref = ldsReference('mlp', 'last2');
    const deep = await deepEngine(ref.model, 'head');
    const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: true });
    const want = denseHessian(rows, 0);
    assert.ok(relError(rows.H0!, want) <= 1e-12, `softmax: ${relError(rows.H0!, want)}`);
    const bin = join(dir, 'binary.onnx');
    writeFileSync(bin, buildModel({ F: 4, D: 5, C: 1, head: 'matmulAdd', trailing: 'none' }).bytes);
    const data = join(dir, 'binary.csv');
    const r = rng(9);
    writeFileSync(
      data,
      [
        'a,b,c,d,label',
        ...Array.from({ length: 30 }, (_, i) => `${[r(), r(), r(), r()].map((v) => v.toFixed(3)).join(',')},${i % 2}`),
      ].join('\n') + '\n',
    );
    const bdeep = await deepEngine(bin, 'head');
    const brows = await readDeepRows(bdeep, data, {}, {}, { ggn: true });
    const bwant = denseHessian(brows, 0);
    assert.ok(relError(brows.H0!, bwant) <= 1e-12, `binary: ${relError(brows.H0!, bwant)}`);
  });
});

describe('EK-FAC per layer', () => {
  it('on the head alone it is the head EK-FAC of curvature/ekfac.ts', async () => {
    const ref = ldsReference('mlp', 'last2');
    const deep = await deepEngine(ref.model, 'head');
    const col = LayerEkfac.collector(deep);
    const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: false, onBatch: col.onBatch });
    const curv = await LayerEkfac.create(
      await col.finish((fn) => deep.pass(ref.train, {}, {}, fn)),
      deep.P,
      rows.n,
      1e-3,
    );
    const got = await curv.quad(rows.grads!, rows.n);
    const ek = new Ekfac(rows, 1e-3);
    const want = Float64Array.from({ length: rows.n }, (_, i) => {
      const v = rows.grads!.slice(i * deep.P, (i + 1) * deep.P);
      return dot(v, ek.apply(v));
    });
    assert.ok(relError(got, want) <= 1e-10, `${relError(got, want)}`);
    await curv.release();
  });

  for (const model of ['mlp', 'cnn'] as const) {
    it(`LDS ${model}, last 2 layers: self-influence tracks the exact GGN's; LDS against retraining`, async () => {
      const ref = ldsReference(model, 'last2');
      const deep = await deepEngine(ref.model, 2);
      const col = LayerEkfac.collector(deep);
      const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: false, onBatch: col.onBatch });
      const curv = await LayerEkfac.create(
        await col.finish((fn) => deep.pass(ref.train, {}, {}, fn)),
        deep.P,
        rows.n,
        1e-3,
      );
      try {
        const self = await curv.quad(rows.grads!, rows.n);
        const r = pearson(self, decode(ref.selfInfluence['0.001']));
        assert.ok(r >= 0.95, `self-influence Pearson ${r}`);
        const points = await testPoints(deep, ref.test, ref.testRows);
        const L = lds(loadTruth(model), await lossChanges(deep, rows, ref.train, points, curv));
        assert.ok(L >= 0.4, `LDS ${L}`);
      } finally {
        await curv.release();
      }
    });
  }
});
