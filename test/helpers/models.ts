/** Builds small ONNX classifiers in tests, with every head form the engine must recognise. */
import { create, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  TensorProto_DataType,
  TensorProtoSchema,
  type NodeProto,
  type TensorProto,
} from 'onnx-buf';
import { valueInfo } from '../../src/core/ort/graph';

export { valueInfo };

export type HeadKind = 'gemmTransB' | 'gemm' | 'matmulAdd' | 'addReversed' | 'matmulNoBias' | 'gemmScaled';
export type Trailing = 'softmax' | 'logsoftmax' | 'none' | 'identitySoftmax';

export interface ModelSpec {
  F: number;
  D: number;
  C: number;
  head: HeadKind;
  trailing: Trailing;
  pre?: boolean;
  metadata?: Record<string, string>;
  seed?: number;
  /** Input dims after batch; default [F]. */
  inputDims?: (number | string)[];
  opset?: number;
  /** The batch dim of the input and output: fixed (as an export without dynamic_axes) or symbolic (default). */
  batch?: number;
  /** Adds a zero [batch, F] constant to the input, so that the graph itself depends on a fixed batch. */
  bakedBatch?: boolean;
}

/** Deterministic uniform(-1,1) generator. */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) / 4294967296) * 2 - 1;
  };
}

export function floatTensor(name: string, dims: number[], values: ArrayLike<number>): TensorProto {
  const f = Float32Array.from(values);
  return create(TensorProtoSchema, {
    name,
    dims: dims.map(BigInt),
    dataType: TensorProto_DataType.FLOAT,
    rawData: new Uint8Array(f.buffer),
  });
}

export function mkNode(
  opType: string,
  input: string[],
  output: string[],
  attrs: Record<string, number> = {},
  floats: Record<string, number> = {},
): NodeProto {
  return create(NodeProtoSchema, {
    opType,
    name: `${opType}_${output[0]}`,
    input,
    output,
    attribute: [
      ...Object.entries(attrs).map(([name, i]) =>
        create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(i) }),
      ),
      ...Object.entries(floats).map(([name, f]) =>
        create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.FLOAT, f }),
      ),
    ],
  });
}

export function serialize(
  nodes: NodeProto[],
  inits: TensorProto[],
  inputs: ReturnType<typeof valueInfo>[],
  outputs: ReturnType<typeof valueInfo>[],
  opset = 13,
  metadata: Record<string, string> = {},
): Uint8Array {
  const graph = create(GraphProtoSchema, {
    name: 'g',
    node: nodes,
    initializer: inits,
    input: inputs,
    output: outputs,
  });
  const model = create(ModelProtoSchema, {
    irVersion: 8n,
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: BigInt(opset) })],
    producerName: 'influence-lens-tests',
    graph,
    metadataProps: Object.entries(metadata).map(([key, value]) => create(StringStringEntryProtoSchema, { key, value })),
  });
  return toBinary(ModelProtoSchema, model);
}

/**
 * x → [Sub mean] → Gemm(W1ᵀ) → Relu → head → trailing. The head weights are the same
 * numbers for every HeadKind, so all kinds compute the same function.
 */
export function buildModel(spec: ModelSpec): { bytes: Uint8Array; W: Float32Array; b: Float32Array } {
  const r = rng(spec.seed ?? 7);
  const { F, D, C } = spec;
  const W1 = Float32Array.from({ length: D * F }, () => (r() / Math.sqrt(F)) * 2);
  const b1 = Float32Array.from({ length: D }, () => r() * 0.1);
  const W = Float32Array.from({ length: C * D }, () => r());
  const b = Float32Array.from({ length: C }, () => r() * 0.5);
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [floatTensor('W1', [D, F], W1), floatTensor('b1', [D], b1)];
  let x = 'input';
  if (spec.inputDims && spec.inputDims.length > 1) {
    inits.push(
      create(TensorProtoSchema, {
        name: 'flat',
        dims: [2n],
        dataType: TensorProto_DataType.INT64,
        rawData: new Uint8Array(new BigInt64Array([-1n, BigInt(F)]).buffer),
      }),
    );
    nodes.push(mkNode('Reshape', [x, 'flat'], ['x_flat']));
    x = 'x_flat';
  }
  if (spec.pre) {
    inits.push(
      floatTensor(
        'mean',
        [F],
        Array.from({ length: F }, (_, i) => 0.1 * i),
      ),
      floatTensor(
        'scale',
        [F],
        Array.from({ length: F }, (_, i) => 1 + 0.05 * i),
      ),
    );
    nodes.push(mkNode('Sub', [x, 'mean'], ['x_c']), mkNode('Div', ['x_c', 'scale'], ['x_s']));
    x = 'x_s';
  }
  if (spec.bakedBatch) {
    inits.push(floatTensor('zeros', [spec.batch ?? 1, F], new Float32Array((spec.batch ?? 1) * F)));
    nodes.push(mkNode('Add', [x, 'zeros'], ['x_b']));
    x = 'x_b';
  }
  nodes.push(mkNode('Gemm', [x, 'W1', 'b1'], ['a1'], { transB: 1 }), mkNode('Relu', ['a1'], ['h']));
  const WT = new Float32Array(D * C); // D×C
  for (let c = 0; c < C; c++) for (let j = 0; j < D; j++) WT[j * C + c] = W[c * D + j];
  switch (spec.head) {
    case 'gemmTransB':
      inits.push(floatTensor('W', [C, D], W), floatTensor('b', [C], b));
      nodes.push(mkNode('Gemm', ['h', 'W', 'b'], ['z'], { transB: 1 }));
      break;
    case 'gemm':
      inits.push(floatTensor('W', [D, C], WT), floatTensor('b', [1, C], b));
      nodes.push(mkNode('Gemm', ['h', 'W', 'b'], ['z']));
      break;
    case 'gemmScaled': // alpha·h·Wᵀ + beta·b with the stored tensors scaled to compensate
      inits.push(
        floatTensor(
          'W',
          [C, D],
          W.map((v) => v / 2),
        ),
        floatTensor(
          'b',
          [C],
          b.map((v) => v * 4),
        ),
      );
      nodes.push(mkNode('Gemm', ['h', 'W', 'b'], ['z'], { transB: 1 }, { alpha: 2, beta: 0.25 }));
      break;
    case 'matmulAdd':
    case 'addReversed':
      inits.push(floatTensor('W', [D, C], WT), floatTensor('b', [C], b));
      nodes.push(
        mkNode('MatMul', ['h', 'W'], ['hw']),
        mkNode('Add', spec.head === 'matmulAdd' ? ['hw', 'b'] : ['b', 'hw'], ['z']),
      );
      break;
    case 'matmulNoBias':
      inits.push(floatTensor('W', [D, C], WT));
      nodes.push(mkNode('MatMul', ['h', 'W'], ['z']));
      break;
  }
  switch (spec.trailing) {
    case 'softmax':
      nodes.push(mkNode('Softmax', ['z'], ['output'], { axis: 1 }));
      break;
    case 'logsoftmax':
      nodes.push(mkNode('LogSoftmax', ['z'], ['output'], { axis: 1 }));
      break;
    case 'identitySoftmax':
      nodes.push(mkNode('Softmax', ['z'], ['p'], { axis: 1 }), mkNode('Identity', ['p'], ['output']));
      break;
    case 'none':
      nodes.push(mkNode('Identity', ['z'], ['output']));
      break;
  }
  const bytes = serialize(
    nodes,
    inits,
    [valueInfo('input', TensorProto_DataType.FLOAT, [spec.batch ?? 'batch', ...(spec.inputDims ?? [F])])],
    [valueInfo('output', TensorProto_DataType.FLOAT, [spec.batch ?? 'batch', C])],
    spec.opset ?? 13,
    spec.metadata,
  );
  return { bytes, W, b: spec.head === 'matmulNoBias' ? new Float32Array(0) : b };
}
