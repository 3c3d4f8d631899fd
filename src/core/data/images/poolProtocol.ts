/** Messages between the image pool (pool.ts) and its decoding threads (worker.ts). */
import type { ImageFacts, ImageTask } from './load';
import type { Pipeline } from './preprocess';

export interface ToImageWorker {
  id: number;
  tasks: ImageTask[];
  pipeline: Pipeline;
}

export type FromImageWorker =
  | { id: number; features: Float32Array | Float64Array; facts: ImageFacts[] }
  | {
      id: number;
      error:
        | { index: number; code: string; message: string; place: Record<string, unknown> }
        | { index: number; internal: string };
    };
