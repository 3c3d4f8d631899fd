/**
 * Per-example gradients beyond the head (model/backward.ts) against torch autograd in float64
 * (test/fixtures/deep, scripts/fixtures/deep.py): every op-coverage model at every depth, and the
 * LDS MLP and CNN over their last 2 layers and all parameters; and the errors for layer choices
 * and paths the backward pass cannot take.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { InfluenceError } from '../../src/core';
import { DeepEngine } from '../../src/core/model/deep';
import { Engine } from '../../src/core/model/engine';
import { parseLayerSpec, type LayerSpec } from '../../src/core/model/layers';
import { taskFor } from '../../src/core/task/loss';
import { DEEP_DIR, decode, ldsReference, manifest, maxRowRelError, softplusModelBytes } from '../helpers/deep';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';

const TOL = 1e-5;
const engines: Engine[] = [];
after(async () => {
  for (const e of engines) await e.release();
});

async function open(path: string): Promise<Engine> {
  const e = await Engine.open(path);
  engines.push(e);
  return e;
}

/** ∇L_i over the chosen layers for the rows of a file (only `rows` of them when given), k×P. */
async function gradients(deep: DeepEngine, file: string, rows?: number[]): Promise<Float64Array> {
  const want = rows ? new Set(rows) : null;
  const out: number[] = [];
  const K = deep.K;
  const task = taskFor(K);
  await deep.pass(file, {}, {}, async (b, fw) => {
    const sig = new Float64Array(b.count * K);
    for (let r = 0; r < b.count; r++) task.lossAndSignal(fw.z, r * K, b.labels[r], sig, r * K);
    const G = await deep.gradients(fw, 0, b.count, sig, 1);
    for (let r = 0; r < b.count; r++) if (!want || want.has(b.start + r)) out.push(...G.subarray(r * deep.P, (r + 1) * deep.P));
  });
  return Float64Array.from(out);
}

describe('per-example gradients vs autograd: op-coverage models', () => {
  const m = manifest();
  for (const mod of m.ops.models) {
    // Depth 1 (the head alone) is the leading block of every deeper reference.
    for (const k of [1, ...mod.depths.map((d: { k: number }) => d.k)]) {
      it(`${mod.name}, last ${k} layer${k === 1 ? '' : 's'} (${k === 1 ? mod.layers[0].params : mod.depths.find((d: { k: number }) => d.k === k).params} parameters)`, async () => {
        const eng = await open(join(DEEP_DIR, mod.file));
        const deep = await DeepEngine.open(eng, k);
        try {
          const depth = mod.depths.find((d: { k: number }) => d.k === Math.max(k, 2));
          assert.deepEqual(deep.chosen.map((l) => l.name), mod.layers.slice(0, k).map((l: { node: string }) => l.node));
          for (const [file, key, n] of [['rows.csv', 'perExampleGradient', mod.rows.n], ['rows_test.csv', 'testGradient', mod.rows.T]] as const) {
            const full = decode(depth[key]);
            const ref = new Float64Array(n * deep.P);
            for (let i = 0; i < n; i++) ref.set(full.subarray(i * depth.params, i * depth.params + deep.P), i * deep.P);
            const got = await gradients(deep, join(DEEP_DIR, file));
            const err = maxRowRelError(got, ref, n, deep.P);
            assert.ok(err <= TOL, `${mod.name} depth ${k} ${file}: max relative error ${err.toExponential(2)}`);
          }
        } finally {
          await deep.release();
        }
      });
    }
  }
});

describe('per-example gradients vs autograd: the LDS models', () => {
  for (const model of ['mlp', 'cnn'] as const) {
    for (const scope of ['last2', 'all'] as const) {
      it(`${model}, ${scope}`, async () => {
        const ref = ldsReference(model, scope);
        const eng = await open(ref.model);
        const deep = await DeepEngine.open(eng, scope === 'all' ? 'all' : 2);
        try {
          assert.equal(deep.P, ref.params);
          assert.deepEqual(deep.offsets, ref.layerOffsets);
          const train = await gradients(deep, ref.train, ref.gradientRows);
          const e1 = maxRowRelError(train, decode(ref.perExampleGradient), ref.gradientRows.length, deep.P);
          assert.ok(e1 <= TOL, `training rows: ${e1.toExponential(2)}`);
          const testRows = ref.testGradientRows.map((j: number) => ref.testRows[j]);
          const test = await gradients(deep, ref.test, testRows);
          const e2 = maxRowRelError(test, decode(ref.testGradient), testRows.length, deep.P);
          assert.ok(e2 <= TOL, `test rows: ${e2.toExponential(2)}`);
        } finally {
          await deep.release();
        }
      });
    }
  }
});

describe('layer choices and paths the backward pass refuses', () => {
  const dir = mkdtempSync(join(tmpdir(), 'il-deep-'));
  const softplusModel = () => {
    const p = join(dir, 'softplus.onnx');
    writeFileSync(p, softplusModelBytes());
    return p;
  };
  async function refused(spec: LayerSpec, path: string): Promise<InfluenceError> {
    const eng = await open(path);
    try {
      await DeepEngine.open(eng, spec);
    } catch (e) {
      assert.ok(e instanceof InfluenceError, String(e));
      return e;
    }
    assert.fail('expected an error');
  }

  it('an op outside the supported list names the op and node and suggests shallower layers', async () => {
    const path = softplusModel();
    const e = await refused(3, path);
    assert.equal(e.code, 'UNSUPPORTED_OP');
    assert.equal(e.place.node, 'Softplus_s1');
    assert.match(e.message, /Softplus/);
    assert.match(e.message, /--layers 2/);
    const eng = await open(path);
    const ok = await DeepEngine.open(eng, 2);
    assert.equal(ok.P, 8 + 12);
    await ok.release();
  });

  it('--layers naming no layer, or more layers than the model has, lists the layers', async () => {
    const mlp = join(DEEP_DIR, 'mlp_chain.onnx');
    const e = await refused(['/nope/Gemm'], mlp);
    assert.equal(e.code, 'BAD_OPTION');
    assert.match(e.message, /'\/nope\/Gemm' names no parameterized layer/);
    assert.match(e.message, /1 '\/head\/Gemm' \(Gemm, 130 parameters\)/);
    const f = await refused(5, mlp);
    assert.equal(f.code, 'BAD_OPTION');
    assert.match(f.message, /has 4 parameterized layers/);
  });

  it('layers by name: the MatMul, its bias Add or its weight name, in index order', async () => {
    const eng = await open(join(DEEP_DIR, 'mlp_chain.onnx'));
    const deep = await DeepEngine.open(eng, parseLayerSpec('/fc1/Gemm,/Add,/head/Gemm'));
    assert.deepEqual(deep.chosen.map((l) => l.index), [1, 2, 4]);
    // Layer 3 is crossed but not chosen: the gradient is the depth-4 reference without its block.
    const mod = manifest().ops.models.find((x: { name: string }) => x.name === 'mlp_chain');
    const d4 = mod.depths.find((d: { k: number }) => d.k === 4);
    const o3 = d4.layerOffsets[2];
    const full = decode(d4.perExampleGradient);
    const ref = new Float64Array(mod.rows.n * deep.P);
    for (let i = 0; i < mod.rows.n; i++) {
      const row = full.subarray(i * d4.params, (i + 1) * d4.params);
      ref.set(row.subarray(0, o3), i * deep.P);
      ref.set(row.subarray(o3 + mod.layers[2].params), i * deep.P + o3);
    }
    const err = maxRowRelError(await gradients(deep, join(DEEP_DIR, 'rows.csv')), ref, mod.rows.n, deep.P);
    assert.ok(err <= TOL, `layers 1, 2, 4: ${err.toExponential(2)}`);
    await deep.release();
    assert.deepEqual(parseLayerSpec('head'), 'head');
    assert.deepEqual(parseLayerSpec('3'), 3);
    assert.throws(() => parseLayerSpec('0'), /K ≥ 1/);
  });
});
