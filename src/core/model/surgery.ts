/**
 * Graph surgery: the user's graph, untouched but for its outputs, which become the head's input h
 * and its logits z. Everything else the tool computes runs in its own graphs (ort/) or in JS
 * (task/), so no node of ours has to be valid at the user's opset.
 */
import { create, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, NodeProtoSchema, TensorProto_DataType, type GraphProto } from 'onnx-buf';
import { valueInfo } from '../ort/graph';
import type { LoadedModel } from './info';

/** Names of the tensors the augmented graph emits. */
export const AUG = {
  h: 'influence_lens/h',
  z: 'influence_lens/z',
} as const;

/**
 * The serialized model with outputs h (float32 [N,D]) and z (float32 [N,C]) in place of its own,
 * so that ORT prunes whatever follows the head (a Softmax, say).
 */
export function augmentModel(loaded: LoadedModel): Uint8Array {
  const graph = loaded.proto.graph!;
  const { head } = loaded.info;
  // Identity nodes, since a graph output may not simply name a graph input (a head on the input itself).
  const identity = (from: string, to: string) => create(NodeProtoSchema, { opType: 'Identity', name: `influence_lens/Identity/${to}`, input: [from], output: [to] });
  const g2: GraphProto = {
    ...graph,
    node: [...graph.node, identity(head.hName, AUG.h), identity(head.zName, AUG.z)],
    output: [valueInfo(AUG.h, TensorProto_DataType.FLOAT, ['batch', head.D]), valueInfo(AUG.z, TensorProto_DataType.FLOAT, ['batch', head.C])],
  } as GraphProto;
  // Shallow copies: the loaded proto stays untouched.
  return toBinary(ModelProtoSchema, { ...loaded.proto, graph: g2 });
}
