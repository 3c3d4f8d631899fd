/** What a result says of the model: the file, the layer and output used, the head's task and batch. */
import type { Engine } from './engine';
import type { OutputKind } from './head';
import { findLayers, type Layer } from './layers';
import { GraphIndex } from './onnx';

/** The model as a result reports it: where it is, which layer and output were used. */
export interface ModelSummary {
  path: string;
  sha256: string;
  layer: string;
  parameters: number;
  /** What the explained output holds. */
  output: OutputKind;
  /** The explained graph output, and the factor on the head's logits before it (a temperature's 1/T). */
  outputName: string;
  logitScale: number;
  /** softmax (C classes) or binary (one logit). */
  task: 'softmax' | 'binary';
  /** Rows per onnxruntime run when the model's batch size is fixed and could not be freed, else null. */
  fixedBatch: number | null;
  /** Parameterized layers behind the output (Gemm, MatMul, Conv with constant weights; 1: the head alone). */
  layers: number;
}

/** Every parameterized layer of the model, numbered from the output (the head is layer 1). */
export function modelLayers(eng: Engine): Layer[] {
  const graph = eng.model.proto.graph!;
  return findLayers(graph, new GraphIndex(graph), eng.info.head);
}

export function modelSummary(eng: Engine, path: string): ModelSummary {
  const i = eng.info;
  return {
    path,
    sha256: i.sha256,
    layer: i.head.node,
    parameters: i.parameters,
    output: i.output,
    outputName: i.outputName,
    logitScale: i.head.scale,
    task: eng.task.kind,
    fixedBatch: eng.runBatchSize,
    layers: modelLayers(eng).length,
  };
}
