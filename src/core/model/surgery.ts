/**
 * Graph surgery: the user's graph, untouched but for its outputs, which become the head's input h
 * and its logits z, and (when asked) its batch dimension, made symbolic. Everything else the tool
 * computes runs in its own graphs (ort/) or in JS (task/), so no node of ours has to be valid at
 * the user's opset: we add only Identity nodes.
 */
import { create, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  TensorProto_DataType,
  TensorProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  ValueInfoProtoSchema,
  type GraphProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from 'onnx-buf';
import { valueInfo } from '../ort/graph';
import type { LoadedModel } from './info';
import { int64Values, shapeOf } from './onnx';

/** Names of the tensors the augmented graph emits. */
export const AUG = {
  h: 'influence_lens/h',
  z: 'influence_lens/z',
} as const;

/** The name of the j-th extra output ("tap") that augmentModel adds for the backward pass. */
export function tapName(j: number): string {
  return `influence_lens/tap/${j}`;
}

/**
 * The serialized model with outputs h ([N,D]) and z ([N,C]) in place of its own, so that ORT
 * prunes whatever follows the head (a Softmax, say). With `batchFree`, a model exported with a
 * fixed batch size B gets a symbolic batch dimension: on its input, and in every Reshape shape
 * constant that starts with B (→ −1, or 0 = "as the input" when the shape has a −1 already);
 * intermediate shape annotations, which may carry B, are dropped (ORT infers them again).
 */
export function augmentModel(loaded: LoadedModel, opts: { batchFree: boolean; taps?: string[] }): Uint8Array {
  const graph = loaded.proto.graph!;
  const { head, fixedBatch } = loaded.info;
  const batch: number | string = opts.batchFree || fixedBatch === null ? 'batch' : fixedBatch;
  const elem = head.elem === 'float64' ? TensorProto_DataType.DOUBLE : TensorProto_DataType.FLOAT;
  // Identity nodes, since a graph output may not simply name a graph input (a head on the input itself).
  const identity = (from: string, to: string) =>
    create(NodeProtoSchema, { opType: 'Identity', name: `influence_lens/Identity/${to}`, input: [from], output: [to] });
  let { node, initializer, input, valueInfo: annotations } = graph;
  if (opts.batchFree && fixedBatch !== null) {
    ({ node, initializer } = freeReshapes(graph, fixedBatch));
    input = graph.input.map((v) => (v.name === loaded.info.inputName ? withBatch(v, 'batch') : v));
    annotations = [];
  }
  // Taps (model/backward.ts): values the backward pass reads, as further outputs whose shapes ORT infers.
  const taps = opts.taps ?? [];
  const g2: GraphProto = {
    ...graph,
    node: [
      ...node,
      identity(head.hName, AUG.h),
      identity(head.zName, AUG.z),
      ...taps.map((t, j) => identity(t, tapName(j))),
    ],
    initializer,
    input,
    valueInfo: annotations,
    output: [
      valueInfo(AUG.h, elem, [batch, head.D]),
      valueInfo(AUG.z, elem, [batch, head.C]),
      ...taps.map((_, j) => unshaped(tapName(j), elem)),
    ],
  } as GraphProto;
  // Shallow copies: the loaded proto stays untouched.
  return toBinary(ModelProtoSchema, { ...loaded.proto, graph: g2 });
}

/** A ValueInfo with an element type and no shape. */
function unshaped(name: string, elemType: number): ValueInfoProto {
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: { case: 'tensorType', value: create(TypeProto_TensorSchema, { elemType }) },
    }),
  });
}

/** The input's ValueInfo with its first dim replaced. */
function withBatch(v: ValueInfoProto, batch: string): ValueInfoProto {
  const dims = shapeOf(v) ?? [];
  const elemType = v.type?.value.case === 'tensorType' ? v.type.value.value.elemType : TensorProto_DataType.FLOAT;
  return valueInfo(v.name, elemType, [batch, ...dims.slice(1)]);
}

/** The int64 shape tensor with its first value replaced. */
function rewritten(t: TensorProto, values: number[]): TensorProto {
  return create(TensorProtoSchema, {
    name: t.name,
    dims: t.dims,
    dataType: TensorProto_DataType.INT64,
    rawData: new Uint8Array(new BigInt64Array(values.map(BigInt)).buffer),
  });
}

/** The batch dim of a Reshape target shape: −1, or 0 (copy the input's) when the shape already has a −1. */
function batchFreeShape(values: number[]): number[] {
  return [values.includes(-1) ? 0 : -1, ...values.slice(1)];
}

/**
 * Nodes and initializers with every constant Reshape shape that starts with the exported batch B
 * rewritten, when that constant feeds Reshape shapes only (anything else it feeds stays as it was).
 */
function freeReshapes(graph: GraphProto, B: number): { node: NodeProto[]; initializer: TensorProto[] } {
  const uses = new Map<string, { reshapeShape: number; other: number }>();
  for (const n of graph.node) {
    n.input.forEach((name, k) => {
      const u = uses.get(name) ?? { reshapeShape: 0, other: 0 };
      if (n.opType === 'Reshape' && k === 1) u.reshapeShape++;
      else u.other++;
      uses.set(name, u);
    });
  }
  const onlyShape = (name: string) => {
    const u = uses.get(name);
    return u !== undefined && u.other === 0 && u.reshapeShape > 0;
  };
  const bakesBatch = (t: TensorProto) => {
    const v = int64Values(t);
    return v.length >= 2 && v[0] === B;
  };
  const initializer = graph.initializer.map((t) =>
    onlyShape(t.name) && bakesBatch(t) ? rewritten(t, batchFreeShape(int64Values(t))) : t,
  );
  const node = graph.node.map((n) => {
    if (n.opType !== 'Constant' || !onlyShape(n.output[0])) return n;
    const a = n.attribute.find((x) => x.name === 'value');
    if (!a?.t || !bakesBatch(a.t)) return n;
    const attr = create(AttributeProtoSchema, { ...a, t: rewritten(a.t, batchFreeShape(int64Values(a.t))) });
    return create(NodeProtoSchema, { ...n, attribute: n.attribute.map((x) => (x === a ? attr : x)) });
  });
  return { node, initializer };
}
