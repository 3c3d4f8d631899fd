/**
 * ONNX model reading and graph surgery.
 *
 * We find the classifier's final linear layer (the "head"), read its weights, and build an
 * augmented graph that additionally emits the head's input h, its logits z (cast to float64),
 * and, from z in float64, the per-example loss and backprop signal g = softmax(z) - onehot(y).
 * Everything is built from standard ops because no ONNX training API reaches Node.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import {
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  TensorProto_DataType,
  TensorProtoSchema,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  ValueInfoProtoSchema,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from 'onnx-buf';
import { InfluenceError } from './errors';

export type OutputKind = 'logits' | 'probabilities' | 'log-probabilities';

/** The final linear layer z = W h + b, read as float64. */
export interface Head {
  /** Name of the node that computes z (the Gemm, or the Add after MatMul). */
  node: string;
  /** Tensor names of the head input h and the logits z. */
  hName: string;
  zName: string;
  C: number;
  D: number;
  /** C×D row-major: W[c*D + j]. */
  W: Float64Array;
  /** Length C, or null when the layer has no bias (then θ holds W only). */
  b: Float64Array | null;
}

export interface ModelInfo {
  path: string;
  sha256: string;
  inputName: string;
  /** Input dims after the batch dimension; their product is F. */
  inputDims: number[];
  F: number;
  outputName: string;
  output: OutputKind;
  head: Head;
  /** Parameters in θ: C·(D+1) with a bias, C·D without. */
  parameters: number;
  classes: string[] | null;
  /** λ of the training objective, from metadata `influence_lens.l2`, if present. */
  l2: number | null;
  opset: number;
}

export interface LoadedModel {
  info: ModelInfo;
  proto: ModelProto;
}

const TRAILING_OPS = new Set(['Softmax', 'LogSoftmax', 'Identity', 'Flatten', 'Reshape']);

export async function loadModel(path: string): Promise<LoadedModel> {
  let bytes: Uint8Array;
  try {
    bytes = await fsp.readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new InfluenceError('FILE_NOT_FOUND', `model file not found: ${path}`, { file: path });
    throw new InfluenceError('FILE_UNREADABLE', `cannot read model file ${path}: ${(e as Error).message}`, { file: path });
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  let proto: ModelProto;
  try {
    proto = fromBinary(ModelProtoSchema, bytes);
  } catch (e) {
    throw new InfluenceError('MODEL_INVALID', `not an ONNX model (protobuf parse failed: ${(e as Error).message})`, { file: path });
  }
  if (!proto.graph || proto.graph.node.length === 0) {
    throw new InfluenceError('MODEL_INVALID', 'not an ONNX model: it has no graph nodes', { file: path });
  }
  return { proto, info: analyseModel(proto, path, sha256) };
}

function defaultOpset(model: ModelProto): number {
  const imp = model.opsetImport.find((o) => o.domain === '' || o.domain === 'ai.onnx');
  return imp ? Number(imp.version) : 1;
}

function elemTypeOf(v: ValueInfoProto): number | undefined {
  return v.type?.value.case === 'tensorType' ? v.type.value.value.elemType : undefined;
}

/** Shape as numbers, with -1 for symbolic or unknown dims; null when no shape is recorded. */
function shapeOf(v: ValueInfoProto): number[] | null {
  if (v.type?.value.case !== 'tensorType') return null;
  const shape = v.type.value.value.shape;
  if (!shape) return null;
  return shape.dim.map((d) => (d.value.case === 'dimValue' ? Number(d.value.value) : -1));
}

function attrInt(node: NodeProto, name: string, dflt: number): number {
  const a = node.attribute.find((x) => x.name === name);
  return a ? Number(a.i) : dflt;
}

function attrFloat(node: NodeProto, name: string, dflt: number): number {
  const a = node.attribute.find((x) => x.name === name);
  return a ? a.f : dflt;
}

/** Reads a float tensor's values as float64, whichever storage field holds them. */
export function tensorValues(t: TensorProto): Float64Array {
  const n = t.dims.reduce((a, d) => a * Number(d), 1);
  const out = new Float64Array(n);
  if (t.dataLocation === 1) {
    throw new InfluenceError('MODEL_INVALID', `tensor ${t.name} uses external data, which is not supported; save the model with its weights inside`);
  }
  if (t.dataType === TensorProto_DataType.FLOAT) {
    if (t.rawData.length > 0) {
      // Copy first: a view into the protobuf buffer can be misaligned for Float32Array
      // (and Buffer#slice would not copy).
      const f = new Float32Array(new Uint8Array(t.rawData).buffer, 0, n);
      out.set(f);
    } else out.set(t.floatData);
  } else if (t.dataType === TensorProto_DataType.DOUBLE) {
    if (t.rawData.length > 0) out.set(new Float64Array(new Uint8Array(t.rawData).buffer, 0, n));
    else out.set(t.doubleData);
  } else {
    throw new InfluenceError('UNSUPPORTED_OP', `tensor ${t.name} has element type ${TensorProto_DataType[t.dataType] ?? t.dataType}; the head's weights must be float or double`);
  }
  return out;
}

class GraphIndex {
  readonly producer = new Map<string, NodeProto>();
  readonly initializers = new Map<string, TensorProto>();
  constructor(readonly graph: GraphProto) {
    for (const n of graph.node) for (const o of n.output) this.producer.set(o, n);
    for (const t of graph.initializer) this.initializers.set(t.name, t);
  }

  /** A constant tensor (initializer or Constant node), or null if the value is computed. */
  constant(name: string): { dims: number[]; values: Float64Array } | null {
    const init = this.initializers.get(name);
    if (init) return { dims: init.dims.map(Number), values: tensorValues(init) };
    const p = this.producer.get(name);
    if (p && p.opType === 'Constant') {
      const a = p.attribute.find((x) => x.name === 'value');
      if (a?.t) return { dims: a.t.dims.map(Number), values: tensorValues(a.t) };
    }
    return null;
  }
}

function nodeLabel(n: NodeProto): string {
  return n.name || `${n.opType}(${n.output[0] ?? '?'})`;
}

export function analyseModel(model: ModelProto, path: string, sha256: string): ModelInfo {
  const graph = model.graph!;
  const idx = new GraphIndex(graph);
  const place = { file: path };

  const inputs = graph.input.filter((i) => !idx.initializers.has(i.name));
  if (inputs.length !== 1) {
    throw new InfluenceError('MODEL_INPUT', `the model must have exactly one input; found ${inputs.length} (${inputs.map((i) => i.name).join(', ')})`, place);
  }
  const input = inputs[0];
  if (elemTypeOf(input) !== TensorProto_DataType.FLOAT) {
    const t = elemTypeOf(input);
    throw new InfluenceError('MODEL_INPUT', `the model input '${input.name}' must be float32; found ${t === undefined ? 'a non-tensor' : TensorProto_DataType[t]}`, place);
  }
  const inShape = shapeOf(input);
  if (!inShape || inShape.length < 2) {
    throw new InfluenceError('MODEL_INPUT', `the model input '${input.name}' must be [batch, ...features]; found shape ${inShape ? `[${inShape.join(', ')}]` : 'unknown'}`, place);
  }
  const inputDims = inShape.slice(1);
  if (inputDims.some((d) => d <= 0)) {
    throw new InfluenceError('MODEL_INPUT', `the model input '${input.name}' has a non-fixed feature dimension: [${inShape.map((d) => (d < 0 ? '?' : d)).join(', ')}]`, place);
  }
  const F = inputDims.reduce((a, b) => a * b, 1);

  if (graph.output.length !== 1) {
    throw new InfluenceError('MODEL_OUTPUT', `the model must have exactly one output [batch, classes]; found ${graph.output.length}`, place);
  }
  const output = graph.output[0];

  // Walk back from the output over ops that do not change the argmax, to the linear layer.
  let cur = output.name;
  let kind: OutputKind = 'logits';
  const skipped: string[] = [];
  for (;;) {
    const p = idx.producer.get(cur);
    if (!p || !TRAILING_OPS.has(p.opType)) break;
    if (p.opType === 'Softmax') kind = 'probabilities';
    if (p.opType === 'LogSoftmax') kind = 'log-probabilities';
    skipped.push(p.opType);
    cur = p.input[0];
  }
  const headNode = idx.producer.get(cur);
  const found = headNode ? `${headNode.opType} node '${nodeLabel(headNode)}'` : `the graph input '${cur}'`;
  const afterWhat = skipped.length ? ` (after stepping back over ${skipped.join(', ')})` : '';
  const noHead = (why: string): never => {
    throw new InfluenceError('NO_LINEAR_HEAD', `no final linear layer (Gemm, or MatMul + Add) found: the output comes from ${found}${afterWhat}; ${why}`, { file: path, node: headNode ? nodeLabel(headNode) : undefined });
  };
  if (!headNode) noHead('expected a Gemm or MatMul + Add');

  let head: Head;
  if (headNode!.opType === 'Gemm') {
    head = gemmHead(headNode!, idx, noHead);
  } else if (headNode!.opType === 'Add' || headNode!.opType === 'MatMul') {
    head = matmulHead(headNode!, idx, noHead);
  } else {
    return noHead('expected a Gemm or MatMul + Add');
  }

  const outShape = shapeOf(output);
  if (outShape && (outShape.length !== 2 || (outShape[1] > 0 && outShape[1] !== head.C))) {
    throw new InfluenceError('MODEL_OUTPUT', `the model output '${output.name}' must be [batch, ${head.C}]; found [${outShape.map((d) => (d < 0 ? '?' : d)).join(', ')}]`, place);
  }
  for (const v of [head.W, head.b ?? new Float64Array()]) {
    if (!v.every(Number.isFinite)) {
      throw new InfluenceError('MODEL_NOT_FINITE', 'the final layer has NaN or infinite weights', { file: path, node: head.node });
    }
  }

  const meta = new Map(model.metadataProps.map((m) => [m.key, m.value]));
  let l2: number | null = null;
  const l2s = meta.get('influence_lens.l2');
  if (l2s !== undefined) {
    l2 = Number(l2s);
    if (!(l2 > 0) || !Number.isFinite(l2)) {
      throw new InfluenceError('MODEL_INVALID', `metadata influence_lens.l2 must be a positive number; found '${l2s}'`, place);
    }
  }
  let classes: string[] | null = null;
  const cls = meta.get('influence_lens.classes');
  if (cls !== undefined) {
    try {
      const parsed: unknown = JSON.parse(cls);
      if (Array.isArray(parsed) && parsed.length === head.C) classes = parsed.map(String);
    } catch {
      /* fall through to the error below */
    }
    if (!classes) throw new InfluenceError('MODEL_INVALID', `metadata influence_lens.classes must be a JSON array of ${head.C} names`, place);
  }

  return {
    path,
    sha256,
    inputName: input.name,
    inputDims,
    F,
    outputName: output.name,
    output: kind,
    head,
    parameters: head.C * (head.D + (head.b ? 1 : 0)),
    classes,
    l2,
    opset: defaultOpset(model),
  };
}

type Fail = (why: string) => never;

function gemmHead(node: NodeProto, idx: GraphIndex, fail: Fail): Head {
  if (attrInt(node, 'transA', 0) !== 0) fail('its Gemm has transA=1, which is not supported');
  const transB = attrInt(node, 'transB', 0);
  const alpha = attrFloat(node, 'alpha', 1);
  const beta = attrFloat(node, 'beta', 1);
  const B = idx.constant(node.input[1]);
  if (!B || B.dims.length !== 2) fail(`the Gemm's weight '${node.input[1]}' is not a constant 2-D tensor`);
  // Gemm computes A·op(B): op(B) is D×C. We store W as C×D.
  const [r, k] = B!.dims;
  const C = transB ? r : k;
  const D = transB ? k : r;
  const W = new Float64Array(C * D);
  for (let c = 0; c < C; c++) for (let j = 0; j < D; j++) W[c * D + j] = alpha * (transB ? B!.values[c * D + j] : B!.values[j * C + c]);
  let b: Float64Array | null = null;
  if (node.input.length > 2 && node.input[2] !== '') {
    const bias = idx.constant(node.input[2]);
    if (!bias) fail(`the Gemm's bias '${node.input[2]}' is not a constant`);
    b = broadcastBias(bias!, C, fail);
    for (let c = 0; c < C; c++) b[c] *= beta;
  }
  return { node: nodeLabel(node), hName: node.input[0], zName: node.output[0], C, D, W, b };
}

function matmulHead(node: NodeProto, idx: GraphIndex, fail: Fail): Head {
  let mm = node;
  let bias: { dims: number[]; values: Float64Array } | null = null;
  if (node.opType === 'Add') {
    // Either operand order: Add(MatMul(h, W), b) or Add(b, MatMul(h, W)).
    for (const [m, c] of [[0, 1], [1, 0]] as const) {
      const p = idx.producer.get(node.input[m]);
      const k = idx.constant(node.input[c]);
      if (p && p.opType === 'MatMul' && k) {
        mm = p;
        bias = k;
        break;
      }
    }
    if (mm === node) fail('the Add is not MatMul + constant bias');
  }
  const Wt = idx.constant(mm.input[1]);
  if (!Wt || Wt.dims.length !== 2) fail(`the MatMul's weight '${mm.input[1]}' is not a constant 2-D tensor`);
  const [D, C] = Wt!.dims;
  const W = new Float64Array(C * D);
  for (let c = 0; c < C; c++) for (let j = 0; j < D; j++) W[c * D + j] = Wt!.values[j * C + c];
  return {
    node: nodeLabel(node),
    hName: mm.input[0],
    zName: node.output[0],
    C,
    D,
    W,
    b: bias ? broadcastBias(bias, C, fail) : null,
  };
}

function broadcastBias(t: { dims: number[]; values: Float64Array }, C: number, fail: Fail): Float64Array {
  if (t.values.length === C) return Float64Array.from(t.values);
  if (t.values.length === 1) return new Float64Array(C).fill(t.values[0]);
  return fail(`the bias has shape [${t.dims.join(', ')}], expected [${C}]`);
}

// ---------------------------------------------------------------------------------------------
// Graph surgery

/** Names of the tensors the augmented graph feeds and emits. */
export const AUG = {
  labels: 'influence_lens/labels',
  h: 'influence_lens/h',
  z: 'influence_lens/z64',
  loss: 'influence_lens/loss',
  g: 'influence_lens/g',
} as const;

/** A tensor's ValueInfo: element type and dims (a string dim is symbolic). */
export function valueInfo(name: string, elemType: number, dims: (number | string)[]): ValueInfoProto {
  const shape = create(TensorShapeProtoSchema, {
    dim: dims.map((d) =>
      create(TensorShapeProto_DimensionSchema, {
        value: typeof d === 'number' ? { case: 'dimValue', value: BigInt(d) } : { case: 'dimParam', value: d },
      }),
    ),
  });
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, { value: { case: 'tensorType', value: create(TypeProto_TensorSchema, { elemType, shape }) } }),
  });
}

function node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, number> = {}): NodeProto {
  return create(NodeProtoSchema, {
    opType,
    name: `influence_lens/${opType}/${outputs[0].replace('influence_lens/', '')}`,
    input: inputs,
    output: outputs,
    attribute: Object.entries(attrs).map(([name, i]) => create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(i) })),
  });
}

function int64Tensor(name: string, dims: number[], values: number[]): TensorProto {
  const raw = new Uint8Array(new BigInt64Array(values.map(BigInt)).buffer);
  return create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: TensorProto_DataType.INT64, rawData: raw });
}

/**
 * Returns the serialized model with outputs h (float32 [N,D]), z (float64 [N,C]),
 * loss (float64 [N,1]) and g = softmax(z) − onehot(y) (float64 [N,C]), and an extra
 * int64 input of labels [N]. The original output is dropped so ORT prunes the softmax.
 */
export function augmentModel(loaded: LoadedModel): Uint8Array {
  const graph = loaded.proto.graph!;
  const { head } = loaded.info;
  const n = (s: string) => `influence_lens/${s}`;
  const classRange = int64Tensor(n('classes'), [1, head.C], Array.from({ length: head.C }, (_, c) => c));
  const colShape = int64Tensor(n('col_shape'), [2], [-1, 1]);
  const nodes: NodeProto[] = [
    node('Identity', [head.hName], [AUG.h]),
    node('Cast', [head.zName], [AUG.z], { to: TensorProto_DataType.DOUBLE }),
    node('Softmax', [AUG.z], [n('p')], { axis: 1 }),
    node('LogSoftmax', [AUG.z], [n('logp')], { axis: 1 }),
    node('Reshape', [AUG.labels, colShape.name], [n('labels_col')]),
    node('Equal', [n('labels_col'), classRange.name], [n('onehot_bool')]),
    node('Cast', [n('onehot_bool')], [n('onehot')], { to: TensorProto_DataType.DOUBLE }),
    node('Sub', [n('p'), n('onehot')], [AUG.g]),
    node('GatherElements', [n('logp'), n('labels_col')], [n('logp_y')], { axis: 1 }),
    node('Neg', [n('logp_y')], [AUG.loss]),
  ];
  const g2: GraphProto = {
    ...graph,
    node: [...graph.node, ...nodes],
    initializer: [...graph.initializer, classRange, colShape],
    input: [...graph.input, valueInfo(AUG.labels, TensorProto_DataType.INT64, ['batch'])],
    output: [
      valueInfo(AUG.h, TensorProto_DataType.FLOAT, ['batch', head.D]),
      valueInfo(AUG.z, TensorProto_DataType.DOUBLE, ['batch', head.C]),
      valueInfo(AUG.loss, TensorProto_DataType.DOUBLE, ['batch', 1]),
      valueInfo(AUG.g, TensorProto_DataType.DOUBLE, ['batch', head.C]),
    ],
  } as GraphProto;
  // Shallow copies: the loaded proto stays untouched.
  return toBinary(ModelProtoSchema, { ...loaded.proto, graph: g2 });
}
