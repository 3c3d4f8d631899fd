/**
 * Loading a model: its single input, the output to explain and the final linear layer behind it
 * (the "head", head.ts), and the metadata the tool reads (`influence_lens.l2`, `influence_lens.classes`).
 */
import { fromBinary } from '@bufbuild/protobuf';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { ModelProtoSchema, TensorProto_DataType, type ModelProto, type ValueInfoProto } from 'onnx-buf';
import { InfluenceError } from '../errors';
import { findHead, type Head, type HeadPath, type OutputKind } from './head';
import { defaultOpset, elemTypeOf, GraphIndex, shapeOf } from './onnx';

export interface ModelInfo {
  path: string;
  sha256: string;
  inputName: string;
  /** Element type the input is fed in. */
  inputType: 'float32' | 'float64';
  /** Input dims after the batch dimension; their product is F. */
  inputDims: number[];
  F: number;
  /** The batch size the model was exported with, when its input fixes one (null: symbolic). */
  fixedBatch: number | null;
  /** The graph output explained, what it holds, and every output with its shape (for messages). */
  outputName: string;
  output: OutputKind;
  outputs: { name: string; shape: string }[];
  /** The ops stepped over between the head and that output. */
  steps: string[];
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

export interface LoadOptions {
  /** The graph output to explain; by default the one computed by the final linear layer, logits preferred. */
  output?: string;
}

export async function loadModel(path: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  let bytes: Uint8Array;
  try {
    bytes = await fsp.readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new InfluenceError('FILE_NOT_FOUND', `model file not found: ${path}`, { file: path });
    throw new InfluenceError('FILE_UNREADABLE', `cannot read model file ${path}: ${(e as Error).message}`, {
      file: path,
    });
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  let proto: ModelProto;
  try {
    proto = fromBinary(ModelProtoSchema, bytes);
  } catch (e) {
    throw new InfluenceError('MODEL_INVALID', `not an ONNX model (protobuf parse failed: ${(e as Error).message})`, {
      file: path,
    });
  }
  if (!proto.graph || proto.graph.node.length === 0) {
    throw new InfluenceError('MODEL_INVALID', 'not an ONNX model: it has no graph nodes', { file: path });
  }
  return { proto, info: analyseModel(proto, path, sha256, opts) };
}

/** `[batch, 10]`, with `?` for a symbolic or unknown dim. */
function shapeText(v: ValueInfoProto): string {
  const s = shapeOf(v);
  return s ? `[${s.map((d) => (d < 0 ? '?' : d)).join(', ')}]` : '[unknown shape]';
}

/** The most features a model input may take per row, and values a batch of a fixed batch size may hold (as a table batch holds). */
const MAX_FEATURES = 1 << 26;

const OUTPUT_PREFERENCE: OutputKind[] = ['logits', 'log-probabilities', 'probabilities'];

/**
 * The output to explain: the one named by `--output`, else among those computed from a final
 * linear layer, the first holding logits (then log-probabilities, then probabilities).
 */
function chooseOutput(
  idx: GraphIndex,
  outputs: ValueInfoProto[],
  path: string,
  wanted: string | undefined,
): { output: ValueInfoProto; found: HeadPath } {
  const list = outputs.map((o) => `'${o.name}' ${shapeText(o)}`).join(', ');
  if (wanted !== undefined) {
    const output = outputs.find((o) => o.name === wanted);
    if (!output)
      throw new InfluenceError('MODEL_OUTPUT', `the model has no output '${wanted}'; its outputs are ${list}`, {
        file: path,
      });
    return { output, found: findHead(idx, output.name, path) };
  }
  const tried = outputs.map((output) => {
    try {
      return { output, found: findHead(idx, output.name, path) };
    } catch (e) {
      if (e instanceof InfluenceError && e.code === 'NO_LINEAR_HEAD') return { output, error: e };
      throw e;
    }
  });
  const ok = tried.filter((t): t is { output: ValueInfoProto; found: HeadPath } => 'found' in t);
  if (ok.length === 0) {
    if (tried.length === 1) throw (tried[0] as { error: InfluenceError }).error;
    throw new InfluenceError(
      'NO_LINEAR_HEAD',
      `none of the model's outputs (${list}) comes from a final linear layer (Gemm, or MatMul + Add); choose one with --output`,
      { file: path },
    );
  }
  for (const kind of OUTPUT_PREFERENCE) {
    const best = ok.find((t) => t.found.kind === kind);
    if (best) return best;
  }
  return ok[0];
}

export function analyseModel(model: ModelProto, path: string, sha256: string, opts: LoadOptions = {}): ModelInfo {
  const graph = model.graph!;
  const idx = new GraphIndex(graph);
  const place = { file: path };

  const inputs = graph.input.filter((i) => !idx.initializers.has(i.name));
  if (inputs.length !== 1) {
    throw new InfluenceError(
      'MODEL_INPUT',
      `the model must have exactly one input; found ${inputs.length} (${inputs.map((i) => `'${i.name}' ${shapeText(i)}`).join(', ')})`,
      place,
    );
  }
  const input = inputs[0];
  const t = elemTypeOf(input);
  if (t !== TensorProto_DataType.FLOAT && t !== TensorProto_DataType.DOUBLE) {
    throw new InfluenceError(
      'MODEL_INPUT',
      `the model input '${input.name}' must be float32 or float64; found ${t === undefined ? 'a non-tensor' : TensorProto_DataType[t]}: export the model with a float input`,
      place,
    );
  }
  const inShape = shapeOf(input);
  if (!inShape || inShape.length < 2) {
    throw new InfluenceError(
      'MODEL_INPUT',
      `the model input '${input.name}' must be [batch, ...features]; found shape ${shapeText(input)}`,
      place,
    );
  }
  const inputDims = inShape.slice(1);
  if (inputDims.some((d) => d <= 0)) {
    throw new InfluenceError(
      'MODEL_INPUT',
      `the model input '${input.name}' has a non-fixed feature dimension: ${shapeText(input)}`,
      place,
    );
  }
  const F = inputDims.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(F) || F > MAX_FEATURES) {
    throw new InfluenceError(
      'MODEL_INPUT',
      `the model input '${input.name}' ${shapeText(input)} takes ${F} features per row; at most ${MAX_FEATURES} (2^26) are supported`,
      place,
    );
  }
  const fixedBatch = inShape[0] > 0 ? inShape[0] : null;
  if (fixedBatch !== null && fixedBatch * F > MAX_FEATURES) {
    throw new InfluenceError(
      'MODEL_INPUT',
      `the model input '${input.name}' ${shapeText(input)} has a fixed batch size of ${fixedBatch}: a batch of ${fixedBatch * F} values is more than the ${MAX_FEATURES} (2^26) supported; export it with a symbolic batch dimension (dynamic_axes)`,
      place,
    );
  }
  if (graph.output.length === 0) throw new InfluenceError('MODEL_OUTPUT', 'the model has no outputs', place);
  const { output, found } = chooseOutput(idx, graph.output, path, opts.output);
  const { head, kind, steps } = found;

  const outShape = shapeOf(output);
  const perRow = outShape && outShape.length >= 1 ? outShape.slice(1) : null;
  if (perRow && perRow.every((d) => d > 0) && perRow.reduce((a, b) => a * b, 1) !== head.C) {
    throw new InfluenceError(
      'MODEL_OUTPUT',
      `the model output '${output.name}' ${shapeText(output)} does not hold one value per class: the final layer '${head.node}' has ${head.C} outputs`,
      place,
    );
  }
  for (const v of [head.W, head.b ?? new Float64Array()]) {
    if (!v.every(Number.isFinite)) {
      throw new InfluenceError('MODEL_NOT_FINITE', 'the final layer has NaN or infinite weights', {
        file: path,
        node: head.node,
      });
    }
  }
  const classCount = head.C === 1 ? 2 : head.C;

  const meta = new Map(model.metadataProps.map((m) => [m.key, m.value]));
  let l2: number | null = null;
  const l2s = meta.get('influence_lens.l2');
  if (l2s !== undefined) {
    l2 = Number(l2s);
    if (!(l2 > 0) || !Number.isFinite(l2)) {
      throw new InfluenceError(
        'MODEL_INVALID',
        `metadata influence_lens.l2 must be a positive number; found '${l2s}'`,
        place,
      );
    }
  }
  let classes: string[] | null = null;
  const cls = meta.get('influence_lens.classes');
  if (cls !== undefined) {
    try {
      const parsed: unknown = JSON.parse(cls);
      if (Array.isArray(parsed) && parsed.length === classCount) classes = parsed.map(String);
    } catch {
      /* fall through to the error below */
    }
    if (!classes)
      throw new InfluenceError(
        'MODEL_INVALID',
        `metadata influence_lens.classes must be a JSON array of ${classCount} names`,
        place,
      );
  }

  return {
    path,
    sha256,
    inputName: input.name,
    inputType: t === TensorProto_DataType.DOUBLE ? 'float64' : 'float32',
    inputDims,
    F,
    fixedBatch,
    outputName: output.name,
    output: kind,
    outputs: graph.output.map((o) => ({ name: o.name, shape: shapeText(o) })),
    steps,
    head,
    parameters: head.C * (head.D + (head.b ? 1 : 0)),
    classes,
    l2,
    opset: defaultOpset(model),
  };
}
