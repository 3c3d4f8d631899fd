/** What a result says of the model: the file, the layer and output used, the head's task and batch. */
import type { Engine } from './engine';
import type { OutputKind } from './head';

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
  };
}
