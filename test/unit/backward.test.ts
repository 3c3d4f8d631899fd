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
import {
  DEEP_DIR,
  decode,
  ldsReference,
  manifest,
  maxRowRelError,
  relError,
  softplusModelBytes,
} from '../helpers/deep';
import { floatTensor, mkNode, rng, serialize, valueInfo } from '../helpers/models';
import { create } from '@bufbuild/protobuf';
import { AttributeProto_AttributeType, AttributeProtoSchema, TensorProto_DataType, TensorProtoSchema } from 'onnx-buf';
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
    for (let r = 0; r < b.count; r++)
      if (!want || want.has(b.start + r)) out.push(...G.subarray(r * deep.P, (r + 1) * deep.P));
  });
  return Float64Array.from(out);
}

describe('per-example gradients vs autograd: op-coverage models', () => {
  const m = manifest();
  for (const mod of m.ops.models) {
    // Depth 1 (the head alone) is the leading block of every deeper reference.
    for (const k of [1, ...mod.depths.map((d: { k: number }) => d.k)]) {
      it(`${mod.name}, last ${k} layer${k === 1 ? '' : 's'} (${k === 1 ? mod.layers[0].params : mod.depths.find((d: { k: number }) => d.k === k)!.params} parameters)`, async () => {
        const eng = await open(join(DEEP_DIR, mod.file));
        const deep = await DeepEngine.open(eng, k);
        try {
          const depth = mod.depths.find((d: { k: number }) => d.k === Math.max(k, 2))!;
          assert.deepEqual(
            deep.chosen.map((l) => l.name),
            mod.layers.slice(0, k).map((l: { node: string }) => l.node),
          );
          for (const [file, key, n] of [
            ['rows.csv', 'perExampleGradient', mod.rows.n],
            ['rows_test.csv', 'testGradient', mod.rows.T],
          ] as const) {
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
    assert.deepEqual(
      deep.chosen.map((l) => l.index),
      [1, 2, 4],
    );
    // Layer 3 is crossed but not chosen: the gradient is the depth-4 reference without its block.
    const mod = manifest().ops.models.find((x: { name: string }) => x.name === 'mlp_chain')!;
    const d4 = mod.depths.find((d: { k: number }) => d.k === 4)!;
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

describe('ops beyond the fixtures, against central differences of a float64 model', () => {
  const dir = mkdtempSync(join(tmpdir(), 'il-deep-fd-'));
  const F = 6;
  const C = 3;
  const dbl = (name: string, dims: number[], values: ArrayLike<number>) =>
    create(TensorProtoSchema, {
      name,
      dims: dims.map(BigInt),
      dataType: TensorProto_DataType.DOUBLE,
      rawData: new Uint8Array(Float64Array.from(values).buffer),
    });
  const i64 = (name: string, values: number[]) =>
    create(TensorProtoSchema, {
      name,
      dims: [BigInt(values.length)],
      dataType: TensorProto_DataType.INT64,
      rawData: new Uint8Array(new BigInt64Array(values.map(BigInt)).buffer),
    });

  /**
   * θ as the layers hold it (head first, each [W | b] out × (in + 1)): 1 head Gemm 3×5, 2 Gemm 5×6,
   * 3 MatMul 3×4 (+ Add) on a [N, 2, 4] input (two positions), 4 MatMul 8×6 (+ Add).
   */
  const shapes = [
    { out: 3, in: 5 },
    { out: 5, in: 6 },
    { out: 3, in: 4 },
    { out: 8, in: 6 },
  ];
  const P = shapes.reduce((a, s) => a + s.out * (s.in + 1), 0);

  /** The model for θ: MatMul + Add → Reshape → Softmax → Unsqueeze → Squeeze → MatMul + Add (3-D) → LogSoftmax, Mul(u, lsm(u)), Div by (1 + Sigmoid) → Reshape → Cast → Gemm → Tanh → Gemm head → Softmax. */
  function model(theta: Float64Array, name: string): string {
    const layer = (l: number) => {
      const off = shapes.slice(0, l).reduce((a, s) => a + s.out * (s.in + 1), 0);
      const { out, in: fanIn } = shapes[l];
      const W = new Float64Array(out * fanIn);
      const b = new Float64Array(out);
      for (let o = 0; o < out; o++) {
        for (let j = 0; j < fanIn; j++) W[o * fanIn + j] = theta[off + o * (fanIn + 1) + j];
        b[o] = theta[off + o * (fanIn + 1) + fanIn];
      }
      const Wt = new Float64Array(fanIn * out);
      for (let o = 0; o < out; o++) for (let j = 0; j < fanIn; j++) Wt[j * out + o] = W[o * fanIn + j];
      return { W, Wt, b };
    };
    const [L1, L2, L3, L4] = [0, 1, 2, 3].map(layer);
    const nodes = [
      mkNode('MatMul', ['input', 'W4'], ['m4']),
      mkNode('Add', ['m4', 'b4'], ['a4']),
      mkNode('Reshape', ['a4', 'shape3'], ['r']),
      mkNode('Softmax', ['r'], ['sm'], { axis: -1 }),
      mkNode('Unsqueeze', ['sm', 'axes1'], ['u']),
      mkNode('Squeeze', ['u', 'axes1'], ['q']),
      mkNode('MatMul', ['q', 'W3'], ['m3']),
      mkNode('Add', ['m3', 'b3'], ['a3']),
      mkNode('LogSoftmax', ['a3'], ['lsm'], { axis: 1 }),
      mkNode('Mul', ['a3', 'lsm'], ['prod']),
      mkNode('Sigmoid', ['a3'], ['sg']),
      mkNode('Add', ['sg', 'one'], ['den']),
      mkNode('Div', ['prod', 'den'], ['dv']),
      mkNode('Reshape', ['dv', 'shape2'], ['f']),
      mkNode('Cast', ['f'], ['c'], { to: TensorProto_DataType.DOUBLE }),
      mkNode('Gemm', ['c', 'W2', 'b2'], ['a2'], { transB: 0 }),
      mkNode('Tanh', ['a2'], ['t']),
      mkNode('Gemm', ['t', 'W1', 'b1'], ['z'], { transB: 1 }),
      mkNode('Softmax', ['z'], ['output'], { axis: 1 }),
    ];
    const inits = [
      dbl('W4', [6, 8], L4.Wt),
      dbl('b4', [8], L4.b),
      i64('shape3', [-1, 2, 4]),
      i64('axes1', [1]),
      i64('shape2', [-1, 6]),
      dbl('W3', [4, 3], L3.Wt),
      dbl('b3', [3], L3.b),
      dbl('one', [], [1]),
      dbl('W2', [6, 5], L2.Wt),
      dbl('b2', [5], L2.b),
      dbl('W1', [3, 5], L1.W),
      dbl('b1', [3], L1.b),
    ];
    const bytes = serialize(
      nodes,
      inits,
      [valueInfo('input', TensorProto_DataType.DOUBLE, ['batch', F])],
      [valueInfo('output', TensorProto_DataType.DOUBLE, ['batch', C])],
      13,
    );
    const p = join(dir, `${name}.onnx`);
    writeFileSync(p, bytes);
    return p;
  }

  it('Softmax and LogSoftmax between layers, Squeeze/Unsqueeze, Cast, a product and a quotient of two path values, a MatMul on a 3-D input, Gemm with transB = 0', async () => {
    const r = rng(11);
    const theta = Float64Array.from({ length: P }, () => r() * 0.8);
    const rows = [
      'a,b,c,d,e,f,label',
      ...Array.from({ length: 12 }, (_, i) =>
        [...Array.from({ length: F }, () => (r() * 2).toFixed(4)), i % C].join(','),
      ),
    ];
    const data = join(dir, 'rows.csv');
    writeFileSync(data, rows.join('\n') + '\n');
    const eng = await open(model(theta, 'base'));
    const deep = await DeepEngine.open(eng, 'all');
    assert.deepEqual(
      deep.chosen.map((l) => l.parameters),
      shapes.map((s) => s.out * (s.in + 1)),
    );
    const G = await gradients(deep, data);
    await deep.release();
    const n = rows.length - 1;
    const loss = async (t: Float64Array, name: string) => {
      const e = await open(model(t, name));
      return (await e.forward(data, {})).loss;
    };
    // Directional derivatives: each layer alone and all at once, in random directions.
    const eps = 1e-5;
    for (let d = 0; d <= shapes.length; d++) {
      const off = shapes.slice(0, d).reduce((a, s) => a + s.out * (s.in + 1), 0);
      const len = d < shapes.length ? shapes[d].out * (shapes[d].in + 1) : P;
      const dir = new Float64Array(P);
      for (let q = d < shapes.length ? off : 0; q < (d < shapes.length ? off + len : P); q++) dir[q] = r();
      const plus = await loss(
        theta.map((v, q) => v + eps * dir[q]),
        `p${d}`,
      );
      const minus = await loss(
        theta.map((v, q) => v - eps * dir[q]),
        `m${d}`,
      );
      const fd = Float64Array.from({ length: n }, (_, i) => (plus[i] - minus[i]) / (2 * eps));
      const an = Float64Array.from({ length: n }, (_, i) => {
        let s = 0;
        for (let q = 0; q < P; q++) s += G[i * P + q] * dir[q];
        return s;
      });
      const err = relError(an, fd);
      assert.ok(
        err <= 1e-7,
        `${d < shapes.length ? `layer ${d + 1}` : 'all layers'}: directional derivatives off by ${err.toExponential(2)}`,
      );
    }
  });

  it('a binary head on a 1-D MatMul weight (one logit per row, its dim dropped), by central differences over every parameter', async () => {
    const r = rng(23);
    // θ: head [w | b] (1×4), layer 2 Gemm 3×(4 + 1).
    const theta = Float64Array.from({ length: 4 + 15 }, () => r() * 0.9);
    const build = (t: Float64Array, name: string) => {
      const W2 = Float64Array.from({ length: 12 }, (_, q) => t[4 + Math.floor(q / 4) * 5 + (q % 4)]);
      const b2 = Float64Array.from({ length: 3 }, (_, o) => t[4 + o * 5 + 4]);
      const bytes = serialize(
        [
          mkNode('Gemm', ['input', 'W2', 'b2'], ['a'], { transB: 1 }),
          mkNode('Tanh', ['a'], ['h']),
          mkNode('MatMul', ['h', 'w'], ['m']),
          mkNode('Add', ['m', 'b'], ['z']),
        ],
        [dbl('W2', [3, 4], W2), dbl('b2', [3], b2), dbl('w', [3], t.subarray(0, 3)), dbl('b', [1], t.subarray(3, 4))],
        [valueInfo('input', TensorProto_DataType.DOUBLE, ['batch', 4])],
        [valueInfo('z', TensorProto_DataType.DOUBLE, ['batch'])],
      );
      const p = join(dir, `binary-${name}.onnx`);
      writeFileSync(p, bytes);
      return p;
    };
    const rows = [
      'a,b,c,d,label',
      ...Array.from({ length: 8 }, (_, i) =>
        [...Array.from({ length: 4 }, () => (r() * 2).toFixed(4)), i % 2].join(','),
      ),
    ];
    const data = join(dir, 'binary.csv');
    writeFileSync(data, rows.join('\n') + '\n');
    const deep = await DeepEngine.open(await open(build(theta, 'base')), 2);
    assert.equal(deep.K, 1);
    const G = await gradients(deep, data);
    await deep.release();
    const n = rows.length - 1;
    const P = theta.length;
    const eps = 1e-6;
    const fd = new Float64Array(n * P);
    for (let q = 0; q < P; q++) {
      const at = async (sign: number) =>
        (
          await (
            await open(
              build(
                theta.map((v, k) => (k === q ? v + sign * eps : v)),
                `${q}${sign}`,
              ),
            )
          ).forward(data, {})
        ).loss;
      const [plus, minus] = [await at(1), await at(-1)];
      for (let i = 0; i < n; i++) fd[i * P + q] = (plus[i] - minus[i]) / (2 * eps);
    }
    const err = maxRowRelError(G, fd, n, P);
    assert.ok(err <= 1e-7, `${err.toExponential(2)}`);
  });
});

describe('Conv and pooling geometry, against central differences of a float64 evaluation', () => {
  const dir = mkdtempSync(join(tmpdir(), 'il-deep-fd32-'));
  const shapes = [
    { name: 'head', n: 3 * (4 * 2 * 2 + 1) },
    { name: 'conv2', n: 4 * (3 * 9 + 1) },
    { name: 'conv1', n: 3 * (1 * 4 + 1) },
  ];
  const P = shapes.reduce((a, s) => a + s.n, 0);
  const attr = (name: string, ints: number[]) =>
    create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INTS, ints: ints.map(BigInt) });
  const str = (name: string, s: string) =>
    create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.STRING, s: new TextEncoder().encode(s) });
  const node = (
    op: string,
    input: string[],
    output: string,
    attrs: ReturnType<typeof attr>[],
    ints: Record<string, number> = {},
  ) => {
    const n = mkNode(op, input, [output], ints);
    n.attribute.push(...attrs);
    return n;
  };
  /** θ (head first, each [W | b]) as the layers' weights: head 3×16, conv2 4×27 ([4, 3, 3, 3]), conv1 3×4 ([3, 1, 2, 2]). */
  const parts = (theta: Float64Array) => {
    const part = (l: number) =>
      theta.subarray(
        shapes.slice(0, l).reduce((a, s) => a + s.n, 0),
        shapes.slice(0, l + 1).reduce((a, s) => a + s.n, 0),
      );
    const split = (v: Float64Array, out: number, fanIn: number) => ({
      W: Float64Array.from({ length: out * fanIn }, (_, q) => v[Math.floor(q / fanIn) * (fanIn + 1) + (q % fanIn)]),
      b: Float64Array.from({ length: out }, (_, o) => v[o * (fanIn + 1) + fanIn]),
    });
    return { h: split(part(0), 3, 16), c2: split(part(1), 4, 27), c1: split(part(2), 3, 4) };
  };

  /**
   * [N,1,7,7] → Conv 2×2 auto_pad SAME_LOWER → MaxPool 3×3 stride 2, pads 1, ceil_mode → Tanh →
   * Conv 3×3 stride 2 auto_pad SAME_UPPER → Sigmoid → AveragePool 2×2 stride 1, pads [0,0,1,1],
   * count_include_pad → Flatten → Gemm head (3 classes).
   */
  function model(theta: Float64Array): string {
    const { h, c2, c1 } = parts(theta);
    const nodes = [
      node('Conv', ['input', 'C1', 'c1'], 'a1', [attr('kernel_shape', [2, 2]), str('auto_pad', 'SAME_LOWER')]),
      node(
        'MaxPool',
        ['a1'],
        'p1',
        [attr('kernel_shape', [3, 3]), attr('strides', [2, 2]), attr('pads', [1, 1, 1, 1])],
        { ceil_mode: 1 },
      ),
      mkNode('Tanh', ['p1'], ['t1']),
      node('Conv', ['t1', 'C2', 'c2'], 'a2', [
        attr('kernel_shape', [3, 3]),
        attr('strides', [2, 2]),
        str('auto_pad', 'SAME_UPPER'),
      ]),
      mkNode('Sigmoid', ['a2'], ['s2']),
      node('AveragePool', ['s2'], 'p2', [attr('kernel_shape', [2, 2]), attr('pads', [0, 0, 1, 1])], {
        count_include_pad: 1,
      }),
      mkNode('Flatten', ['p2'], ['f'], { axis: 1 }),
      mkNode('Gemm', ['f', 'W', 'b'], ['z'], { transB: 1 }),
    ];
    const inits = [
      floatTensor('C1', [3, 1, 2, 2], c1.W),
      floatTensor('c1', [3], c1.b),
      floatTensor('C2', [4, 3, 3, 3], c2.W),
      floatTensor('c2', [4], c2.b),
      floatTensor('W', [3, 16], h.W),
      floatTensor('b', [3], h.b),
    ];
    const p = join(dir, 'geometry.onnx');
    writeFileSync(
      p,
      serialize(
        nodes,
        inits,
        [valueInfo('input', TensorProto_DataType.FLOAT, ['batch', 1, 7, 7])],
        [valueInfo('z', TensorProto_DataType.FLOAT, ['batch', 3])],
      ),
    );
    return p;
  }

  /** The same model evaluated in float64 with plain loops (pads spelled out: SAME_LOWER 2×2 pads [1,1,0,0], SAME_UPPER 3×3 stride 2 on 4×4 pads [0,0,1,1]). */
  function logits(theta: Float64Array, x: Float64Array): Float64Array {
    const { h, c2, c1 } = parts(theta);
    const conv = (
      inp: Float64Array,
      C: number,
      H: number,
      W: Float64Array,
      b: Float64Array,
      O: number,
      k: number,
      s: number,
      pt: number,
      pl: number,
      Ho: number,
    ) => {
      const out = new Float64Array(O * Ho * Ho);
      for (let o = 0; o < O; o++)
        for (let y = 0; y < Ho; y++)
          for (let xx = 0; xx < Ho; xx++) {
            let v = b[o];
            for (let c = 0; c < C; c++)
              for (let u = 0; u < k; u++)
                for (let w = 0; w < k; w++) {
                  const iy = y * s - pt + u;
                  const ix = xx * s - pl + w;
                  if (iy >= 0 && iy < H && ix >= 0 && ix < H)
                    v += W[((o * C + c) * k + u) * k + w] * inp[(c * H + iy) * H + ix];
                }
            out[(o * Ho + y) * Ho + xx] = v;
          }
      return out;
    };
    const a1 = conv(x, 1, 7, c1.W, c1.b, 3, 2, 1, 1, 1, 7);
    const p1 = new Float64Array(3 * 16);
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 4; y++)
        for (let xx = 0; xx < 4; xx++) {
          let m = -Infinity;
          for (let u = 0; u < 3; u++)
            for (let w = 0; w < 3; w++) {
              const iy = y * 2 - 1 + u;
              const ix = xx * 2 - 1 + w;
              if (iy >= 0 && iy < 7 && ix >= 0 && ix < 7) m = Math.max(m, a1[(c * 7 + iy) * 7 + ix]);
            }
          p1[(c * 4 + y) * 4 + xx] = Math.tanh(m);
        }
    const s2 = conv(p1, 3, 4, c2.W, c2.b, 4, 3, 2, 0, 0, 2).map((v) => 1 / (1 + Math.exp(-v)));
    const f = new Float64Array(16);
    for (let c = 0; c < 4; c++)
      for (let y = 0; y < 2; y++)
        for (let xx = 0; xx < 2; xx++) {
          let v = 0;
          for (let u = 0; u < 2; u++)
            for (let w = 0; w < 2; w++) if (y + u < 2 && xx + w < 2) v += s2[(c * 2 + y + u) * 2 + xx + w];
          f[(c * 2 + y) * 2 + xx] = v / 4;
        }
    return Float64Array.from({ length: 3 }, (_, k) => h.b[k] + f.reduce((a, v, j) => a + v * h.W[k * 16 + j], 0));
  }

  it('auto_pad SAME_LOWER/SAME_UPPER, strided Conv, MaxPool with pads and ceil_mode, AveragePool counting pads', async () => {
    const r = rng(5);
    const theta = Float64Array.from({ length: P }, () => Math.fround(r() * 0.9));
    const X = Array.from({ length: 10 }, () => Float64Array.from({ length: 49 }, () => Number((r() * 2).toFixed(3))));
    const labels = X.map((_, i) => i % 3);
    const data = join(dir, 'rows.csv');
    writeFileSync(
      data,
      [
        [...Array.from({ length: 49 }, (_, j) => `p${j}`), 'label'].join(','),
        ...X.map((x, i) => [...x, labels[i]].join(',')),
      ].join('\n') + '\n',
    );
    const eng = await open(model(theta));
    // The float64 loops compute the model onnxruntime runs.
    const fwd = await eng.forward(data, {});
    const zf = Float64Array.from(X.flatMap((x) => Array.from(logits(theta, Float64Array.from(x, Math.fround)))));
    assert.ok(relError(fwd.z, zf) <= 1e-5, `float64 loops vs onnxruntime: ${relError(fwd.z, zf)}`);
    const deep = await DeepEngine.open(eng, 'all');
    assert.deepEqual(
      deep.chosen.map((l) => l.parameters),
      shapes.map((s) => s.n),
    );
    const G = await gradients(deep, data);
    await deep.release();
    const task = taskFor(3);
    const loss = (t: Float64Array, i: number) =>
      task.lossAndSignal(logits(t, Float64Array.from(X[i], Math.fround)), 0, labels[i], null, 0);
    const eps = 1e-6;
    const fd = new Float64Array(X.length * P);
    for (let i = 0; i < X.length; i++) {
      for (let q = 0; q < P; q++) {
        const tp = Float64Array.from(theta);
        tp[q] += eps;
        const tm = Float64Array.from(theta);
        tm[q] -= eps;
        fd[i * P + q] = (loss(tp, i) - loss(tm, i)) / (2 * eps);
      }
    }
    const err = maxRowRelError(G, fd, X.length, P);
    assert.ok(err <= 1e-5, `per-example gradients vs central differences: ${err.toExponential(2)}`);
  });
});
