/**
 * Generated model files for the ONNX reader: a seed model (a small classifier from
 * test/helpers/models.ts in one of its head forms, or a real export from test/fixtures/exports or
 * the sample), then damage to its bytes (bit flips, truncation, inserted, deleted or overwritten
 * bytes) or to its structure (wrong element, tensor and attribute types, unknown or swapped ops,
 * missing initializers, nodes and inputs, cycles, absurd, negative or zero dims, tensor data that
 * does not match its dims, odd attributes, metadata and opsets), or both.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  TensorShapeProto_DimensionSchema,
  type ModelProto,
  type TensorProto,
  type ValueInfoProto,
} from 'onnx-buf';
import { buildModel, type ModelSpec } from '../helpers/models';
import { Rng } from './prng';

export interface ModelCase {
  reader: 'onnx';
  name: string;
  ext: '.onnx';
  bytes: Buffer;
}

const root = resolve(__dirname, '../..');

let seeds: { name: string; bytes: Uint8Array }[] | null = null;

/** The seed models: small built ones in every head form, and the real exports. */
export function seedModels(): { name: string; bytes: Uint8Array }[] {
  if (seeds) return seeds;
  const specs: [string, ModelSpec][] = [
    ['gemmTransB-softmax', { F: 4, D: 3, C: 3, head: 'gemmTransB', trailing: 'softmax' }],
    ['gemm-none', { F: 3, D: 2, C: 2, head: 'gemm', trailing: 'none' }],
    ['matmulAdd-logsoftmax', { F: 5, D: 4, C: 3, head: 'matmulAdd', trailing: 'logsoftmax', pre: true }],
    ['addReversed-identitySoftmax', { F: 2, D: 2, C: 4, head: 'addReversed', trailing: 'identitySoftmax' }],
    ['matmulNoBias-none', { F: 3, D: 3, C: 2, head: 'matmulNoBias', trailing: 'none' }],
    [
      'gemmScaled-softmax',
      {
        F: 4,
        D: 2,
        C: 3,
        head: 'gemmScaled',
        trailing: 'softmax',
        metadata: { 'influence_lens.l2': '0.01', 'influence_lens.classes': '["a","b","c"]' },
      },
    ],
    ['image-1x2x2', { F: 4, D: 3, C: 2, head: 'gemmTransB', trailing: 'softmax', inputDims: [1, 2, 2] }],
    ['fixed-batch-4', { F: 3, D: 2, C: 2, head: 'gemmTransB', trailing: 'none', batch: 4 }],
    ['baked-batch-2', { F: 3, D: 2, C: 3, head: 'matmulAdd', trailing: 'softmax', batch: 2, bakedBatch: true }],
    ['binary-one-logit', { F: 3, D: 2, C: 1, head: 'gemmTransB', trailing: 'none' }],
    ['opset9', { F: 3, D: 2, C: 3, head: 'gemmTransB', trailing: 'softmax', opset: 9 }],
  ];
  seeds = specs.map(([name, spec]) => ({ name, bytes: buildModel(spec).bytes }));
  const dir = join(root, 'test/fixtures/exports');
  for (const f of readdirSync(dir)
    .filter((x) => x.endsWith('.onnx'))
    .sort())
    seeds.push({ name: f, bytes: readFileSync(join(dir, f)) });
  seeds.push({ name: 'digits/model.onnx', bytes: readFileSync(join(root, 'samples/digits/model.onnx')) });
  return seeds;
}

// ---------------------------------------------------------------------------------------
// Damage to the bytes

type ByteMutator = (r: Rng, b: Buffer) => [Buffer, string];

const BYTE_MUTATORS: readonly (readonly [number, ByteMutator])[] = [
  [
    6,
    (r, b) => {
      const c = Buffer.from(b);
      const k = r.pick([1, 1, 2, 4, 16, 64]);
      for (let i = 0; i < k; i++) c[r.int(c.length)] ^= 1 << r.int(8);
      return [c, `bitflip${k}`];
    },
  ],
  [
    4,
    (r, b) => {
      const p = r.chance(0.5) ? r.int(b.length) : b.length - 1 - r.small(64);
      return [b.subarray(0, Math.max(0, p)), `truncate@${p}`];
    },
  ],
  [
    2,
    (r, b) => {
      const p = r.int(b.length);
      return [Buffer.concat([b.subarray(0, p), r.bytes(r.range(1, 16)), b.subarray(p)]), `insert@${p}`];
    },
  ],
  [
    2,
    (r, b) => {
      const p = r.int(b.length);
      const n = r.range(1, 16);
      return [Buffer.concat([b.subarray(0, p), b.subarray(p + n)]), `delete${n}@${p}`];
    },
  ],
  [
    2,
    (r, b) => {
      const c = Buffer.from(b);
      const p = r.int(c.length);
      const v = r.pick([0x00, 0xff, 0x7f, 0x80]);
      c.fill(v, p, Math.min(c.length, p + r.range(1, 32)));
      return [c, `fill${v.toString(16)}@${p}`];
    },
  ],
];

// ---------------------------------------------------------------------------------------
// Damage to the structure

type StructMutator = (r: Rng, m: ModelProto) => string;

const OPS = [
  'Gemm',
  'MatMul',
  'Add',
  'Identity',
  'Softmax',
  'LogSoftmax',
  'Sigmoid',
  'Relu',
  'Reshape',
  'Flatten',
  'Squeeze',
  'Unsqueeze',
  'Cast',
  'Dropout',
  'Mul',
  'Div',
  'Constant',
  'If',
  'Loop',
  'Foo',
  '',
  'Gemm ',
  'gemm',
];
const DIMS = [
  0n,
  -1n,
  -5n,
  1n,
  2n,
  7n,
  1000n,
  65536n,
  2147483647n,
  2147483648n,
  4294967296n,
  1n << 40n,
  9007199254740993n,
  1n << 62n,
  -(1n << 63n),
];
const DATA_TYPES = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 23, 999, -1];

function graphOf(m: ModelProto) {
  return m.graph!;
}

function pickInit(r: Rng, m: ModelProto): TensorProto | null {
  const inits = graphOf(m).initializer;
  return inits.length ? r.pick(inits) : null;
}

function setDims(v: ValueInfoProto, dims: bigint[]): void {
  if (v.type?.value.case !== 'tensorType') return;
  const t = v.type.value.value;
  if (!t.shape) return;
  t.shape.dim = dims.map((d) => create(TensorShapeProto_DimensionSchema, { value: { case: 'dimValue', value: d } }));
}

function dimsOf(v: ValueInfoProto): bigint[] {
  if (v.type?.value.case !== 'tensorType' || !v.type.value.value.shape) return [];
  return v.type.value.value.shape.dim.map((d) => (d.value.case === 'dimValue' ? d.value.value : 1n));
}

const STRUCT_MUTATORS: readonly (readonly [number, StructMutator])[] = [
  // Wrong types.
  [
    3,
    (r, m) => {
      const v = r.pick(graphOf(m).input);
      if (v?.type?.value.case !== 'tensorType') return 'input-type-none';
      const t = r.pick(DATA_TYPES);
      v.type.value.value.elemType = t;
      return `input-elem=${t}`;
    },
  ],
  [
    3,
    (r, m) => {
      const t = pickInit(r, m);
      if (!t) return 'init-type-none';
      const d = r.pick(DATA_TYPES);
      t.dataType = d;
      return `init ${t.name} dataType=${d}`;
    },
  ],
  [
    2,
    (r, m) => {
      const v = r.pick([...graphOf(m).input, ...graphOf(m).output]);
      if (!v) return 'value-type-none';
      if (r.chance(0.5)) v.type = undefined;
      else if (v.type?.value.case === 'tensorType') v.type.value.value.shape = undefined;
      return `value ${v.name} type/shape removed`;
    },
  ],
  [
    3,
    (r, m) => {
      const n = r.pick(graphOf(m).node);
      if (!n) return 'op-none';
      const op = r.pick(OPS);
      const was = n.opType;
      n.opType = op;
      return `op ${was}->${JSON.stringify(op)}`;
    },
  ],
  [
    2,
    (r, m) => {
      const n = r.pick(graphOf(m).node);
      if (!n) return 'attr-none';
      const name = r.pick(['transA', 'transB', 'alpha', 'beta', 'axis', 'to', 'value', 'shape', 'keepdims']);
      const kind = r.int(5);
      const a = create(AttributeProtoSchema, { name });
      if (kind === 0)
        Object.assign(a, { type: AttributeProto_AttributeType.INT, i: r.pick([0n, 1n, 2n, -1n, 1n << 40n]) });
      else if (kind === 1)
        Object.assign(a, { type: AttributeProto_AttributeType.FLOAT, f: r.pick([0, -1, NaN, Infinity, 1e-30, 2]) });
      else if (kind === 2)
        Object.assign(a, { type: AttributeProto_AttributeType.STRING, s: new TextEncoder().encode('x') });
      else if (kind === 3) Object.assign(a, { type: AttributeProto_AttributeType.INTS, ints: [1n, -1n, 1n << 50n] });
      else Object.assign(a, { type: r.pick([0, 4, 99]) });
      const k = n.attribute.findIndex((x) => x.name === name);
      if (k >= 0 && r.chance(0.7)) n.attribute[k] = a;
      else n.attribute.push(a);
      return `attr ${n.opType}.${name} kind${kind}`;
    },
  ],
  // Missing pieces.
  [
    4,
    (r, m) => {
      const g = graphOf(m);
      if (g.initializer.length === 0) return 'drop-init-none';
      if (r.chance(0.15)) {
        g.initializer = [];
        return 'drop-all-inits';
      }
      const k = r.int(g.initializer.length);
      const name = g.initializer[k].name;
      g.initializer.splice(k, 1);
      return `drop-init ${name}`;
    },
  ],
  [
    2,
    (r, m) => {
      const g = graphOf(m);
      if (g.node.length === 0) return 'drop-node-none';
      const k = r.int(g.node.length);
      const op = g.node[k].opType;
      g.node.splice(k, 1);
      return `drop-node ${op}`;
    },
  ],
  [
    2,
    (r, m) => {
      const g = graphOf(m);
      const which = r.int(4);
      if (which === 0) g.input = [];
      else if (which === 1) g.output = [];
      else if (which === 2 && g.input.length) g.input.push({ ...g.input[0], name: 'second_input' } as ValueInfoProto);
      else if (g.output.length)
        g.output.push({
          ...g.output[0],
          name: r.pick(['missing', g.output[0].name, g.input[0]?.name ?? 'x']),
        } as ValueInfoProto);
      return `io${which}`;
    },
  ],
  [
    1,
    (r, m) => {
      const g = graphOf(m);
      const n = r.pick(g.node);
      if (!n || n.input.length === 0) return 'rename-none';
      const k = r.int(n.input.length);
      n.input[k] = r.pick(['', 'nowhere', n.output[0] ?? 'x']);
      return `input ${n.opType}[${k}] renamed`;
    },
  ],
  // Cycles.
  [
    4,
    (r, m) => {
      const g = graphOf(m);
      const nodes = g.node;
      if (nodes.length === 0) return 'cycle-none';
      const kind = r.int(4);
      if (kind === 0) {
        // A node that consumes its own output.
        const n = r.pick(nodes);
        if (n.input.length === 0) n.input.push(n.output[0]);
        else n.input[r.int(n.input.length)] = n.output[0];
        return `self-cycle ${n.opType}`;
      }
      if (kind === 1) {
        // An earlier node consumes a later one's output.
        const i = r.int(nodes.length);
        const j = r.range(i, nodes.length - 1);
        const a = nodes[i];
        if (a.input.length === 0) return 'cycle-none';
        a.input[r.int(a.input.length)] = nodes[j].output[0];
        return `cycle ${a.opType}<-${nodes[j].opType}`;
      }
      if (kind === 2) {
        // Identity (or pass-through) nodes in a ring behind the graph output.
        const out = g.output[0]?.name ?? 'output';
        const op = r.pick(['Identity', 'Softmax', 'Reshape', 'Cast', 'Flatten', 'Mul']);
        const len = r.range(1, 3);
        const names = Array.from({ length: len }, (_, k) => (k === 0 ? out : `ring${k}`));
        for (const n of nodes) n.output = n.output.map((o) => (o === out ? 'orphan' : o));
        for (let k = 0; k < len; k++) {
          const input = [names[(k + 1) % len]];
          if (op === 'Mul' || op === 'Reshape') input.push(g.initializer[0]?.name ?? 'c');
          nodes.push(create(NodeProtoSchema, { opType: op, name: `ring_${k}`, input, output: [names[k]] }));
        }
        return `ring-${op}${len}`;
      }
      // Two producers of one value.
      const a = r.pick(nodes);
      const b = r.pick(nodes);
      b.output = [...a.output];
      return `dup-output ${a.opType}/${b.opType}`;
    },
  ],
  // Absurd dims.
  [
    4,
    (r, m) => {
      const t = pickInit(r, m);
      if (!t) return 'dims-none';
      const kind = r.int(4);
      if (kind === 0) t.dims = t.dims.map(() => r.pick(DIMS));
      else if (kind === 1) t.dims[r.int(Math.max(1, t.dims.length))] = r.pick(DIMS);
      else if (kind === 2) t.dims = [];
      else t.dims = [...t.dims, r.pick(DIMS)];
      return `init ${t.name} dims=[${t.dims.join(',')}]`;
    },
  ],
  [
    4,
    (r, m) => {
      const g = graphOf(m);
      const v = r.pick([...g.input, ...g.input, ...g.output]);
      if (!v) return 'shape-none';
      const dims = dimsOf(v);
      const kind = r.int(4);
      if (kind === 0 && dims.length) dims[r.int(dims.length)] = r.pick(DIMS);
      else if (kind === 1) dims.push(r.pick(DIMS));
      else if (kind === 2) dims.splice(0, dims.length, ...dims.map(() => r.pick(DIMS)));
      else dims.splice(1);
      setDims(v, dims);
      return `value ${v.name} dims=[${dims.join(',')}]`;
    },
  ],
  // Other dims that hold the same data (so they pass the data checks and reach onnxruntime).
  [
    4,
    (r, m) => {
      const t = pickInit(r, m);
      if (!t) return 'reshape-none';
      const n = t.dims.reduce((a, d) => a * d, 1n);
      const kind = r.int(5);
      if (kind === 0) t.dims = [...t.dims].reverse();
      else if (kind === 1) t.dims = [n];
      else if (kind === 2) t.dims = [1n, n];
      else if (kind === 3) t.dims = [n, 1n];
      else t.dims = [...t.dims, 1n];
      return `init ${t.name} dims=[${t.dims.join(',')}] (same data)`;
    },
  ],
  [
    2,
    (r, m) => {
      const g = graphOf(m);
      const v = r.pick([...g.input, ...g.output]);
      if (!v) return 'shape-small-none';
      const dims = dimsOf(v);
      if (dims.length === 0) return 'shape-small-none';
      const k = r.range(1, Math.max(1, dims.length - 1));
      dims[k] = BigInt(r.range(1, 9));
      setDims(v, dims);
      return `value ${v.name} dims=[${dims.join(',')}] (small)`;
    },
  ],
  // Tensor data that does not match.
  [
    4,
    (r, m) => {
      const t = pickInit(r, m);
      if (!t) return 'data-none';
      const kind = r.int(6);
      if (kind === 0) t.rawData = t.rawData.subarray(0, r.int(t.rawData.length));
      else if (kind === 1) t.rawData = Uint8Array.from([...t.rawData, ...new Uint8Array(r.range(1, 9))]);
      else if (kind === 2) t.rawData = new Uint8Array(0);
      else if (kind === 3) {
        t.rawData = new Uint8Array(0);
        t.floatData = [1, 2, NaN];
      } else if (kind === 4) t.dataLocation = 1;
      else t.rawData = t.rawData.subarray(0, Math.max(0, t.rawData.length - r.range(1, 7)));
      return `init ${t.name} data${kind}`;
    },
  ],
  [
    1,
    (r, m) => {
      // A weight as a Constant node instead of an initializer.
      const g = graphOf(m);
      const t = pickInit(r, m);
      if (!t) return 'const-none';
      g.initializer = g.initializer.filter((x) => x !== t);
      const attr = r.chance(0.7)
        ? create(AttributeProtoSchema, { name: 'value', type: AttributeProto_AttributeType.TENSOR, t })
        : create(AttributeProtoSchema, {
            name: r.pick(['value_float', 'value_floats', 'sparse_value']),
            type: AttributeProto_AttributeType.FLOAT,
            f: 1,
          });
      g.node.unshift(
        create(NodeProtoSchema, { opType: 'Constant', name: `const_${t.name}`, output: [t.name], attribute: [attr] }),
      );
      return `constant ${t.name}`;
    },
  ],
  // Metadata, opset, versions.
  [
    2,
    (r, m) => {
      const key = r.pick(['influence_lens.l2', 'influence_lens.classes']);
      const value = r.pick([
        '',
        '0',
        '-1',
        'NaN',
        '1e400',
        'abc',
        '[]',
        '["a"]',
        '["a","b","c","d","e","f","g","h","i","j"]',
        '{"a":1}',
        '[null,null,null]',
        '0.5',
        '1e-300',
      ]);
      m.metadataProps = [
        ...m.metadataProps.filter((p) => p.key !== key),
        create(StringStringEntryProtoSchema, { key, value }),
      ];
      return `meta ${key}=${JSON.stringify(value)}`;
    },
  ],
  [
    2,
    (r, m) => {
      const v = r.pick([0n, 1n, 6n, 7n, 99n, 1n << 62n, -1n]);
      if (r.chance(0.2)) m.opsetImport = [];
      // eslint-disable-next-line no-dupe-else-if -- a second, independent draw
      else if (r.chance(0.2))
        m.opsetImport = [create(OperatorSetIdProtoSchema, { domain: 'com.example', version: 1n })];
      else m.opsetImport = [create(OperatorSetIdProtoSchema, { domain: '', version: v })];
      m.irVersion = r.pick([m.irVersion, 0n, 3n, 99n]);
      return `opset ${v} ir ${m.irVersion}`;
    },
  ],
  [
    1,
    (r, m) => {
      const g = graphOf(m);
      const n = r.pick(g.node);
      if (!n) return 'names-none';
      const kind = r.int(3);
      if (kind === 0) n.name = '';
      else if (kind === 1 && g.initializer.length > 1) g.initializer[1].name = g.initializer[0].name;
      else if (g.input.length && g.output.length) g.output[0].name = g.input[0].name;
      return `names${kind}`;
    },
  ],
];

/** The model case with this case seed. */
export function modelCase(seed: number): ModelCase {
  const r = new Rng(seed);
  const base = r.pick(seedModels());
  const steps = [base.name];
  let bytes: Buffer = Buffer.from(base.bytes);
  const mode = r.weighted([
    [3, 'bytes'],
    [6, 'struct'],
    [1, 'both'],
  ] as const);
  if (mode !== 'bytes') {
    const m = fromBinary(ModelProtoSchema, bytes);
    const k = r.weighted([
      [6, 1],
      [3, 2],
      [1, 3],
    ] as const);
    for (let i = 0; i < k; i++) steps.push(r.weighted(STRUCT_MUTATORS)(r, m));
    bytes = Buffer.from(toBinary(ModelProtoSchema, m));
  }
  if (mode !== 'struct') {
    const k = r.weighted([
      [7, 1],
      [2, 2],
      [1, 4],
    ] as const);
    for (let i = 0; i < k; i++) {
      const [next, what] = r.weighted(BYTE_MUTATORS)(r, bytes);
      bytes = next;
      steps.push(what);
    }
  }
  return { reader: 'onnx', name: steps.join(' + '), ext: '.onnx', bytes };
}
