import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { audit, explain, InfluenceError } from '../../src/core';
import { Engine } from '../../src/core/model/engine';
import { loadModel } from '../../src/core/model/info';
import { explainScores } from '../../src/core/scores/explain';
import { rowInput } from '../../src/core/task/head';
import { buildModel, mkNode, rng, serialize, valueInfo, type HeadKind, type Trailing } from '../helpers/models';
import { relErr } from '../helpers/stats';

const dir = mkdtempSync(join(tmpdir(), 'il-onnx-'));
const F = 6;
const D = 5;
const C = 4;

function writeModel(name: string, bytes: Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

/** A CSV of n random rows with features f0..f{F-1} and an integer label. */
function writeData(name: string, n: number, seed: number): string {
  const r = rng(seed);
  const lines = [[...Array.from({ length: F }, (_, j) => `f${j}`), 'label'].join(',')];
  for (let i = 0; i < n; i++)
    lines.push(
      [...Array.from({ length: F }, () => (r() * 2).toFixed(4)), String(Math.floor(((r() + 1) / 2) * C) % C)].join(','),
    );
  const p = join(dir, name);
  writeFileSync(p, lines.join('\n') + '\n');
  return p;
}

const train = writeData('train.csv', 40, 3);

/** Loss of row i as a function of θ, computed directly in float64: logsumexp(Wh+b) − z_y. */
function lossAt(theta: Float64Array, x: Float64Array, y: number, Dt: number): number {
  const z = Array.from({ length: C }, (_, c) => {
    let s = 0;
    for (let j = 0; j < Dt; j++) s += theta[c * Dt + j] * x[j];
    return s;
  });
  const m = Math.max(...z);
  return m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0)) - z[y];
}

describe('final-layer detection', () => {
  const kinds: HeadKind[] = ['gemmTransB', 'gemm', 'gemmScaled', 'matmulAdd', 'addReversed', 'matmulNoBias'];
  for (const head of kinds) {
    it(`reads the weights of a ${head} head`, async () => {
      const m = buildModel({ F, D, C, head, trailing: 'softmax', pre: true });
      const { info } = await loadModel(writeModel(`${head}.onnx`, m.bytes));
      assert.equal(info.head.C, C);
      assert.equal(info.head.D, D);
      assert.equal(info.F, F);
      for (let q = 0; q < C * D; q++)
        assert.ok(Math.abs(info.head.W[q] - m.W[q]) <= 1e-6 * Math.abs(m.W[q]), `W[${q}]`);
      if (head === 'matmulNoBias') assert.equal(info.head.b, null);
      else
        for (let c = 0; c < C; c++) assert.ok(Math.abs(info.head.b![c] - m.b[c]) <= 1e-6 * Math.abs(m.b[c]), `b[${c}]`);
      assert.equal(info.parameters, head === 'matmulNoBias' ? C * D : C * (D + 1));
    });
  }

  const trailings: [Trailing, string][] = [
    ['softmax', 'probabilities'],
    ['identitySoftmax', 'probabilities'],
    ['logsoftmax', 'log-probabilities'],
    ['none', 'logits'],
  ];
  for (const [trailing, kind] of trailings) {
    it(`steps back over a trailing ${trailing} and reports ${kind}`, async () => {
      const { info } = await loadModel(
        writeModel(`t-${trailing}.onnx`, buildModel({ F, D, C, head: 'gemmTransB', trailing }).bytes),
      );
      assert.equal(info.output, kind);
      assert.equal(info.head.zName, 'z');
      assert.equal(info.head.hName, 'h');
    });
  }

  it('reads an image-shaped input [N,1,2,3] as 6 flat features', async () => {
    const { info } = await loadModel(
      writeModel(
        'img.onnx',
        buildModel({ F, D, C, head: 'gemmTransB', trailing: 'softmax', inputDims: [1, 2, 3] }).bytes,
      ),
    );
    assert.deepEqual(info.inputDims, [1, 2, 3]);
    assert.equal(info.F, 6);
  });

  it('reads l2 and class names from metadata', async () => {
    const m = buildModel({
      F,
      D,
      C,
      head: 'gemmTransB',
      trailing: 'none',
      metadata: { 'influence_lens.l2': '0.0125', 'influence_lens.classes': '["a","b","c","d"]' },
    });
    const { info } = await loadModel(writeModel('meta.onnx', m.bytes));
    assert.equal(info.l2, 0.0125);
    assert.deepEqual(info.classes, ['a', 'b', 'c', 'd']);
  });

  it('names what it found when there is no linear head', async () => {
    const bytes = serialize(
      [mkNode('Relu', ['input'], ['r']), mkNode('Softmax', ['r'], ['output'], { axis: 1 })],
      [],
      [valueInfo('input', 1, ['batch', C])],
      [valueInfo('output', 1, ['batch', C])],
    );
    await assert.rejects(loadModel(writeModel('nohead.onnx', bytes)), (e: InfluenceError) => {
      assert.equal(e.code, 'NO_LINEAR_HEAD');
      assert.match(e.message, /Relu node 'Relu_r'/);
      assert.match(e.message, /stepping back over Softmax/);
      return true;
    });
  });

  it('rejects a model with a symbolic feature dimension', async () => {
    const m = buildModel({ F, D, C, head: 'gemmTransB', trailing: 'none', inputDims: ['features'] });
    await assert.rejects(loadModel(writeModel('dyn.onnx', m.bytes)), { code: 'MODEL_INPUT' });
  });

  it('rejects a file that is not ONNX', async () => {
    await assert.rejects(loadModel(writeModel('junk.onnx', new TextEncoder().encode('hello, not a model'))), {
      code: 'MODEL_INVALID',
    });
  });

  it('reports a missing model file', async () => {
    await assert.rejects(loadModel(join(dir, 'nope.onnx')), { code: 'FILE_NOT_FOUND' });
  });

  it('reports an op that onnxruntime cannot run', async () => {
    const bytes = serialize(
      [mkNode('FancyOp', ['input'], ['h']), mkNode('Gemm', ['h', 'W'], ['output'], { transB: 1 })],
      [(await import('../helpers/models')).floatTensor('W', [C, F], new Float32Array(C * F))],
      [valueInfo('input', 1, ['batch', F])],
      [valueInfo('output', 1, ['batch', C])],
    );
    await assert.rejects(Engine.open(writeModel('fancy.onnx', bytes)), (e: InfluenceError) => {
      assert.ok(e.code === 'UNSUPPORTED_OP' || e.code === 'MODEL_INVALID', e.code);
      assert.match(e.message, /FancyOp/);
      return true;
    });
  });
});

describe('gradient graph', () => {
  it('emits per-example gradients that match float64 central finite differences', async () => {
    const m = buildModel({ F, D, C, head: 'gemmTransB', trailing: 'softmax', pre: true, seed: 11 });
    const engine = await Engine.open(writeModel('fd.onnx', m.bytes));
    try {
      const rows = await engine.forward(train, {});
      const { W, b } = engine.info.head;
      const Dt = D + 1;
      const theta = new Float64Array(C * Dt);
      for (let c = 0; c < C; c++) {
        for (let j = 0; j < D; j++) theta[c * Dt + j] = W[c * D + j];
        theta[c * Dt + D] = b![c];
      }
      const x = new Float64Array(Dt);
      let worst = 0;
      for (let i = 0; i < rows.n; i++) {
        rowInput(rows, i, x);
        const y = rows.labels[i];
        // Loss from the graph equals the direct float64 loss up to the float32 logits.
        assert.ok(
          Math.abs(rows.loss[i] - lossAt(theta, x, y, Dt)) <= 1e-5 * Math.max(1, rows.loss[i]),
          `loss row ${i}`,
        );
        let num = 0;
        let den = 0;
        for (let q = 0; q < C * Dt; q++) {
          const eps = 1e-5 * Math.max(1, Math.abs(theta[q]));
          const t = Float64Array.from(theta);
          t[q] += eps;
          const up = lossAt(t, x, y, Dt);
          t[q] -= 2 * eps;
          const down = lossAt(t, x, y, Dt);
          const fd = (up - down) / (2 * eps);
          const analytic = rows.g[i * C + Math.floor(q / Dt)] * x[q % Dt];
          num += (fd - analytic) ** 2;
          den += fd * fd;
        }
        worst = Math.max(worst, Math.sqrt(num / den));
      }
      assert.ok(worst <= 1e-6, `worst norm-wise relative error ${worst}`);
    } finally {
      await engine.release();
    }
  });

  it('gives the same influence for every head form and trailing op', async () => {
    const test = writeData('test.csv', 3, 5);
    const results: Float64Array[] = [];
    const combos: [HeadKind, Trailing][] = [
      ['gemmTransB', 'softmax'],
      ['gemm', 'none'],
      ['gemmScaled', 'logsoftmax'],
      ['matmulAdd', 'identitySoftmax'],
      ['addReversed', 'none'],
    ];
    for (const [head, trailing] of combos) {
      const engine = await Engine.open(
        writeModel(`same-${head}-${trailing}.onnx`, buildModel({ F, D, C, head, trailing, pre: true, seed: 21 }).bytes),
      );
      try {
        const rows = await engine.forward(train, {});
        const t = await engine.forwardRow(test, 1, {});
        const x = Float64Array.from([...t.h, 1]);
        results.push((await explainScores(rows, { x, g: t.g, z: t.z, label: t.label }, { damping: 0.01 })).influence);
      } finally {
        await engine.release();
      }
    }
    for (const r of results.slice(1)) {
      let num = 0;
      let den = 0;
      for (let i = 0; i < r.length; i++) {
        num += (r[i] - results[0][i]) ** 2;
        den += results[0][i] ** 2;
      }
      assert.ok(Math.sqrt(num / den) < 1e-5, `relative difference ${Math.sqrt(num / den)}`);
    }
  });
});

describe('batch dimension', () => {
  /** The audit's held-out influence and the explain's influence for a model, at a given batch size. */
  async function scoresOf(
    modelPath: string,
    batchSize?: number,
  ): Promise<{ influence: Float64Array; heldOut: Float64Array; notes: string[] }> {
    const test = writeData('batch-test.csv', 5, 9);
    const e = await explain({ model: modelPath, train, test, testRow: 2, damping: 0.01, batchSize });
    const a = await audit({
      model: modelPath,
      train,
      heldOut: { path: test, source: 'test' },
      damping: 0.01,
      tau: 0,
      batchSize,
    });
    return { influence: e.scores.influence, heldOut: a.scores.heldOutInfluence!, notes: e.notes };
  }

  it('frees a batch size fixed by the export, or runs in padded batches of it when the graph depends on it', async () => {
    const spec = { F, D, C, head: 'gemmTransB' as const, trailing: 'softmax' as const, seed: 31 };
    const free = await scoresOf(writeModel('batch-dynamic.onnx', buildModel(spec).bytes));
    const fixed = await scoresOf(writeModel('batch-fixed.onnx', buildModel({ ...spec, batch: 4 }).bytes), 7);
    assert.match(fixed.notes.join('\n'), /fixed batch size of 4; it runs with any batch size/);
    const baked = await scoresOf(
      writeModel('batch-baked.onnx', buildModel({ ...spec, batch: 3, bakedBatch: true }).bytes),
      5,
    );
    assert.match(baked.notes.join('\n'), /runs 3 rows at a time, the last batch padded/);
    for (const other of [fixed, baked]) {
      assert.ok(relErr(other.influence, free.influence) < 1e-6, 'explain');
      assert.ok(relErr(other.heldOut, free.heldOut) < 1e-6, 'audit');
    }
  });
});
