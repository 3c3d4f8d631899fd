/**
 * Loading a model: its single input, its output, the final linear layer (the "head", head.ts) and
 * the metadata the tool reads (`influence_lens.l2`, `influence_lens.classes`).
 */
import { fromBinary } from '@bufbuild/protobuf';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { ModelProtoSchema, TensorProto_DataType, type ModelProto } from 'onnx-buf';
import { InfluenceError } from '../errors';
import { findHead, type Head, type OutputKind } from './head';
import { defaultOpset, elemTypeOf, GraphIndex, shapeOf } from './onnx';

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

  const { head, kind } = findHead(idx, output.name, path);

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

