/**
 * Influence over the last 2 layers of the LDS MLP and CNN (test/fixtures/lds) against the float64
 * autograd references of test/fixtures/deep: the exact damped GGN's lossChangeIfRemoved and
 * self-influence at λ = 1e-3 and 1e-2 (the MLP's rows sit on no Relu kink that onnxruntime takes
 * otherwise; the CNN's row 536 does, so its full reference is matched in LDS and its kink-free
 * reference to 1e-5), and EK-FAC per layer (equal to the head's own float64 EK-FAC on the head, to
 * the float32 rounding of its statistics).
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
import { readDeepRows, rowPass, type DeepRows } from '../../src/core/deepRows';
import { dot, matmul, transpose } from '../../src/core/linalg';
import { DeepEngine } from '../../src/core/model/deep';
import { ForwardMemo } from '../../src/core/model/forwardMemo';
import { Engine } from '../../src/core/model/engine';
import type { LayerSpec } from '../../src/core/model/layers';
import { deepExplainScores, deepLossChanges, type DeepTestPoint } from '../../src/core/scores/deep';
import {
  collectRowFactors,
  factorLossChanges,
  packRowFactors,
  unpackRowFactors,
} from '../../src/core/scores/rowFactors';
import { taskFor } from '../../src/core/task/loss';
import { DEEP_DIR, decode, ldsReference, lossChangesAt, manifest, relError, testPoints } from '../helpers/deep';
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

/** lossChangeIfRemoved of every training row for each test point at the curvature's damping, T×n. */
async function lossChanges(
  deep: DeepEngine,
  rows: DeepRows,
  train: string,
  points: DeepTestPoint[],
  curv: DeepCurvature,
): Promise<Float64Array[]> {
  return (await lossChangesAt(deep, rows, train, points, curv, [curv.damping]))[0];
}

/** Every row's whole loss gradient over the chosen layers, n×P (what the scorers never form). */
async function gradients(deep: DeepEngine, rows: DeepRows, train: string): Promise<Float64Array> {
  const G = new Float64Array(rows.n * deep.P);
  await rowPass(
    deep,
    rows,
    train,
    {},
    {},
  )(async (start, fw, g) => G.set(await deep.gradients(fw, 0, fw.count, g, 1), start * deep.P));
  return G;
}

/** Every score of one test point at the curvature's damping. */
async function scoresOf(deep: DeepEngine, rows: DeepRows, train: string, point: DeepTestPoint, curv: DeepCurvature) {
  const r = await deepExplainScores(deep, rows.n, taskFor(deep.K), point, curv, rowPass(deep, rows, train, {}, {}), []);
  return r.scores;
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
        const s = await scoresOf(deep, rows, ref.train, points[0], curv);
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
          const self = (await scoresOf(deep, rows, train, points[0], curv)).selfInfluence;
          const es = relError(self, decode(depth.selfInfluence));
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
  it('on the head alone it is the head EK-FAC of curvature/ekfac.ts (to 1e-6: its statistics are float32 GEMMs)', async () => {
    const ref = ldsReference('mlp', 'last2');
    const deep = await deepEngine(ref.model, 'head');
    const col = LayerEkfac.collector(deep);
    const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: false, onBatch: col.onBatch });
    const curv = LayerEkfac.create(await col.finish((fn) => deep.pass(ref.train, {}, {}, fn)), deep.P, rows.n, 1e-3);
    const [point] = await testPoints(deep, ref.test, [0]);
    const got = (await scoresOf(deep, rows, ref.train, point, curv)).selfInfluence;
    const G = await gradients(deep, rows, ref.train);
    const ek = new Ekfac(rows, 1e-3);
    const want = Float64Array.from({ length: rows.n }, (_, i) => {
      const v = G.slice(i * deep.P, (i + 1) * deep.P);
      return dot(v, ek.apply(v));
    });
    assert.ok(relError(got, want) <= 1e-6, `${relError(got, want)}`);
    await curv.release();
  });

  for (const model of ['mlp', 'cnn'] as const) {
    it(`LDS ${model}, last 2 layers: self-influence tracks the exact GGN's; LDS against retraining`, async () => {
      const ref = ldsReference(model, 'last2');
      const deep = await deepEngine(ref.model, 2);
      const col = LayerEkfac.collector(deep);
      const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: false, onBatch: col.onBatch });
      const curv = LayerEkfac.create(await col.finish((fn) => deep.pass(ref.train, {}, {}, fn)), deep.P, rows.n, 1e-3);
      try {
        const points = await testPoints(deep, ref.test, ref.testRows);
        const self = (await scoresOf(deep, rows, ref.train, points[0], curv)).selfInfluence;
        const r = pearson(self, decode(ref.selfInfluence['0.001']));
        assert.ok(r >= 0.95, `self-influence Pearson ${r}`);
        const L = lds(loadTruth(model), await lossChanges(deep, rows, ref.train, points, curv));
        assert.ok(L >= 0.4, `LDS ${L}`);
      } finally {
        await curv.release();
      }
    });
  }

  for (const model of ['mlp', 'cnn'] as const) {
    it(`LDS ${model}, last 2 layers: lossChangeIfRemoved is the fixture script's float64 EK-FAC (1e-5) at λ = 1e-3 and 1e-2`, async () => {
      const ref = ldsReference(model, 'last2');
      const want = JSON.parse(readFileSync(join(DEEP_DIR, `ekfac_${model}.json`), 'utf8'));
      const deep = await deepEngine(ref.model, 2);
      const col = LayerEkfac.collector(deep);
      const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: false, onBatch: col.onBatch });
      const blocks = await col.finish((fn) => deep.pass(ref.train, {}, {}, fn));
      const points = await testPoints(deep, ref.test, want.testRows);
      const n = rows.n;
      for (const lambda of want.lambdas as number[]) {
        const curv = LayerEkfac.create(blocks, deep.P, n, lambda);
        const got = await lossChanges(deep, rows, ref.train, points, curv);
        const e = worstRowError(got, decode(want.lossChangeIfRemoved[String(lambda)]), n);
        assert.ok(e <= TOL, `λ ${lambda}: ${e.toExponential(2)}`);
      }
    });
  }

  /** H⁻¹v by the blocks, in JS: per layer U_S (inv ∘ (U_Sᵀ V U_A)) U_Aᵀ. */
  function bruteSolve(curv: LayerEkfac, damping: number, v: Float64Array): Float64Array {
    const out = new Float64Array(v.length);
    const invs = curv.inverse(damping);
    curv.blocks.forEach((b, q) => {
      const V = v.subarray(b.offset, b.offset + b.P);
      const r = matmul(matmul(transpose(b.US, b.out, b.out), V, b.out, b.out, b.Dt), b.UA, b.out, b.Dt, b.Dt);
      for (let e = 0; e < r.length; e++) r[e] *= invs[q][e];
      out.set(matmul(matmul(b.US, r, b.out, b.out, b.Dt), transpose(b.UA, b.Dt, b.Dt), b.out, b.Dt, b.Dt), b.offset);
    });
    return out;
  }

  for (const model of ['mlp', 'cnn'] as const) {
    it(`LDS ${model}, last 2 layers: the factored row scores equal EK-FAC applied to whole gradients (1e-10), at two dampings`, async () => {
      const ref = ldsReference(model, 'last2');
      const deep = await deepEngine(ref.model, 2);
      const col = LayerEkfac.collector(deep);
      const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: false, onBatch: col.onBatch });
      const curv = LayerEkfac.create(await col.finish((fn) => deep.pass(ref.train, {}, {}, fn)), deep.P, rows.n, 1e-3);
      const [point] = await testPoints(deep, ref.test, [ref.testRows[0]]);
      const G = await gradients(deep, rows, ref.train);
      const { K, P } = deep;
      const r = await deepExplainScores(
        deep,
        rows.n,
        taskFor(K),
        point,
        curv,
        rowPass(deep, rows, ref.train, {}, {}),
        [1e-2],
      );
      const self = new Float64Array(rows.n);
      for (let i = 0; i < rows.n; i++) {
        const g = G.slice(i * P, (i + 1) * P);
        self[i] = dot(g, bruteSolve(curv, 1e-3, g));
      }
      assert.ok(relError(r.scores.selfInfluence, self) <= 1e-10, `self ${relError(r.scores.selfInfluence, self)}`);
      for (const [damping, got] of [
        [1e-3, r.scores.lossChangeIfRemoved],
        [1e-2, r.also[0]],
      ] as const) {
        const gt = new Float64Array(P);
        for (let a = 0; a < K; a++) for (let q = 0; q < P; q++) gt[q] += point.g[a] * point.J[a * P + q];
        const u = bruteSolve(curv, damping, gt);
        const want = Float64Array.from({ length: rows.n }, (_, i) => dot(u, G.subarray(i * P, (i + 1) * P)) / rows.n);
        assert.ok(relError(got, want) <= 1e-10, `λ ${damping}: ${relError(got, want)}`);
      }
    });
  }

  for (const model of ['mlp', 'cnn'] as const) {
    it(`LDS ${model}, last 2 layers: audit's factored scores (held-out influence, self-influence) equal EK-FAC applied to whole gradients (1e-10)`, async () => {
      const ref = ldsReference(model, 'last2');
      const deep = await deepEngine(ref.model, 2);
      const col = LayerEkfac.collector(deep);
      const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: false, onBatch: col.onBatch });
      const curv = LayerEkfac.create(await col.finish((fn) => deep.pass(ref.train, {}, {}, fn)), deep.P, rows.n, 1e-3);
      const held = await readDeepRows(deep, ref.test, {}, {}, { ggn: false, gradSum: true });
      const G = await gradients(deep, rows, ref.train);
      const { P } = deep;
      const scorer = await curv.auditScorer(deep, held.gradSum!);
      const self = new Float64Array(rows.n);
      const toward = new Float64Array(rows.n);
      await rowPass(
        deep,
        rows,
        ref.train,
        {},
        {},
      )(async (start, fw, g) => {
        const r = await scorer.run(fw, g);
        self.set(r.self, start);
        toward.set(r.toward!, start);
      });
      const u = bruteSolve(curv, 1e-3, held.gradSum!);
      const wantSelf = new Float64Array(rows.n);
      const wantToward = new Float64Array(rows.n);
      for (let i = 0; i < rows.n; i++) {
        const g = G.subarray(i * P, (i + 1) * P);
        wantSelf[i] = dot(g, bruteSolve(curv, 1e-3, g));
        wantToward[i] = dot(u, g);
      }
      assert.ok(relError(self, wantSelf) <= 1e-10, `self ${relError(self, wantSelf)}`);
      assert.ok(relError(toward, wantToward) <= 1e-10, `held-out ${relError(toward, wantToward)}`);
    });
  }

  it("the training pass's kept forward batches replay as the file read again: the same EK-FAC and scores; past the budget nothing is kept", async () => {
    const ref = ldsReference('cnn', 'last2');
    const deep = await deepEngine(ref.model, 2);
    const [point] = await testPoints(deep, ref.test, [ref.testRows[0]]);
    const run = async (memo: ForwardMemo | undefined) => {
      let reads = 0;
      const read = (fn: Parameters<DeepEngine['pass']>[3]) => {
        reads++;
        return deep.pass(ref.train, {}, {}, fn);
      };
      const col = LayerEkfac.collector(deep);
      const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: false, onBatch: col.onBatch, memo });
      const blocks = await col.finish((fn) => (memo ? memo.again(read, fn) : read(fn)));
      const curv = LayerEkfac.create(blocks, deep.P, rows.n, 1e-3);
      const pass = rowPass(deep, rows, ref.train, {}, {}, memo);
      const scores = await deepExplainScores(deep, rows.n, taskFor(deep.K), point, curv, pass, []);
      return { blocks, scores: scores.scores, reads };
    };
    const again = await run(undefined);
    const kept = await run(new ForwardMemo());
    const over = await run(new ForwardMemo(() => 1024));
    assert.equal(again.reads, 1);
    assert.equal(kept.reads, 0);
    assert.equal(over.reads, 1);
    for (const r of [kept, over]) {
      r.blocks.forEach((b, q) => assert.ok(relError(b.lam, again.blocks[q].lam) <= 1e-12, `Λ of layer ${q}`));
      assert.ok(relError(r.scores.lossChangeIfRemoved, again.scores.lossChangeIfRemoved) <= 1e-12);
      assert.ok(relError(r.scores.selfInfluence, again.scores.selfInfluence) <= 1e-12);
    }
  });

  for (const model of ['mlp', 'cnn'] as const) {
    it(`LDS ${model}, last 2 layers: lossChangeIfRemoved from the rows' float32 factors (through the cache's packing) is the scoring pass's to 1e-5, exact GGN and EK-FAC`, async () => {
      const ref = ldsReference(model, 'last2');
      const deep = await deepEngine(ref.model, 2);
      const col = LayerEkfac.collector(deep);
      const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: true, onBatch: col.onBatch });
      const blocks = await col.finish((fn) => deep.pass(ref.train, {}, {}, fn));
      const [point] = await testPoints(deep, ref.test, [ref.testRows[0]]);
      const { K, P } = deep;
      const made = await collectRowFactors(deep, rows.n, rowPass(deep, rows, ref.train, {}, {}));
      const factors = unpackRowFactors(deep, rows.n, packRowFactors(made))!;
      assert.equal(unpackRowFactors(deep, rows.n + 1, packRowFactors(made)), null);
      const gt = new Float64Array(P);
      for (let a = 0; a < K; a++) for (let q = 0; q < P; q++) gt[q] += point.g[a] * point.J[a * P + q];
      for (const curv of [await ExactGgn.create(rows.H0!, P, 1e-3), LayerEkfac.create(blocks, P, rows.n, 1e-3)]) {
        try {
          const pass = rowPass(deep, rows, ref.train, {}, {});
          const [want] = await deepLossChanges(deep, rows.n, point, curv, pass, [1e-3]);
          const got = await factorLossChanges(deep, factors, await curv.solve(gt), rows.n);
          assert.ok(relError(got, want) <= 1e-5, `${curv.method}: ${relError(got, want)}`);
        } finally {
          await curv.release();
        }
      }
    });
  }
});
